"""Comparison helpers: exact spikes, relative errors, and the first mismatches when a check fails."""
import torch


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """‖a − b‖ / max(‖b‖, floor) in fp64 (the plain difference when that is zero)."""
    a, b = a.detach().double(), b.detach().double()
    denom = max(b.norm().item(), floor)
    diff = (a - b).norm().item()
    return diff if denom == 0 else diff / denom


def _first_mismatches(a, b, bad, k=5):
    idx = bad.nonzero()[:k]
    return ", ".join(f"{tuple(i.tolist())}: {a[tuple(i)].item():.8g} vs {b[tuple(i)].item():.8g}" for i in idx)


def assert_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} vs {b.dtype}"
    bad = a != b
    if bad.any():
        raise AssertionError(f"{what}: {int(bad.sum())} of {a.numel()} differ; first: {_first_mismatches(a, b, bad)}")


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str, floor: float = 0.0) -> None:
    """‖a − b‖ / max(‖b‖, floor) <= tol. ``floor`` is for sums of many terms of both signs (the
    leak's gradient), whose relative error is ill-conditioned when they cancel to near zero."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    err = rel_err(a, b, floor)
    if not err <= tol:
        a64, b64 = a.detach().double(), b.detach().double()
        scale = b64.abs().max().clamp_min(1e-30)
        bad = (a64 - b64).abs() > tol * scale
        raise AssertionError(f"{what}: relative error {err:.3e} > {tol:.1e}; first: {_first_mismatches(a64, b64, bad)}")


def assert_within_one_rounding(a: torch.Tensor, ref32: torch.Tensor, what: str) -> None:
    """``a`` (low precision) equals the fp32 ``ref32`` up to one rounding to a's dtype."""
    eps = torch.finfo(a.dtype).eps
    a64, r64 = a.detach().double(), ref32.detach().double()
    # one rounding is at most half an ulp; allow a full ulp for the fp32 noise of ref32 itself
    bad = (a64 - r64).abs() > eps * r64.abs() + torch.finfo(a.dtype).tiny
    if bad.any():
        raise AssertionError(f"{what}: {int(bad.sum())} of {a.numel()} beyond one rounding; first: {_first_mismatches(a64, r64, bad)}")
