"""Fused Temporal Knowledge Sharing (TKS) loss, its eager reference, its schedule and the baselines
of the TKS ablations."""
from __future__ import annotations

from typing import Optional

import torch

from .._backends import resolve_backend
from .._checks import check_int, check_real
from .baselines import mean_ce, tet_loss
from .config import TKSLossConfig, TKSLossParts, check_backend, parse_tks_loss_args, reduce_outputs
from .reference import tks_loss_reference, tks_loss_reference_per_sample

__all__ = ["tks_loss", "tks_loss_reference", "tks_lambda", "TKSLossParts", "tet_loss", "mean_ce"]


def _extension_reason(kind: str, x: torch.Tensor) -> Optional[str]:
    if kind == "cuda":
        return "there is no CUDA kernel for tks_loss; use backend='triton' on CUDA tensors"
    # loads tks_kernels._C and registers the ops' Python parts (tks_loss/cpp.py) once; imported here,
    # not at the top: _ext imports torch's compile machinery, which `import tks_kernels` must not
    from .. import _ext

    return _ext.unavailable_reason("cpp", x, "tks_loss", arg="logits")


def tks_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    lam: float,
    temperature: float = 3.0,
    teacher: str = "sum",
    detach_teacher: bool = False,
    reduction: str = "mean",
    return_parts: bool = False,
    backend: str = "auto",
):
    """Temporal Knowledge Sharing loss (Dong, Zhao, Zeng et al.), fused: the cross-entropy of the
    mean output plus a self-distillation term in which the time steps that predict the label
    teach every step. It follows the TKS authors' public training code (Brain-Cog-Lab/TKS).

    Per sample ``b``, with ``z_t = logits[t, b]`` and ``y = target[b]``::

        z̄ = mean_t z_t;                        ce = cross_entropy(z̄, y)
        m_t = [argmax z_t == y]                  (first maximum, as torch.argmax)
        teacher = Σ_t m_t z_t  ("sum")  or that sum / Σ_t m_t  ("mean"); 0 when no step is right
        p = softmax(teacher / τ)
        kd = (τ² / T) Σ_t −Σ_c p_c log_softmax(z_t)_c     (no temperature on the student)
        loss = (1 − lam) ce + lam kd

    Gradients flow through the teacher (as in the authors' code) unless ``detach_teacher``;
    never through the mask. Arithmetic is fp32 whatever the logits' dtype.

    Masked classes (``-inf`` logits), in every backend, with F.cross_entropy's conventions: a
    masked class has probability 0 and gets gradient 0, and 0 · log 0 = 0 in the soft
    cross-entropy. A class whose mean logit z̄_c is -inf (it is -inf at some step) also gets
    teacher probability 0, so the uniform teacher of a sample with no selected step is uniform
    over the unmasked classes, and kd is finite; with the same classes masked at every step
    (the usual case) the teacher of selected steps is the authors' unchanged. The label's own
    class masked at some step makes ce = +inf (as F.cross_entropy; its gradient stays
    F.cross_entropy's finite softmax − one-hot); a term whose weight (``lam`` or ``1 − lam``) is
    0 is left out, so ``lam=0`` is exactly :func:`mean_ce` and ``lam=1`` the kd term. A sample
    whose mean logits have no finite class (e.g. a step whose logits are all -inf), or with a
    +inf or NaN logit, has no defined loss: its loss, parts and gradient are NaN (not checked:
    that would cost a device sync), and the other samples are unaffected (per sample).

    Args:
        logits: ``[T, B, C]`` float32/float16/bfloat16, the output of every time step
            (``torch.stack`` of the per-step outputs; SpikingJelly's multi-step layout).
        target: ``[B]`` integer class indices in ``[0, C)`` (checked: one host sync on CUDA).
        lam: weight of the distillation term in ``[0, 1]``; see :func:`tks_lambda`.
        temperature: ``τ > 0`` of the teacher's softmax (authors: 3 for static images, 5 for DVS).
        teacher: "sum" (the authors' code) or "mean" of the selected steps' logits.
        detach_teacher: stop the gradient through the teacher.
        reduction: "mean" over samples, "sum", or "none" (per-sample ``[B]``,
            ``(1 − lam) ce_b + lam kd_b``).
        return_parts: also return :class:`TKSLossParts` ``(ce, kd, selected)``, reduced the same
            way (``selected``: the fraction of (t, b) whose argmax is the label).
        backend: "auto" (CUDA -> triton, CPU -> cpp when built, else torch), "triton", "cpp",
            "torch" (the eager reference). There is no "cuda" backend for this op.

    Returns:
        ``loss`` (fp32, 0-dim or ``[B]``), or ``(loss, TKSLossParts)`` with ``return_parts``.

    Example::

        >>> logits = model(x)                         # [T, B, C], e.g. T = 4, C = 10
        >>> lam = tks_lambda(epoch, epochs, 0.7)       # 0 -> 0.7 over training (static images)
        >>> loss = tks_loss(logits, y, lam=lam, temperature=3.0)
        >>> loss.backward()
    """
    cfg, target = parse_tks_loss_args(
        logits, target, lam, temperature, teacher, detach_teacher, reduction, return_parts
    )
    backend = check_backend(backend)
    loss, ce, kd, selected_b, reduced = _dispatch(logits, target, cfg, backend)
    return reduce_outputs(loss, ce, kd, selected_b, logits.shape[0], cfg, reduced)


def _dispatch(logits: torch.Tensor, target: torch.Tensor, cfg: TKSLossConfig, backend: str):
    if backend == "cuda":
        raise RuntimeError(
            "tks_loss: backend='cuda' cannot run: there is no CUDA kernel for tks_loss, use backend='triton' "
            "(or 'auto') on CUDA tensors"
        )
    name = resolve_backend(backend, logits, "tks_loss", _extension_reason, arg="logits")
    if name == "torch":
        return (*tks_loss_reference_per_sample(logits, target, cfg), False)
    if name == "triton":
        from .triton import tks_loss_triton

        return (*tks_loss_triton(logits, target, cfg), True)  # reduced with the kernels
    from .cpp import tks_loss_cpp_per_sample

    return (*tks_loss_cpp_per_sample(logits, target, cfg), False)


def tks_lambda(epoch: int, epochs: int, lam_max: float) -> float:
    """The authors' schedule of ``lam``: a linear ramp ``lam_max * epoch / epochs`` from 0 at
    epoch 0, held at ``lam_max`` from ``epoch >= epochs`` on (the authors: ``lam_max`` = 0.7 for
    static images, 0.3 for DVS data). ``epoch`` counts from 0.

    Example::

        >>> tks_lambda(0, 300, 0.7), tks_lambda(150, 300, 0.7), tks_lambda(300, 300, 0.7)
        (0.0, 0.35, 0.7)
    """
    epoch, epochs = check_int("epoch", epoch), check_int("epochs", epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (counted from 0), got {epoch}")
    lam_max = check_real("lam_max", lam_max)
    if not 0.0 <= lam_max <= 1.0:
        raise ValueError(f"lam_max must be in [0, 1], got {lam_max}")
    return lam_max * min(epoch, epochs) / epochs
