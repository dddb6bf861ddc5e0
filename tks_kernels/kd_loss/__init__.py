"""Fused knowledge-distillation loss between time-averaged outputs (the KD term of TSSD, TRT and
other temporal self-distillation methods), and its eager reference."""
from __future__ import annotations

from typing import Optional

import torch

from .._backends import resolve_backend
from .config import KDLossConfig, check_backend, parse_kd_loss_args
from .reference import kd_loss_reference, kd_loss_reference_per_sample, reduce_kd

__all__ = ["kd_loss", "kd_loss_reference"]


def _extension_reason(kind: str, x: torch.Tensor) -> Optional[str]:
    if kind == "cuda":
        return "there is no CUDA kernel for kd_loss; use backend='triton' on CUDA tensors"
    # loads tks_kernels._C and registers the ops' Python parts (kd_loss/cpp.py) once; imported here,
    # not at the top: _ext imports torch's compile machinery, which `import tks_kernels` must not
    from .. import _ext

    return _ext.unavailable_reason("cpp", x, "kd_loss", arg="student")


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float = 2.0,
    detach_teacher: bool = True,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Distillation loss between time-averaged outputs, fused: each input is averaged over its
    own time axis, then ``τ² · KL(softmax(t̄ / τ) || softmax(s̄ / τ))`` per sample (Hinton et
    al.'s soft-target loss, scaled by τ² so its gradient does not shrink with τ).

    Per sample ``b``, with ``s̄ = mean_t student[t, b]``, ``t̄ = mean_t teacher[t, b]``::

        q = softmax(t̄ / τ),  p = softmax(s̄ / τ)
        kd_b = τ² Σ_c q_c (log q_c − log p_c)          (0 · log 0 = 0)

    The gradient reaches the student as ``τ (p − q) / Ts`` at every step and, when
    ``detach_teacher=False``, the teacher as ``τ q (log q − log p − KL) / Tt``. Arithmetic is
    fp32 whatever the inputs' dtypes (each may be float32, float16 or bfloat16; they may differ).

    Masked classes (``-inf`` logits; a class -inf at any step has a -inf mean): a class the
    teacher gives probability 0 adds nothing (0 · log 0 = 0, whatever the student's value) and
    gets zero gradient on both sides. A class the student puts at -inf while the teacher gives
    it ``q_c > 0`` makes the KL +inf (as the divergence is): the student's gradient stays the
    finite ``τ (p − q) / Ts``, the teacher's (``detach_teacher=False``) is not finite for that
    sample (-inf, and NaN at that class), as autograd's through the reference. A sample whose student or teacher mean
    has no finite class (e.g. a step whose logits are all -inf), or with a +inf or NaN logit, has
    no defined loss: NaN for that sample (not checked: that would cost a device sync).

    Args:
        student: ``[Ts, B, C]`` (per-step outputs, SpikingJelly's multi-step layout) or ``[B, C]``.
        teacher: ``[Tt, B, C]`` or ``[B, C]``; same B and C as ``student``, any number of steps.
        temperature: ``τ > 0`` of both softmaxes.
        detach_teacher: stop the gradient to the teacher (the usual self-distillation setting).
        reduction: "mean" over samples (the sum over classes, averaged over B: F.kl_div's
            "batchmean"), "sum", or "none" (per sample ``[B]``).
        backend: "auto" (CUDA -> triton, CPU -> cpp when built, else torch), "triton", "cpp",
            "torch" (the eager reference). There is no "cuda" backend for this op.

    Returns:
        fp32 loss, 0-dim or ``[B]``.

    Example::

        >>> z_student = model(x, T=4)                  # [4, B, C]
        >>> z_teacher = model(x, T=8)                  # [8, B, C], e.g. TSSD's longer teacher
        >>> loss = ce + kd_loss(z_student, z_teacher, temperature=2.0)   # teacher detached
        >>> loss.backward()
    """
    cfg, s, t = parse_kd_loss_args(student, teacher, temperature, detach_teacher, reduction)
    backend = check_backend(backend)
    if cfg.detach_teacher:
        t = t.detach()
    return _dispatch(s, t, cfg, backend)


def _dispatch(student: torch.Tensor, teacher: torch.Tensor, cfg: KDLossConfig, backend: str) -> torch.Tensor:
    if backend == "cuda":
        raise RuntimeError(
            "kd_loss: backend='cuda' cannot run: there is no CUDA kernel for kd_loss, use backend='triton' "
            "(or 'auto') on CUDA tensors"
        )
    name = resolve_backend(backend, student, "kd_loss", _extension_reason, arg="student")
    if name == "torch":
        return reduce_kd(kd_loss_reference_per_sample(student, teacher, cfg), cfg.reduction)
    if name == "triton":
        from .triton import kd_loss_triton

        return kd_loss_triton(student, teacher, cfg)  # reduced with the kernels
    from .cpp import kd_loss_cpp

    return kd_loss_cpp(student, teacher, cfg)  # reduced with the kernels
