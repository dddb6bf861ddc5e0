"""tks.TKSLoss / TETLoss / MeanCELoss: the lam schedule, the wiring to the functional ops, and the
losses against their definitions."""
import pytest
import torch
import torch.nn.functional as F

import tks
import tks_kernels

from _utils import assert_rel_close

TOL = 1e-5


def make_logits(T=4, B=6, C=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(T, B, C, generator=g) * 2).to(dtype).requires_grad_()
    target = torch.randint(0, C, (B,), generator=g)
    return logits, target


def tks_from_definition(logits, target, lam, temperature, teacher="sum"):
    """The TKS loss written out from its definition (teacher "sum"/"mean" of the steps that
    predict the label, temperature on the teacher only, τ²/T scale)."""
    T, B, C = logits.shape
    z = logits.double()
    ce = F.cross_entropy(z.mean(0), target)
    mask = (z.argmax(-1) == target).double()  # [T, B]
    tsum = (mask[..., None] * z).sum(0)  # [B, C]
    if teacher == "mean":
        tsum = tsum / mask.sum(0).clamp_min(1.0)[:, None]
    p = F.softmax(tsum / temperature, dim=-1)
    kd_b = -(p[None] * F.log_softmax(z, dim=-1)).sum(-1).sum(0) * temperature**2 / T  # [B]
    return (1 - lam) * ce + lam * kd_b.mean()


@pytest.mark.parametrize("backend", ["auto", "triton"])
@pytest.mark.parametrize("epoch, lam", [(0, 0.0), (3, 0.7 * 3 / 10), (10, 0.7), (12, 0.7)])
def test_tks_loss_follows_the_schedule(epoch, lam, backend):
    logits, target = make_logits()
    criterion = tks.TKSLoss(temperature=3.0, lam_max=0.7, epochs=10, backend=backend)
    assert criterion.set_epoch(epoch) == pytest.approx(lam) and criterion.lam == pytest.approx(lam)
    loss = criterion(logits, target)
    expected = tks_from_definition(logits, target, lam, 3.0)
    assert_rel_close(loss, expected, TOL, "loss")
    (grad,) = torch.autograd.grad(loss, logits)
    (grad_ref,) = torch.autograd.grad(expected, logits)
    assert_rel_close(grad, grad_ref, TOL, "grad logits")


@pytest.mark.parametrize("teacher", ["sum", "mean"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tks_loss_passes_every_option(teacher, reduction):
    logits, target = make_logits(seed=1)
    criterion = tks.TKSLoss(temperature=5.0, lam_max=0.3, teacher=teacher, detach_teacher=True,
                            reduction=reduction, return_parts=True, backend="torch")
    loss, parts = criterion(logits, target)
    ref, ref_parts = tks_kernels.tks_loss(logits, target, lam=0.3, temperature=5.0, teacher=teacher,
                                          detach_teacher=True, reduction=reduction, return_parts=True, backend="torch")
    assert torch.equal(loss, ref)
    for a, b in zip(parts, ref_parts):
        assert torch.equal(a, b)
    weight = torch.rand(loss.shape)
    (grad,) = torch.autograd.grad((loss * weight).sum(), logits)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), logits)
    assert torch.equal(grad, grad_ref)  # detach_teacher changes the gradient only
    if reduction == "mean":
        assert_rel_close(loss, tks_from_definition(logits, target, 0.3, 5.0, teacher), TOL, "loss")


def test_tks_loss_without_schedule_and_before_set_epoch():
    logits, target = make_logits()
    fixed = tks.TKSLoss(lam_max=0.5)
    assert fixed.lam == 0.5
    assert_rel_close(fixed(logits, target), tks_from_definition(logits, target, 0.5, 3.0), TOL, "loss")
    with pytest.raises(ValueError, match="no schedule .*epochs=None"):
        fixed.set_epoch(1)
    scheduled = tks.TKSLoss(epochs=5)
    with pytest.raises(RuntimeError, match=r"needs set_epoch\(epoch\) before the first loss"):
        scheduled(logits, target)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        scheduled.set_epoch(-1)


def test_tet_loss():
    logits, target = make_logits(seed=2)
    loss = tks.TETLoss(lam=0.05, phi=0.5)(logits, target)
    T, B, C = logits.shape
    z = logits.double()
    ce = F.cross_entropy(z.reshape(T * B, C), target.repeat(T))
    expected = 0.95 * ce + 0.05 * (z - 0.5).square().mean()
    assert_rel_close(loss, expected, TOL, "TET loss")
    assert tks.TETLoss(reduction="none")(logits, target).shape == (B,)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mean_ce_loss(label_smoothing):
    logits, target = make_logits(seed=3)
    loss = tks.MeanCELoss(label_smoothing=label_smoothing)(logits, target)
    expected = F.cross_entropy(logits.double().mean(0), target, label_smoothing=label_smoothing)
    assert_rel_close(loss, expected, TOL, "mean CE")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: tks.TKSLoss(temperature=0.0), ValueError, "temperature must be > 0"),
        (lambda: tks.TKSLoss(lam_max=1.5), ValueError, r"lam_max must be in \[0, 1\], got 1.5"),
        (lambda: tks.TKSLoss(epochs=0), ValueError, "epochs must be >= 1"),
        (lambda: tks.TKSLoss(epochs=2.5), TypeError, "epochs must be an int"),
        (lambda: tks.TKSLoss(teacher="max"), ValueError, "teacher='max' is not supported"),
        (lambda: tks.TKSLoss(reduction="avg"), ValueError, "reduction='avg' is not supported"),
        (lambda: tks.TKSLoss(backend="gpu"), ValueError, "backend='gpu' is not supported"),
        (lambda: tks.TKSLoss(detach_teacher=1), TypeError, "detach_teacher must be a bool"),
        (lambda: tks.TETLoss(lam=2.0), ValueError, r"lam must be in \[0, 1\], got 2.0"),
        (lambda: tks.MeanCELoss(label_smoothing=-0.1), ValueError, r"label_smoothing must be in \[0, 1\]"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_numpy_scalars_are_numbers_and_bools_are_not():
    """np.float32 / np.int64 / 0-dim arrays are accepted wherever a number is, stored as Python
    numbers; bools (Python or numpy) are refused."""
    import numpy as np

    logits, target = make_logits(seed=4)
    criterion = tks.TKSLoss(temperature=np.float32(3.0), lam_max=np.float64(0.7), epochs=np.int64(10))
    assert criterion.set_epoch(np.int64(5)) == pytest.approx(0.35)
    assert type(criterion.epoch) is int and type(criterion.epochs) is int and type(criterion.temperature) is float
    expected = tks_kernels.tks_loss(logits, target, lam=0.35, temperature=3.0)
    assert_rel_close(criterion(logits, target), expected, TOL, "loss with numpy arguments")
    assert_rel_close(tks_kernels.tks_loss(logits, target, lam=np.float32(0.35), temperature=np.array(3.0)), expected,
                     TOL, "tks_loss with numpy lam / temperature")
    assert tks_kernels.tks_lambda(np.int32(3), np.int64(6), np.float32(0.5)) == pytest.approx(0.25)
    with pytest.raises(TypeError, match="epoch must be an int"):
        criterion.set_epoch(np.bool_(True))
    with pytest.raises(TypeError, match="epoch must be an int"):
        criterion.set_epoch(2.0)
    with pytest.raises(TypeError, match="lam must be a float"):
        tks_kernels.tks_loss(logits, target, lam=True)
