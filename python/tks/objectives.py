"""The training objectives tks-train compares, on per-step logits ``[T, B, C]``.

- ``ce``: the baseline, cross-entropy of the mean output over T.
- ``ls``: the same with label smoothing.
- ``tet``: TET, the cross-entropy of every step's output, averaged over T.
- ``tks``: Temporal Knowledge Sharing: cross-entropy of the mean output plus ``lam`` times the
  distillation of every step towards the teacher built from the correct steps, ``lam`` rising
  linearly from 0 to ``lam_max`` over the epochs.

TODO(merge): the eager formulas below stand in for ``tks.TKSLoss`` / ``tks.TETLoss`` /
``tks.MeanCELoss`` (branches ``modules`` and ``tksloss``) until those are on main.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = ("ce", "ls", "tet", "tks")


def tks_lambda(epoch: int, epochs: int, lam_max: float) -> float:
    """``lam`` at 0-based ``epoch``: 0 at the first epoch, ``lam_max`` at the last (linear)."""
    if epochs <= 1:
        return float(lam_max)
    return float(lam_max) * min(epoch, epochs - 1) / (epochs - 1)


class Objective:
    """``objective(logits [T, B, C], target [B]) -> scalar loss``; ``set_epoch(e)`` before each epoch."""

    def __init__(self, name: str, *, epochs: int, lam: float = 0.7, temperature: float = 3.0,
                 label_smoothing: float = 0.1):
        if name not in OBJECTIVES:
            raise ValueError(f"loss={name!r} is unknown; choose one of {list(OBJECTIVES)}")
        self.name, self.epochs, self.lam_max = name, epochs, lam
        self.temperature, self.label_smoothing = temperature, label_smoothing
        self.lam = 0.0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.lam = tks_lambda(epoch, self.epochs, self.lam_max) if self.name == "tks" else 0.0

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.name == "ce":
            return F.cross_entropy(logits.mean(0), target)
        if self.name == "ls":
            return F.cross_entropy(logits.mean(0), target, label_smoothing=self.label_smoothing)
        if self.name == "tet":
            T = logits.shape[0]
            return F.cross_entropy(logits.flatten(0, 1), target.repeat(T))
        return _tks_eager(logits, target, self.lam, self.temperature)


def _tks_eager(logits: torch.Tensor, target: torch.Tensor, lam: float, temperature: float) -> torch.Tensor:
    ce = F.cross_entropy(logits.mean(0), target)
    correct = (logits.argmax(-1) == target).unsqueeze(-1)  # [T, B, 1]: steps that can teach
    teacher_logits = (logits * correct).sum(0)  # [B, C]
    has_teacher = correct.any(0).squeeze(-1)  # [B]
    if lam == 0 or not bool(has_teacher.any()):
        return ce + 0.0 * logits.sum()
    soft = F.softmax(teacher_logits[has_teacher] / temperature, -1)  # [B', C]
    student = F.log_softmax(logits[:, has_teacher], -1)  # [T, B', C]
    kd = -(soft * student).sum(-1).mean()
    return ce + lam * kd
