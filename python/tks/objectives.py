"""The training objectives tks-train compares, on per-step logits ``[T, B, C]``.

- ``ce``: the baseline, cross-entropy of the mean output over T (``tks.MeanCELoss``).
- ``ls``: the same with label smoothing (``tks.MeanCELoss(label_smoothing=...)``).
- ``tet``: TET, every step supervised plus TET's small MSE term (``tks.TETLoss``, TET's lam 1e-3).
- ``tks``: Temporal Knowledge Sharing (``tks.TKSLoss``, the fused ``tks_kernels.tks_loss``), its
  weight ``lam`` ramping from 0 to ``lam_max`` with the epoch (``tks_kernels.tks_lambda``).
"""
from __future__ import annotations

import torch

from .loss import MeanCELoss, TETLoss, TKSLoss

OBJECTIVES = ("ce", "ls", "tet", "tks")


class Objective:
    """``objective(logits [T, B, C], target [B]) -> scalar loss``; ``set_epoch(e)`` before each epoch."""

    def __init__(self, name: str, *, epochs: int, lam: float = 0.7, temperature: float = 3.0,
                 label_smoothing: float = 0.1):
        if name not in OBJECTIVES:
            raise ValueError(f"loss={name!r} is unknown; choose one of {list(OBJECTIVES)}")
        self.name = name
        if name == "tks":
            self.loss = TKSLoss(temperature=temperature, lam_max=lam, epochs=epochs)
        elif name == "tet":
            self.loss = TETLoss()
        elif name == "ls":
            self.loss = MeanCELoss(label_smoothing=label_smoothing)
        else:
            self.loss = MeanCELoss()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if self.name == "tks":
            self.loss.set_epoch(epoch)

    @property
    def lam(self) -> float:
        """The TKS weight this epoch (0 for the other objectives)."""
        return self.loss.lam if self.name == "tks" else 0.0

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target)
