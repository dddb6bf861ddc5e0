"""Softmax statistics in Triton, shared by the loss kernels (tks_loss/triton.py, kd_loss/triton.py).

Both kernels reduce rows of logits over the class dim in blocks: an online maximum and sum of
exponentials (the log-sum-exp), the expectation of a per-class quantity under a softmax, and
log-softmax values from those statistics. The numerical choices live here once:

- exp and log from libdevice on the GPU (correctly rounded to ~1 ulp, as torch's CUDA kernels),
  not the hardware approximations (several ulp near 1, where gradients form differences); the
  interpreter has no libdevice, and its tl.exp / tl.log are numpy's, accurate already. A
  constexpr, so the branch not taken is never compiled.
- no FMA contraction (``COMPILE_OPTIONS``): "the same" value computed by two expressions (the
  forward and the backward) must round the same (tests/test_triton_aot.py checks the PTX).
- ``-inf`` entries (masked classes) are exact zeros of every exponential, also in blocks whose
  entries are all ``-inf``, where the online update would otherwise form ``-inf - (-inf) = NaN``;
  and a class of zero probability contributes nothing to an expectation, even where the quantity
  it weights is infinite (the 0 · log 0 = 0 convention of F.kl_div / F.cross_entropy).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ._backends import triton_interpreter_enabled

# Launch options of every loss kernel: no FMA contraction (see above).
COMPILE_OPTIONS = {"enable_fp_fusion": False}

_LIBDEVICE = tl.constexpr(not triton_interpreter_enabled())


@triton.jit
def exp(x):
    if _LIBDEVICE:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def log(x):
    if _LIBDEVICE:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def exp_shift(m):
    """A maximum used as the shift of exp(x - shift): 0 where it is -inf (every x is -inf, so
    exp(x - 0) = 0), instead of exp(-inf + inf) = NaN."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def rescale(old_max, new_max):
    """exp(old_max - new_max), the factor that carries a running sum of exponentials over to a new
    maximum: 1 when the maximum did not change (both -inf included: the sum is still 0)."""
    return tl.where(old_max == new_max, 1.0, exp(old_max - exp_shift(new_max)))


@triton.jit
def online_logsumexp(run_max, run_sum, x):
    """Fold the block ``x`` (1-D; padding and masked classes at -inf) into a running maximum and
    sum of exp(x - maximum); log-sum-exp = run_max + log(run_sum)."""
    new_max = tl.maximum(run_max, tl.max(x, axis=0))
    run_sum = run_sum * rescale(run_max, new_max) + tl.sum(exp(x - exp_shift(new_max)), axis=0)
    return new_max, run_sum


@triton.jit
def times_prob(p, w):
    """p · w with 0 · w = 0: a class of zero probability adds nothing, even where w is ±inf (w is
    selected before the product, so no 0 · inf = NaN is ever formed)."""
    return p * tl.where(p > 0.0, w, 0.0)


@triton.jit
def online_softmax_dot(run_max, run_sum, run_dot, v, w):
    """Fold the block ``v`` (1-D; padding and masked classes at -inf) and its weights ``w`` into a
    running maximum, Σ exp(v - maximum) and Σ exp(v - maximum) w: the expectation of w under
    softmax(v) is run_dot / run_sum. Classes of zero weight add 0 whatever their w."""
    new_max = tl.maximum(run_max, tl.max(v, axis=0))
    scale = rescale(run_max, new_max)
    e = exp(v - exp_shift(new_max))
    run_sum = run_sum * scale + tl.sum(e, axis=0)
    run_dot = run_dot * scale + tl.sum(times_prob(e, w), axis=0)
    return new_max, run_sum, run_dot


@triton.jit
def log_softmax_from(x, x_max, logsum):
    """log_softmax(x) from its row's statistics, rounded as (x - max) - log(Σ exp(x - max))."""
    return (x - x_max) - logsum


def next_power_of_2(n: int) -> int:
    # plain Python: triton.next_power_of_2 is a ConstexprFunction, ~1.5 us a call on the host
    return 1 << max(n - 1, 0).bit_length()


def num_warps(block_elems: int) -> int:
    """Warps for a program that holds tiles of ``block_elems`` fp32 values: one per 512, 1 to 8."""
    return max(1, min(8, block_elems // 512))


def interpreter_truncates_bf16(dtype: torch.dtype) -> bool:
    """The interpreter (triton 3.8) truncates fp32 -> bf16 in a store instead of rounding to nearest
    even: there, kernels write fp32 and the host rounds. Compiled kernels round correctly."""
    return dtype == torch.bfloat16 and triton_interpreter_enabled()
