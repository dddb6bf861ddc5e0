"""Baselines of the TKS ablations (eager torch): CE of the mean output, with or without label
smoothing, and TET. Each takes ``[T, B, C]`` logits like :func:`tks_kernels.tks_loss` and
computes in fp32.

``-inf`` logits (masked classes) follow the conventions of :func:`tks_kernels.tks_loss`: a
masked class gets zero probability and zero gradient, 0 · log 0 = 0, a term of weight 0 is left
out; the label's own class masked gives +inf, as F.cross_entropy does. Label smoothing spreads
its mass over the unmasked classes only, and TET's MSE leaves masked entries out of its mean
(F.cross_entropy(label_smoothing=s) and an MSE over every entry would both be +inf).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_real, check_reduction
from .config import parse_tks_loss_args


def _check(logits, target, reduction) -> torch.Tensor:
    # the same tensor checks as tks_loss (the defaults of its other arguments are valid)
    _, target = parse_tks_loss_args(logits, target, 0.0, 1.0, "sum", False, "mean", False, allow_float64=True)
    check_reduction(reduction)
    return target


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _mix(weight: float, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``(1 − weight) first + weight second``, a term of weight 0 left out (0 · inf = NaN)."""
    if weight == 0.0:
        return first
    if weight == 1.0:
        return second
    return (1.0 - weight) * first + weight * second


def mean_ce(
    logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of the mean output ``mean_t logits[t]`` (the usual SNN loss; the TKS paper's
    "baseline"), optionally with label smoothing ("LS" in its ablation, e.g. 0.1):
    ``(1 − s) · CE + s · mean_c(−log_softmax)``, as torch's ``label_smoothing`` and timm's
    ``LabelSmoothingCrossEntropy``.

    Masked classes (``-inf`` mean logit, i.e. ``-inf`` at some step) get none of the smoothing
    mass: the mean is over the unmasked classes (torch's ``label_smoothing`` puts ``s / C`` on
    them too, which makes the loss +inf). Without masked classes both are the same.

    logits ``[T, B, C]``, target ``[B]`` int; returns fp32, 0-dim or ``[B]`` (``reduction="none"``).
    """
    target = _check(logits, target, reduction)
    label_smoothing = check_real("label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    zbar = logits.to(_compute_dtype(logits)).mean(0)
    if label_smoothing == 0.0:
        return _reduce(F.cross_entropy(zbar, target, reduction="none"), reduction)
    log_p = torch.log_softmax(zbar, dim=-1)
    nll = -log_p.gather(1, target[:, None])[:, 0]
    unmasked = zbar != float("-inf")
    # mean over the unmasked classes, the masked ones selected out (0 · -inf would be NaN)
    smooth = -torch.where(unmasked, log_p, 0.0).sum(-1) / unmasked.sum(-1)
    return _reduce(_mix(label_smoothing, nll, smooth), reduction)


def tet_loss(
    logits: torch.Tensor, target: torch.Tensor, *, lam: float = 1e-3, phi: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """TET, Temporal Efficient Training (Deng et al., ICLR 2022): every step is supervised,
    ``(1 − lam) · mean_t CE(z_t, y) + lam · MSE(z, phi)``, the MSE between every logit and the
    constant ``phi``, averaged over all ``T·B·C`` entries (TET's code: ``lam = 1e-3``, ``phi = 1``).

    Per sample (``reduction="none"``): ``(1 − lam) · mean_t CE(z_{t,b}, y_b) + lam ·
    mean_{t,c} (z_{t,b,c} − phi)²``; its mean over ``b`` is the batch loss above.

    Masked entries (``-inf`` logits) are left out of the MSE: each sample's MSE is the mean over
    its finite-or-+inf entries (a masked logit cannot be pulled towards phi; counting it would make
    the loss +inf), and they get zero gradient. Without masked entries this is the mean over all
    ``T·C`` entries above.
    logits ``[T, B, C]``, target ``[B]`` int; returns fp32, 0-dim or ``[B]``.
    """
    target = _check(logits, target, reduction)
    lam = check_real("lam", lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    phi = check_real("phi", phi)
    z = logits.to(_compute_dtype(logits))
    T, B, C = z.shape
    ce_tb = F.cross_entropy(z.reshape(T * B, C), target.repeat(T), reduction="none").reshape(T, B)
    masked = z == float("-inf")
    # masked entries replaced by phi (a zero term, and a zero gradient: a product or a select
    # after the square would send 0 · inf = NaN into the gradient), then left out of the count
    sq = (torch.where(masked, phi, z) - phi).square()
    mse_b = sq.sum(dim=(0, 2)) / (~masked).sum(dim=(0, 2))
    per_sample = _mix(lam, ce_tb.mean(0), mse_b)
    return _reduce(per_sample, reduction)
