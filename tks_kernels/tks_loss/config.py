"""Parse and check the arguments of ``tks_loss`` once, for every backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .._checks import LOSS_BACKENDS, REDUCTIONS, check_bool, check_choice, check_float_tensor, check_loss_backend
from .._checks import check_real, check_reduction

TEACHERS = ("sum", "mean")
BACKENDS = LOSS_BACKENDS
__all__ = ["TEACHERS", "REDUCTIONS", "BACKENDS", "TKSLossConfig", "TKSLossParts", "parse_tks_loss_args",
           "check_backend", "label_range", "reduce_outputs"]


@dataclass(frozen=True)
class TKSLossConfig:
    """Everything but the tensors."""

    lam: float
    temperature: float
    teacher: str  # "sum" | "mean"
    detach_teacher: bool
    reduction: str  # "mean" | "sum" | "none"
    return_parts: bool

    @property
    def teacher_mean(self) -> bool:
        return self.teacher == "mean"


def parse_tks_loss_args(
    logits, target, lam, temperature, teacher, detach_teacher, reduction, return_parts,
    allow_float64: bool = False,
) -> tuple[TKSLossConfig, torch.Tensor]:
    """Check every argument; return the config and ``target`` as int64.

    The range of ``target`` is checked here (one host sync on CUDA) so that a bad label is a
    clear ValueError, never a device-side assert. ``allow_float64`` lets the reference run in
    fp64, an extra-precise oracle for tests.
    """
    check_float_tensor("logits", logits, allow_float64)
    if logits.dim() != 3:
        raise ValueError(
            f"logits must have shape [T, B, C] (time, batch, classes), got shape {tuple(logits.shape)}; "
            "stack the per-step outputs with torch.stack(outputs) (SpikingJelly multi-step layout)"
        )
    T, B, C = logits.shape
    if T < 1:
        raise ValueError(f"logits must have at least one time step (T >= 1), got shape {tuple(logits.shape)}")
    if B < 1 or C < 1:
        raise ValueError(f"logits must have B >= 1 samples and C >= 1 classes, got shape {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor of int64 class indices, got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            f"target has dtype {target.dtype}; expected integer class indices (int64), e.g. target.long(). "
            "Soft targets (mixup, label smoothing) are not supported by tks_loss"
        )
    if tuple(target.shape) != (B,):
        raise ValueError(
            f"target has shape {tuple(target.shape)} but logits {tuple(logits.shape)} have B = {B} samples; "
            f"target must be [B] = [{B}] class indices"
        )
    if target.device != logits.device:
        raise ValueError(
            f"target is on {target.device} but logits are on {logits.device}; move it with target.to(logits.device)"
        )
    lam = check_real("lam", lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1] (the weight of the distillation term), got {lam}")
    temperature = check_real("temperature", temperature)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature} (the TKS authors use 3 or 5)")
    if not isinstance(teacher, str):
        raise TypeError(f"teacher must be a str, one of {TEACHERS}, got {teacher!r}")
    check_choice("teacher", teacher, TEACHERS)
    check_reduction(reduction)
    for name, flag in (("detach_teacher", detach_teacher), ("return_parts", return_parts)):
        check_bool(name, flag)
    # last: the range check syncs with the device
    target = target.long()
    if torch.compiler.is_compiling() or (target.is_cuda and torch.cuda.is_current_stream_capturing()):
        # no host sync inside a compiled graph or a CUDA graph capture: an assert that stops the
        # run (a device assert on CUDA) instead; the eager call before capture checks as usual
        torch._assert_async(((target >= 0) & (target < C)).all(), f"tks_loss: target outside [0, {C})")
    else:
        lo, hi = label_range(target)
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"target holds class index {bad}, outside [0, {C}) for C = {C} classes (logits.shape[2])"
            )
    return TKSLossConfig(lam, temperature, teacher, detach_teacher, reduction, return_parts), target


def label_range(target: torch.Tensor) -> tuple[int, int]:
    """``(min, max)`` of int64 ``target``: on CUDA one device-to-host copy of the [B] labels (one
    op, one sync) and the min / max on the host, rather than two reductions on the device first."""
    host = target if target.device.type == "cpu" else target.to("cpu")
    lo, hi = torch.aminmax(host)
    return int(lo), int(hi)


def check_backend(backend) -> str:
    return check_loss_backend(backend)


class TKSLossParts(NamedTuple):
    """The terms of the loss, reduced like it (``return_parts=True``).

    ce: cross-entropy of the mean output; kd: the distillation term; both carry gradients.
    selected: fraction of (t, b) whose argmax is the label (per sample ``[B]`` for
    ``reduction="none"``, else over the whole batch; no gradient).
    """

    ce: torch.Tensor
    kd: torch.Tensor
    selected: torch.Tensor


def reduce_outputs(loss_b, ce_b, kd_b, selected_b, T: int, cfg: TKSLossConfig, reduced: bool = False):
    """Apply ``cfg.reduction`` to the per-sample ``[B]`` outputs of any backend; with ``reduced``
    the backend has reduced loss (and, with ``return_parts``, ce and kd) itself.

    ``selected_b`` holds the number of selected steps of each sample.
    """
    if reduced or cfg.reduction == "none":
        def reduce(v):
            return v
    elif cfg.reduction == "mean":
        reduce = torch.mean
    else:
        reduce = torch.sum
    loss = reduce(loss_b)
    if not cfg.return_parts:
        return loss
    selected_b = selected_b.detach().float()
    selected = selected_b / T if cfg.reduction == "none" else selected_b.sum() / (T * selected_b.numel())
    return loss, TKSLossParts(reduce(ce_b), reduce(kd_b), selected)
