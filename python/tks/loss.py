"""Loss modules over ``[T, B, C]`` logits: the TKS loss with its lam schedule, and the baselines
of the TKS ablations (TET, cross-entropy of the mean output with optional label smoothing)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

import tks_kernels
from tks_kernels._checks import check_bool, check_choice, check_int, check_real

__all__ = ["TKSLoss", "TETLoss", "MeanCELoss", "KDLoss"]


def _check_unit(name: str, value) -> float:
    value = check_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _check_reduction(value) -> str:
    # imported here, not at the top: tks imports without the tks_loss op (it arrives on its own branch)
    from tks_kernels.tks_loss.config import REDUCTIONS

    return check_choice("reduction", value, REDUCTIONS)


class TKSLoss(nn.Module):
    """Temporal Knowledge Sharing loss (:func:`tks_kernels.tks_loss`, fused) with the authors'
    schedule of its weight: ``lam = lam_max * epoch / epochs`` (:func:`tks_kernels.tks_lambda`).

    Args:
        temperature: ``τ > 0`` of the teacher's softmax (authors: 3 for static images, 5 for DVS).
        lam_max: final weight of the distillation term, in ``[0, 1]`` (authors: 0.7 static, 0.3 DVS).
        epochs: length of the ramp. Call :meth:`set_epoch` at the start of every epoch (counted
            from 0); the forward refuses to run before the first call, so a forgotten call cannot
            silently train with ``lam = 0``. ``None``: no schedule, ``lam = lam_max`` throughout.
        teacher: "sum" (the authors' code) or "mean" of the steps that predict the label.
        detach_teacher: stop the gradient through the teacher.
        reduction: "mean", "sum" or "none" (per sample ``[B]``).
        return_parts: the forward also returns ``TKSLossParts(ce, kd, selected)`` for logging.
        backend: "auto" | "triton" | "cpp" | "torch".

    Shapes: ``logits [T, B, C]`` (``torch.stack`` of the per-step outputs, the multi-step
    layout), ``target [B]`` int64 -> fp32 loss, 0-dim (or ``[B]``).

    Example::

        >>> criterion = tks.TKSLoss(temperature=3.0, lam_max=0.7, epochs=300)
        >>> for epoch in range(300):
        ...     criterion.set_epoch(epoch)
        ...     for x, y in loader:
        ...         loss = criterion(model(x), y)       # model(x): [T, B, C]
    """

    def __init__(
        self,
        temperature: float = 3.0,
        lam_max: float = 0.7,
        epochs: Optional[int] = None,
        teacher: str = "sum",
        detach_teacher: bool = False,
        reduction: str = "mean",
        return_parts: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        from tks_kernels.tks_loss.config import TEACHERS, check_backend

        self.lam_max = _check_unit("lam_max", lam_max)
        if epochs is not None:
            epochs = check_int("epochs", epochs)
            tks_kernels.tks_lambda(0, epochs, lam_max)  # checks epochs
        self.temperature = check_real("temperature", temperature)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature} (the TKS authors use 3 or 5)")
        self.epochs = epochs
        self.teacher = check_choice("teacher", teacher, TEACHERS)
        self.detach_teacher = check_bool("detach_teacher", detach_teacher)
        self.reduction = _check_reduction(reduction)
        self.return_parts = check_bool("return_parts", return_parts)
        self.backend = check_backend(backend)
        self.epoch: Optional[int] = None

    def set_epoch(self, epoch: int) -> float:
        """Move the schedule to ``epoch`` (from 0); returns the new ``lam``."""
        if self.epochs is None:
            raise ValueError(
                f"this TKSLoss has no schedule (epochs=None): lam is fixed at lam_max={self.lam_max}; "
                "construct it with epochs=<number of training epochs> for the authors' ramp"
            )
        epoch = check_int("epoch", epoch)
        lam = tks_kernels.tks_lambda(epoch, self.epochs, self.lam_max)  # checks epoch
        self.epoch = epoch
        return lam

    @property
    def lam(self) -> float:
        """The weight of the distillation term now."""
        if self.epochs is None:
            return self.lam_max
        if self.epoch is None:
            raise RuntimeError(
                f"TKSLoss(epochs={self.epochs}) needs set_epoch(epoch) before the first loss (and at the start "
                "of every epoch): lam ramps from 0 to lam_max with the epoch"
            )
        return tks_kernels.tks_lambda(self.epoch, self.epochs, self.lam_max)

    def forward(self, logits: torch.Tensor, target: torch.Tensor):
        return tks_kernels.tks_loss(
            logits, target, lam=self.lam, temperature=self.temperature, teacher=self.teacher,
            detach_teacher=self.detach_teacher, reduction=self.reduction, return_parts=self.return_parts,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, lam_max={self.lam_max}, epochs={self.epochs}, epoch={self.epoch}, "
            f"teacher={self.teacher!r}, detach_teacher={self.detach_teacher}, reduction={self.reduction!r}"
        )


class TETLoss(nn.Module):
    """TET (Deng et al., ICLR 2022), :func:`tks_kernels.tet_loss`: every step supervised,
    ``(1 − lam) · mean_t CE(z_t, y) + lam · MSE(z, phi)``. ``logits [T, B, C]``, ``target [B]``."""

    def __init__(self, lam: float = 1e-3, phi: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.lam = _check_unit("lam", lam)
        self.phi = check_real("phi", phi)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tks_kernels.tet_loss(logits, target, lam=self.lam, phi=self.phi, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, phi={self.phi}, reduction={self.reduction!r}"


class MeanCELoss(nn.Module):
    """Cross-entropy of the mean output over time (the usual SNN loss), optionally with label
    smoothing, :func:`tks_kernels.mean_ce`. ``logits [T, B, C]``, ``target [B]``."""

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__()
        self.label_smoothing = _check_unit("label_smoothing", label_smoothing)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tks_kernels.mean_ce(logits, target, label_smoothing=self.label_smoothing, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}"


class KDLoss(nn.Module):
    """Distillation between two time-averaged outputs, :func:`tks_kernels.kd_loss` (fused):
    ``temperature^2 * KL(softmax(mean_t teacher / tau) || softmax(mean_t student / tau))`` per
    sample. ``student [Ts, B, C]`` or ``[B, C]``, ``teacher [Tt, B, C]`` or ``[B, C]`` (Ts and Tt
    may differ) -> fp32 loss, 0-dim (or ``[B]`` with ``reduction="none"``). The teacher is detached
    unless ``detach_teacher=False``."""

    def __init__(self, temperature: float = 2.0, detach_teacher: bool = True, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__()
        self.temperature = check_real("temperature", temperature)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.detach_teacher = check_bool("detach_teacher", detach_teacher)
        self.reduction = _check_reduction(reduction)
        self.backend = backend

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return tks_kernels.kd_loss(student, teacher, temperature=self.temperature, detach_teacher=self.detach_teacher,
                                   reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, detach_teacher={self.detach_teacher}, reduction={self.reduction!r}"
