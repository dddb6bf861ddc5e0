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
    zbar = z.mean(0)
    ce_b = F.cross_entropy(zbar, target, reduction="none")
    # A step teaches when its argmax (first maximum, as torch.argmax) is the label.
    selected = z.argmax(-1) == target  # [T, B]
    mask = selected.to(z.dtype)
    # the selected steps' sum, by a select: (z * mask) would give 0 * -inf = NaN for masked classes
    teacher = torch.where(selected.unsqueeze(-1), z, 0.0).sum(0)  # [B, C]
    if cfg.teacher_mean:
        # no selected step: the teacher stays the zero vector (a uniform target)
        teacher = teacher / mask.sum(0).clamp_min(1.0).unsqueeze(-1)
    if cfg.detach_teacher:
        teacher = teacher.detach()
    # A class whose mean logit is -inf (masked at some step) gets teacher probability 0: the
    # uniform teacher of a sample without a selected step is uniform over the unmasked classes.
    v = torch.where(zbar == float("-inf"), float("-inf"), teacher / tau)
    p = torch.softmax(v, dim=-1)  # [B, C]
    # Soft cross-entropy of every step (no temperature on the student) with the teacher; 0 log 0 = 0:
    # a class of zero teacher probability adds nothing (its log_softmax may be -inf), and the
    # select keeps -inf out of the product, so no NaN reaches the gradient either.
    log_q = torch.log_softmax(z, dim=-1)
    soft_ce = -(p.unsqueeze(0) * torch.where(p.unsqueeze(0) > 0, log_q, 0.0)).sum(-1)  # [T, B]
    kd_b = soft_ce.sum(0) * (tau * tau / T)
    loss_b = mix_terms(cfg.lam, ce_b, kd_b)
    return loss_b, ce_b, kd_b, mask.sum(0).detach()


def mix_terms(lam: float, ce_b: torch.Tensor, kd_b: torch.Tensor) -> torch.Tensor:
    """``(1 − lam) ce + lam kd`` with a term of weight 0 left out: ce is +inf when the label's class
    is masked (-inf), and 0 · inf would make the loss NaN."""
    if lam == 0.0:
        return ce_b
    if lam == 1.0:
        return kd_b
    return (1.0 - lam) * ce_b + lam * kd_b
