"""Parse and check the arguments of ``kd_loss`` once, for every backend."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import LOSS_BACKENDS, REDUCTIONS, check_bool, check_float_tensor, check_loss_backend, check_real
from .._checks import check_reduction

BACKENDS = LOSS_BACKENDS
__all__ = ["KDLossConfig", "parse_kd_loss_args", "check_backend", "REDUCTIONS", "BACKENDS"]


@dataclass(frozen=True)
class KDLossConfig:
    """Everything but the tensors."""

    temperature: float
    detach_teacher: bool
    reduction: str  # "mean" | "sum" | "none"


def _as_steps(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``[T, B, C]``: a ``[B, C]`` input is one step (a view)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    elif x.dim() != 3:
        raise ValueError(
            f"{name} must have shape [T, B, C] (time, batch, classes) or [B, C] (one output per sample), got "
            f"shape {tuple(x.shape)}; stack per-step outputs with torch.stack(outputs) (SpikingJelly multi-step layout)"
        )
    T, B, C = x.shape
    if T < 1:
        raise ValueError(f"{name} must have at least one time step (T >= 1), got shape {tuple(x.shape)}")
    if B < 1 or C < 1:
        raise ValueError(f"{name} must have B >= 1 samples and C >= 1 classes, got shape {tuple(x.shape)}")
    return x


def parse_kd_loss_args(
    student, teacher, temperature, detach_teacher, reduction, allow_float64: bool = False
) -> tuple[KDLossConfig, torch.Tensor, torch.Tensor]:
    """Check every argument; return the config and both inputs as ``[T, B, C]`` (views).

    ``allow_float64`` lets the reference run in fp64, an extra-precise oracle for tests.
    """
    check_float_tensor("student", student, allow_float64)
    check_float_tensor("teacher", teacher, allow_float64)
    s, t = _as_steps("student", student), _as_steps("teacher", teacher)
    if s.shape[1:] != t.shape[1:]:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must have the same batch size B "
            f"and number of classes C (their last two dims: [B, C] = {list(s.shape[1:])} vs {list(t.shape[1:])}); "
            "their time steps may differ"
        )
    if teacher.device != student.device:
        raise ValueError(
            f"teacher is on {teacher.device} but student is on {student.device}; move it with "
            "teacher.to(student.device)"
        )
    temperature = check_real("temperature", temperature)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature} (2 is the usual choice)")
    check_bool("detach_teacher", detach_teacher)
    check_reduction(reduction)
    return KDLossConfig(temperature, detach_teacher, reduction), s, t


def check_backend(backend) -> str:
    return check_loss_backend(backend)
