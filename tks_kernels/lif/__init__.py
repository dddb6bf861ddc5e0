"""Fused multi-step LIF / IF / parametric LIF neurons, binary or integer-count (I-LIF) spikes."""
from __future__ import annotations

from typing import Optional

import torch

from .._backends import resolve_backend
from .config import (
    CUDA_RECOMPUTE_MAX_T, TAU_DEFAULT, LIFConfig, check_backend, check_save, check_tau_or_decay, parse_lif_args,
    resolve_save,
)
from .reference import lif_multistep_reference, lif_reference_forward
from .surrogate import SURROGATES

__all__ = ["lif_multistep", "lif_multistep_reference", "SURROGATES", "CUDA_RECOMPUTE_MAX_T"]


def _extension_reason(kind: str, x: torch.Tensor) -> Optional[str]:
    from .. import _ext

    return _ext.unavailable_reason(kind, x, "lif")


def lif_multistep(
    x_seq: torch.Tensor,
    v_init: Optional[torch.Tensor] = None,
    *,
    tau=TAU_DEFAULT,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    store_v_seq: bool = False,
    backend: str = "auto",
    decay: Optional[torch.Tensor] = None,
    max_spike_count: Optional[int] = None,
    grad_window: Optional[tuple[float, float]] = None,
    count_charge: str = "ilif",
    save: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF neuron over all T steps: spikingjelly 2.0.0's LIFNode / IFNode /
    ParametricLIFNode and, with ``max_spike_count``, ILIFNode (``step_mode='m'``), fused.

    Per step, with ``V_r = v_reset`` (0 in the charge for soft reset):
    ``H = V + (X - (V - V_r)) / tau`` (``decay_input``) or ``V - (V - V_r) / tau + X``;
    ``H = V + X`` for IF; ``S = (H >= v_threshold)``; hard reset ``V = S ? V_r : H``, soft
    reset ``V = H - S * v_threshold``. The backward uses the surrogate's derivative at
    ``H - v_threshold``. State and arithmetic are fp32 whatever the input dtype.

    Integer spike counts (I-LIF, ``max_spike_count=D``; a b-bit spike is ``D = 2**b - 1``):
    ``H = (1 - 1/tau) * V + X`` (``1 - 1/tau`` rounded to fp32 once, as spikingjelly's
    ``_ops/ilif`` computes it: not the LIF's ``V - V / tau + X``, which rounds differently),
    ``C = round(clamp(H / v_threshold, 0, D))`` (round half to even, as torch.round), soft reset
    ``V = H - C * v_threshold`` (``detach_reset`` detaches the reset term). The backward is a
    rectangular straight-through gradient: ``dC/dH = 1 / v_threshold`` where
    ``grad_min <= H / v_threshold <= grad_max`` (both ends included), 0 elsewhere. Needs
    ``v_reset=None``, ``decay_input=False``, ``v_threshold > 0`` and the default surrogate and
    alpha. spikingjelly 2.0.0 has the float ``tau > 1`` form; a learnable leak (0-dim ``tau`` or
    ``decay``: ``H = (1 - decay) * V + X``, its gradient reduced in the launch) and IF
    (``tau=None``: ``H = V + X``) are this package's additions.

    Args:
        x_seq: ``[T, *]`` float32/float16/bfloat16 input current, any strides, ``T >= 1``.
        v_init: ``[*]`` initial membrane potential, or None (``v_reset``; 0.0 for soft reset).
        tau: float > 1 (LIF), default 2.0; a 0-dim tensor (learnable, gets a gradient); None for IF.
        v_threshold: firing threshold.
        v_reset: hard-reset value, or None for soft reset (subtract the threshold).
        decay_input: whether the input is divided by tau too.
        detach_reset: the spike in the reset carries no gradient.
        surrogate: one of ``SURROGATES`` (sigmoid, atan, piecewise_quadratic, erf,
            piecewise_exp, soft_sign, super_spike, rect).
        alpha: surrogate sharpness; None takes spikingjelly 2.0.0's default for it.
        store_v_seq: return ``v`` at every step ``[T, *]`` instead of the final ``[*]``.
        backend: "auto" | "triton" | "cuda" | "cpp" | "torch" (the eager reference).
        decay: 0-dim tensor ``1/tau`` used directly (ParametricLIFNode's ``sigmoid(w)``);
            replaces ``tau``: giving ``tau`` too (any value, 2.0 included) is an error.
        max_spike_count: None (binary spikes) or an integer ``D`` from 1 to 2**24: integer
            counts in ``0..D`` (I-LIF).
        grad_window: ``(grad_min, grad_max)``, finite, ``grad_min <= grad_max``, the window on
            ``H / v_threshold`` where the count's gradient passes; None is ``(0, D)``.
        count_charge: the charge of count firing, both as spikingjelly's ILIFNode computes them:
            "ilif" ``H = (1 - 1/tau) * V + X`` (its ILIF op: ``step_mode='m'``), "lif"
            ``H = V - V / tau + X`` (its ``step_mode='s'`` charges through LIFNode). The same
            numbers up to rounding: pass "lif" for single steps bit-equal to its single-step mode.
        save: what the fused backward keeps: "h" (the forward writes H, fp32 ``[T, *]``), "x" (a
            reference to ``x_seq`` and ``v_init``; the backward re-runs the charge/fire/reset
            recurrence from them, bit for bit the forward's, so the gradients are equal to "h"'s,
            and the forward writes no H), or "auto" (``SAVE_AUTO``: "x" on a backend only where a
            committed benchmark shows it faster there). "x" runs on "cpp" (any T) and "cuda"
            (``T <= CUDA_RECOMPUTE_MAX_T``, 32; above it H is saved); "triton" refuses it;
            "torch" (autograd through the reference) ignores it.

    Returns:
        ``(spikes, v)``: spikes ``[T, *]`` in x_seq's dtype (0/1, or the counts ``C``); v fp32,
        ``[T, *]`` (after reset, every step) if ``store_v_seq`` else the final ``[*]``.

    Memory held for backward by the fused backends: with ``save="h"`` one new fp32 ``[T, *]``
    tensor (``H``, ``4 * T * N`` bytes), plus references to ``x_seq`` and ``v_init`` for a
    learnable leak (with ``decay_input``); with ``save="x"`` no new tensor, only references to
    ``x_seq`` and ``v_init`` (``b * T * N`` bytes for x of ``b`` bytes per element, often alive
    anyway). Bytes moved, fwd+bwd: ``T*N*(4b + 8)`` with "h", ``T*N*5b`` with "x" (20 instead of
    24 bytes per neuron-step in fp32, 10 instead of 16 in bf16).

    Memory format: where each step of ``x_seq`` is a dense block (contiguous, channels_last, any
    permutation of a contiguous block) it is read in place and spikes, v and the gradient of x keep
    its step strides (``[T, *]`` outputs time-outermost); otherwise x is copied and the outputs
    are contiguous.

    Checks: every argument is checked before any kernel runs. Tensor ``tau`` (> 1) and ``decay``
    (in (0, 1)) are range-checked when that costs no device sync: CPU tensors, outside
    torch.compile and functorch transforms. A CUDA tensor (reading it would sync the device, and
    cannot be done inside CUDA graph capture) or a traced one is not checked: out of range it gives
    NaN or a diverging v.

    Double backward (``create_graph=True``) runs on ``backend="torch"`` only (autograd through the
    reference); the fused backends raise.

    Example::

        >>> x = torch.randn(8, 32, 128, device="cuda")
        >>> spikes, v = lif_multistep(x, tau=2.0, v_threshold=0.5, surrogate="piecewise_quadratic", alpha=2.0)
        >>> counts, v = lif_multistep(x, tau=4 / 3, decay_input=False, v_reset=None, max_spike_count=3)  # 2-bit
    """
    check_tau_or_decay(tau, decay)
    cfg, decay_tensor = parse_lif_args(
        x_seq, v_init, tau, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, store_v_seq,
        max_spike_count=max_spike_count, grad_window=grad_window, count_charge=count_charge,
    )
    return _dispatch(x_seq, v_init, decay_tensor, cfg, check_backend(backend), check_save(save))


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _dispatch(x_seq, v_init, decay, cfg: LIFConfig, backend: str, save: str = "auto"):
    name = resolve_backend(backend, x_seq, "lif_multistep", _extension_reason)
    if name == "torch":
        return lif_reference_forward(x_seq, v_init, decay, cfg)
    mode = resolve_save(save, name, x_seq.shape[0])
    if name == "triton":
        from .triton import lif_triton

        return lif_triton(x_seq, v_init, decay, cfg, _needs_grad(x_seq, v_init, decay))
    from .extension import lif_extension_forward

    return lif_extension_forward(name, x_seq, v_init, decay, cfg, save_x=mode == "x")
