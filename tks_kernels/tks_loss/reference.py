"""Eager reference of the TKS loss: plain torch ops in fp32, gradients by autograd.

It is the ``torch`` backend of ``tks_loss`` and the oracle of every test and benchmark.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import TKSLossConfig, parse_tks_loss_args, reduce_outputs


def tks_loss_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    lam: float,
    temperature: float = 3.0,
    teacher: str = "sum",
    detach_teacher: bool = False,
    reduction: str = "mean",
    return_parts: bool = False,
):
    """Same arguments and outputs as :func:`tks_kernels.tks_loss` (without ``backend``), computed
    with plain torch ops. fp64 logits are computed in fp64 (an extra-precise oracle for tests)."""
    cfg, target = parse_tks_loss_args(
        logits, target, lam, temperature, teacher, detach_teacher, reduction, return_parts, allow_float64=True
    )
    loss_b, ce_b, kd_b, selected_b = tks_loss_reference_per_sample(logits, target, cfg)
    return reduce_outputs(loss_b, ce_b, kd_b, selected_b, logits.shape[0], cfg)


def tks_loss_reference_per_sample(
    logits: torch.Tensor, target: torch.Tensor, cfg: TKSLossConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``(loss_b, ce_b, kd_b, selected_b)``, each ``[B]``, on checked arguments.

    ``selected_b`` counts the steps whose argmax is the label (float, no gradient).
    """
    z = logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32)  # [T, B, C]
    T = z.shape[0]
    tau = cfg.temperature
    # Cross-entropy of the mean output (the SNN's prediction) with the labels.
    ce_b = F.cross_entropy(z.mean(0), target, reduction="none")
    # A step teaches when its argmax (first maximum, as torch.argmax) is the label.
    mask = (z.argmax(-1) == target).to(z.dtype)  # [T, B]
    teacher = (z * mask.unsqueeze(-1)).sum(0)  # [B, C]
    if cfg.teacher_mean:
        # no selected step: the teacher stays the zero vector (a uniform target)
        teacher = teacher / mask.sum(0).clamp_min(1.0).unsqueeze(-1)
    if cfg.detach_teacher:
        teacher = teacher.detach()
    p = torch.softmax(teacher / tau, dim=-1)  # [B, C]
    # Soft cross-entropy of every step (no temperature on the student) with the teacher.
    soft_ce = -(p.unsqueeze(0) * torch.log_softmax(z, dim=-1)).sum(-1)  # [T, B]
    kd_b = soft_ce.sum(0) * (tau * tau / T)
    loss_b = (1.0 - cfg.lam) * ce_b + cfg.lam * kd_b
    return loss_b, ce_b, kd_b, mask.sum(0).detach()
