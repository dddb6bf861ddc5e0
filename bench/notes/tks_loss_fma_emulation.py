"""Why the Triton TKS loss backward recomputes its maxima and runs without FMA contraction.

On the H100, ``tests/test_tks_loss.py::test_large_logits_as_accurate_as_the_reference[triton-all-*]``
failed with gradient errors of 2e-4 (logit scale 15) and 5.04 (scale 50) against 5e-6 / 2e-2 for
torch fp32, while the interpreter passed. This script replays the old backward in torch fp32 on
the CPU with one change: ``z̄ - max`` (and ``u/τ - max``) formed as the GPU compiler contracted
them, ``fma(s, 1/T, -max)`` (the product unrounded), against the forward's rounded ``max``. It
reproduces the GPU's errors (2.06e-4 and 5.03); without the contraction the same arithmetic
is as accurate as torch. Run from the repository root:

    PYTHONPATH=$PWD:$PWD/python python bench/notes/tks_loss_fma_emulation.py
"""
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "tests")
from _utils import rel_err  # noqa: E402
from test_tks_loss import make_logits, run  # noqa: E402

F32 = torch.float32


def old_backward(z, y, tau, lam, contract):
    """The pre-fix kernel's gradient of run()'s weighted sum, in fp32 (see tks_loss/triton.py)."""
    T, B, C = z.shape
    inv_t, inv_tau = torch.tensor(1.0 / T, dtype=F32), torch.tensor(1.0 / tau, dtype=F32)
    s = z.sum(0)
    m = (z.argmax(-1) == y).to(F32)  # [T, B]
    s_teacher = (z * m[..., None]).sum(0)
    zbar, v = s * inv_t, s_teacher * inv_tau  # the forward's rounded values
    zbar_max, u_max = zbar.amax(-1, keepdim=True), v.amax(-1, keepdim=True)
    zbar_logsum = torch.log(torch.exp(zbar - zbar_max).sum(-1, keepdim=True))
    u_logsum = torch.log(torch.exp(v - u_max).sum(-1, keepdim=True))
    if contract:  # one rounding of s * (1/T) - max: fp64 holds the 48-bit product exactly
        d_zbar = (s.double() * inv_t.double() - zbar_max.double()).to(F32)
        d_v = (s_teacher.double() * inv_tau.double() - u_max.double()).to(F32)
    else:
        d_zbar, d_v = zbar - zbar_max, v - u_max
    softmax_zbar, p = torch.exp(d_zbar - zbar_logsum), torch.exp(d_v - u_logsum)
    row_max = z.amax(-1, keepdim=True)
    nll = (row_max - z) + torch.log(torch.exp(z - row_max).sum(-1, keepdim=True))
    nll_bar = nll.mean(0)
    p_dot_nll = (p * nll_bar).sum(-1, keepdim=True)
    # run()'s upstream weights (seed 1): loss, ce and kd per sample
    g = torch.Generator().manual_seed(1)
    w, w_ce, w_kd = (torch.randn(B, generator=g) for _ in range(3))
    g_ce, g_kd = ((1 - lam) * w + w_ce)[:, None], (lam * w + w_kd)[:, None]
    d = g_ce / T * (softmax_zbar - F.one_hot(y, C).to(F32)) + g_kd * tau * tau / T * (torch.exp(-nll) - p)
    return d - (g_kd[None, :, 0] * tau * m)[..., None] * (p * (p_dot_nll - nll_bar))


def main():
    tau, lam = 3.0, 0.5
    for scale in (15.0, 50.0):
        z, y = make_logits(4, 8, 100, "all", seed=2, scale=scale)
        kw = dict(lam=lam, temperature=tau, reduction="none")
        _, _, g64 = run("reference", z.double(), y, **kw)
        _, _, g32 = run("reference", z, y, **kw)
        print(f"scale {scale:4}: torch fp32 {rel_err(g32, g64):.2e}   "
              f"old kernel, no FMA {rel_err(old_backward(z, y, tau, lam, False), g64):.2e}   "
              f"old kernel, contracted {rel_err(old_backward(z, y, tau, lam, True), g64):.2e}")


if __name__ == "__main__":
    main()
