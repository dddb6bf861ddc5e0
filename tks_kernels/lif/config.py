"""Parse and check the arguments of ``lif_multistep`` once, for every backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .._checks import _integral_number, check_bool, check_choice, check_float_tensor, check_real
from .surrogate import SURROGATES, default_alpha, surrogate_id

# How the leak enters the charge step; a compile-time constant of every kernel.
LEAK_IF, LEAK_DIV, LEAK_MUL = 0, 1, 2


class _DefaultTau:
    """The default of ``tau`` (2.0), told apart from a tau the caller passed: a tau given together
    with ``decay`` is refused whatever its value, 2.0 included."""

    __slots__ = ()
    value = 2.0

    def __repr__(self) -> str:
        return "2.0"


TAU_DEFAULT = _DefaultTau()


def check_tau_or_decay(tau, decay) -> None:
    """``tau`` and ``decay`` (= 1/tau) are two ways to give one leak: refuse both."""
    if decay is not None and tau is not TAU_DEFAULT:
        raise ValueError(
            f"give either tau or decay (= 1/tau), not both: got tau={_show(tau)} and decay={_show(decay)}; "
            "drop tau (decay replaces it)"
        )


def _show(value) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)


# The largest spike count: counts up to 2**24 are exact integers in fp32.
MAX_SPIKE_COUNT = 1 << 24
# The two charges of count firing, as spikingjelly 2.0.0's ILIFNode computes them: "ilif",
# H = (1 - 1/tau) V + X (its ILIF op, step_mode='m'); "lif", H = V - V/tau + X (step_mode='s', which
# charges through LIFNode). The same numbers up to rounding.
COUNT_CHARGES = ("ilif", "lif")


@dataclass(frozen=True)
class LIFConfig:
    """Everything but the tensors. ``leak``: LEAK_IF (no leak), LEAK_DIV (``/ tau``, a float),
    LEAK_MUL (``* decay``, a 0-dim tensor, learnable). ``max_spike_count`` 0: binary spikes;
    D >= 1: integer counts (I-LIF), gradient window ``[grad_min, grad_max]`` on H / v_threshold."""

    leak: int
    tau: float  # used by LEAK_DIV only
    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]  # None = soft reset
    detach_reset: bool
    surrogate: str
    alpha: float
    store_v_seq: bool
    max_spike_count: int = 0
    grad_min: float = 0.0
    grad_max: float = 0.0
    count_lif_charge: bool = False  # counts charged as the LIF (V - V/tau + X), not (1 - 1/tau) V + X

    @property
    def counts(self) -> bool:
        """Integer spike counts (I-LIF) instead of binary spikes."""
        return self.max_spike_count > 0

    @property
    def count_decay(self) -> float:
        """The I-LIF charge's factor ``1 - 1/tau`` for a float tau (LEAK_DIV), in Python's double:
        the kernels round it to fp32 once, as spikingjelly's reference does (a tensor-scalar
        product rounds the Python float to the tensor's dtype). Unused by the LIF charge."""
        return 1.0 - 1.0 / self.tau if self.leak == LEAK_DIV and not self.count_lif_charge else 1.0

    @property
    def soft_reset(self) -> bool:
        return self.v_reset is None

    @property
    def reset_value(self) -> float:
        """V_r in the charge step and the initial state: 0 for soft reset."""
        return 0.0 if self.v_reset is None else self.v_reset

    @property
    def surrogate_id(self) -> int:
        return surrogate_id(self.surrogate)


def parse_lif_args(
    x_seq, v_init, tau, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, store_v_seq,
    allow_float64: bool = False, max_spike_count=None, grad_window=None, count_charge="ilif",
) -> tuple[LIFConfig, Optional[torch.Tensor]]:
    """Check every argument; return the config and the fp32 0-dim decay tensor (LEAK_MUL) or None.
    ``allow_float64`` lets the reference run in fp64, an extra-precise oracle for tests."""
    check_float_tensor("x_seq", x_seq, allow_float64)
    if x_seq.dim() < 1 or x_seq.shape[0] < 1:
        raise ValueError(
            f"x_seq must have shape [T, *] with T >= 1, got shape {tuple(x_seq.shape)}"
        )
    if v_init is not None:
        check_float_tensor("v_init", v_init, allow_float64)
        if tuple(v_init.shape) != tuple(x_seq.shape[1:]):
            raise ValueError(
                f"v_init has shape {tuple(v_init.shape)} but x_seq[0] has shape {tuple(x_seq.shape[1:])}; "
                "v_init must be one step of the state (or None)"
            )
        if v_init.device != x_seq.device:
            raise ValueError(
                f"v_init is on {v_init.device} but x_seq is on {x_seq.device}; move it with v_init.to(x_seq.device)"
            )
    for name, flag in (("decay_input", decay_input), ("detach_reset", detach_reset), ("store_v_seq", store_v_seq)):
        check_bool(name, flag)
    v_threshold = check_real("v_threshold", v_threshold)
    v_reset = check_real("v_reset", v_reset, allow_none=True)
    if not isinstance(surrogate, str) or surrogate not in SURROGATES:
        raise ValueError(f"surrogate={surrogate!r} is unknown; choose one of {', '.join(SURROGATES)}")
    alpha_given = alpha
    if alpha is None:
        alpha = default_alpha(surrogate)
    alpha = check_real("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")

    decay_tensor = None
    tau_float = 0.0
    if decay is not None:
        check_tau_or_decay(tau, decay)
        decay_tensor = _check_scalar_tensor("decay", decay, x_seq)
        leak = LEAK_MUL
    elif tau is None:
        leak = LEAK_IF
    elif isinstance(tau, torch.Tensor):
        tau_tensor = _check_scalar_tensor("tau", tau, x_seq)
        # The kernels multiply by 1/tau; autograd carries the gradient from decay back to tau.
        decay_tensor = tau_tensor.reciprocal()
        leak = LEAK_MUL
    else:
        tau_float = check_real("tau", tau.value if tau is TAU_DEFAULT else tau)
        if not tau_float > 1.0:
            raise ValueError(f"tau must be > 1 (LIF), got {tau_float}; pass tau=None for IF (no leak)")
        leak = LEAK_DIV
    count, grad_min, grad_max = _check_count_firing(
        max_spike_count, grad_window, v_threshold, v_reset, decay_input, surrogate, alpha_given
    )
    check_choice("count_charge", count_charge, COUNT_CHARGES)
    if count_charge != "ilif" and not count:
        raise ValueError(f"count_charge={count_charge!r} is the charge of count firing: pass max_spike_count=D too, "
                         "or drop count_charge")
    cfg = LIFConfig(leak, tau_float, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha, store_v_seq,
                    count, grad_min, grad_max, count_charge == "lif")
    return cfg, decay_tensor


def _check_count_firing(max_spike_count, grad_window, v_threshold, v_reset, decay_input, surrogate, alpha):
    """(D, grad_min, grad_max) of count firing, (0, 0.0, 0.0) for binary spikes; every option that
    has no meaning with counts is refused, naming the argument and the fix."""
    if max_spike_count is None:
        if grad_window is not None:
            raise ValueError(
                f"grad_window={grad_window!r} is the gradient window of count firing: pass max_spike_count=D too, "
                "or drop grad_window (binary spikes take surrogate= and alpha=)"
            )
        return 0, 0.0, 0.0
    if not _integral_number(max_spike_count) or not 1 <= int(max_spike_count) <= MAX_SPIKE_COUNT:
        raise ValueError(
            f"max_spike_count must be an integer from 1 to 2**24 (the most spikes a step may count; a b-bit "
            f"spike is 2**b - 1), or None for binary spikes; got {type(max_spike_count).__name__} "
            f"{max_spike_count!r}"
        )
    count = int(max_spike_count)
    where = f"max_spike_count={count} (I-LIF count firing)"
    if v_reset is not None:
        raise ValueError(
            f"{where} resets softly (V = H - C * v_threshold): pass v_reset=None (got v_reset={v_reset})"
        )
    if decay_input:
        raise ValueError(f"{where} charges H = (1 - 1/tau) * V + X, without decaying the input: pass decay_input=False")
    if surrogate != "sigmoid" or alpha is not None:
        raise ValueError(
            f"{where} has its own straight-through gradient (1 / v_threshold inside grad_window, 0 outside): leave "
            f"surrogate and alpha at their defaults (got surrogate={surrogate!r}, alpha={alpha!r}) and set "
            "grad_window=(min, max) instead"
        )
    if not v_threshold > 0:
        raise ValueError(f"{where} needs v_threshold > 0 (C = round(clamp(H / v_threshold, 0, D))), got {v_threshold}")
    if grad_window is None:
        return count, 0.0, float(count)
    if isinstance(grad_window, (str, bytes)) or not hasattr(grad_window, "__len__") or len(grad_window) != 2:
        raise ValueError(
            f"grad_window must be a pair (grad_min, grad_max) of numbers, or None for (0, max_spike_count); "
            f"got {grad_window!r}"
        )
    try:
        grad_min = check_real("grad_window[0]", grad_window[0])
        grad_max = check_real("grad_window[1]", grad_window[1])
    except TypeError as e:
        raise ValueError(f"grad_window must be a pair of numbers: {e}") from None
    if grad_min > grad_max:
        raise ValueError(
            f"grad_window=({grad_min}, {grad_max}) has min > max: the gradient passes where "
            "grad_min <= H / v_threshold <= grad_max, so give them in that order"
        )
    return count, grad_min, grad_max


def _check_scalar_tensor(name: str, value, x_seq: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a float or a 0-dim floating tensor, got {value!r}")
    if value.numel() != 1:
        raise ValueError(f"{name} must be a 0-dim tensor (one value for the layer), got shape {tuple(value.shape)}")
    if value.device != x_seq.device:
        raise ValueError(f"{name} is on {value.device} but x_seq is on {x_seq.device}; move it with .to(x_seq.device)")
    if _readable_without_sync(value):
        _check_leak_range(name, value.detach().item())
    return value.reshape(()).float()


def _readable_without_sync(t: torch.Tensor) -> bool:
    """Whether reading ``t``'s value costs no device sync and breaks no trace: a plain CPU tensor,
    outside torch.compile and functorch transforms. (A CUDA tensor would sync the device, and
    cannot be read inside CUDA graph capture; under torch.compile the read would break the graph.)"""
    return (
        t.device.type == "cpu"
        and type(t) in (torch.Tensor, torch.nn.Parameter)
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    )


def _check_leak_range(name: str, value: float) -> None:
    if name == "tau":
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"tau must be finite, got tensor({value})")
        if not value > 1.0:
            raise ValueError(f"tau must be > 1 (LIF), got tensor({value}); pass tau=None for IF (no leak)")
    elif not 0.0 < value < 1.0:
        raise ValueError(f"decay (= 1/tau) must be in (0, 1), got tensor({value})")


def check_backend(backend) -> str:
    return check_choice("backend", backend, ("auto", "triton", "cuda", "cpp", "torch"))


# What the fused backward keeps (lif_multistep's ``save``): "h", the charged potential H, fp32
# [T, *], written by the forward; or "x", a reference to x_seq (and v_init), from which the backward
# re-runs the charge/fire/reset recurrence bit for bit (fewer bytes: the forward writes no H).
SAVE_MODES = ("auto", "h", "x")
# The CUDA recompute keeps a thread's T values of H in a shared-memory tile of at most 32 steps;
# for longer sequences save="x" on CUDA saves H as save="h" does.
CUDA_RECOMPUTE_MAX_T = 32
# save="auto" per backend: "x" only where a committed benchmark on that device class shows it
# faster (bench_lif.py's cpp-x / cuda-x providers; bench/results/cpu-amd-epyc/save/: 0.90-1.20x on the
# CPU, not consistently faster, so "h"). CUDA: no GPU measurement yet, so "h".
SAVE_AUTO = {"cpp": "h", "cuda": "h", "triton": "h"}


def check_save(save) -> str:
    return check_choice("save", save, SAVE_MODES)


def resolve_save(save: str, backend: str, T: int) -> str:
    """The mode the fused ``backend`` runs for ``save`` (checked) at ``T`` steps: "h" or "x"."""
    if backend == "triton" and save == "x":
        raise ValueError(
            "save='x' (recompute H in the backward) is not available on backend='triton', whose backward reads "
            "the saved H; use save='h' or 'auto' there, or backend='cuda' / 'cpp'"
        )
    mode = SAVE_AUTO[backend] if save == "auto" else save
    if mode == "x" and backend == "cuda" and T > CUDA_RECOMPUTE_MAX_T:
        return "h"  # above the largest tile: save H, as documented
    return mode
