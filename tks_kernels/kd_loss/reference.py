"""Eager reference of the distillation loss: plain torch ops in fp32, gradients by autograd.

It is the ``torch`` backend of ``kd_loss`` and the oracle of every test and benchmark.
"""
from __future__ import annotations

import torch

from .config import KDLossConfig, parse_kd_loss_args


def kd_loss_reference(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float = 2.0,
    detach_teacher: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Same arguments and output as :func:`tks_kernels.kd_loss` (without ``backend``), computed
    with plain torch ops. fp64 inputs are computed in fp64 (an extra-precise oracle for tests)."""
    cfg, s, t = parse_kd_loss_args(student, teacher, temperature, detach_teacher, reduction, allow_float64=True)
    return reduce_kd(kd_loss_reference_per_sample(s, t, cfg), cfg.reduction)


def kd_loss_reference_per_sample(student: torch.Tensor, teacher: torch.Tensor, cfg: KDLossConfig) -> torch.Tensor:
    """Per-sample ``τ² KL(softmax(t̄ / τ) || softmax(s̄ / τ))`` ``[B]`` on checked ``[T, B, C]`` inputs."""
    dtype = torch.float64 if torch.float64 in (student.dtype, teacher.dtype) else torch.float32
    tau = cfg.temperature
    s_bar = student.to(dtype).mean(0)  # [B, C]
    t_bar = teacher.to(dtype).mean(0)
    if cfg.detach_teacher:
        t_bar = t_bar.detach()
    log_p = torch.log_softmax(s_bar / tau, dim=-1)  # the student's log-probabilities
    log_q = torch.log_softmax(t_bar / tau, dim=-1)  # the teacher's
    q = torch.softmax(t_bar / tau, dim=-1)
    # 0 log 0 = 0: a class the teacher gives probability 0 (t̄_c = -inf) adds nothing, whatever the
    # student says; the selects keep -inf - (-inf) out of the sum and NaN out of the gradient
    present = q > 0
    kl = (q * (torch.where(present, log_q, 0.0) - torch.where(present, log_p, 0.0))).sum(-1)
    return kl * (tau * tau)


def reduce_kd(kd_b: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return kd_b.mean()
    if reduction == "sum":
        return kd_b.sum()
    return kd_b
