"""Fused TKS loss in Triton: one forward launch, one backward launch, one program per sample.

Per sample ``b`` (z_t = logits[t, b], y = target[b], m_t = [argmax z_t == y], n = 1 for the
"sum" teacher, max(Σ_t m_t, 1) for "mean"):

    z̄ = mean_t z_t,   u = Σ_t m_t z_t / n,   p = softmax(u / τ)
    ce = lse(z̄) − z̄_y
    kd = (τ² / T) Σ_t Σ_c p_c (lse(z_t) − z_{t,c})          (every term >= 0: no cancellation)
    loss = (1 − λ) ce + λ kd

Backward, with g_ce = (1 − λ) g_loss + g_ce_out and g_kd = λ g_loss + g_kd_out per sample:

    ∂/∂z_{t,c} = g_ce / T · (softmax(z̄)_c − [c = y])
               + g_kd τ² / T · (softmax(z_t)_c − p_c)
               − g_kd τ m_t / n · p_c (z̄_c − p·z̄)             (through the teacher, unless detached)

computed as z̄_c − p·z̄ = p·N̄ − N̄_c with N̄_c = mean_t (lse(z_t) − z_{t,c}) >= 0 (well conditioned).

The mask is piecewise constant, so no gradient flows through it (nor through n).

Forward kernel: the program walks C in blocks of ``BLOCK_C`` with every step of the sample in
one ``[BLOCK_T, BLOCK_C]`` tile. Pass 1 keeps, per step, an online max, first argmax and sum of
exponentials; pass 2 (the mask now known) accumulates z̄, the teacher, and online softmax
statistics of z̄ and u / τ. When C fits one block both passes share one load, so the logits are
read once; otherwise pass 2 re-reads the sample's ``T·C`` slab, which is still in L2.
Saved for backward: per (b, t) the step's max, log-sum-exp offset and mask, per b 8 floats
(see ``STATS``), and the logits (referenced, not copied). The backward reads the logits once
(twice, from L2, when C spans several blocks) and writes dlogits once.

Accuracy. With large, confident logits the true gradient is a difference of two numbers near 1
(a softmax near 1 minus a one-hot or a teacher near 1), down to 1e-7 and below. Three things
keep the kernels as accurate as eager fp32 torch there, and each was a measured error on the GPU
before (gradients wrong by 500% at |logits| ~ 150, where torch is within 2%):

- the backward takes the maxima of z̄ and u / τ from its own recomputation, never from the
  forward: ``exp(z̄_c − max)`` at the argmax must see exactly 0, and a max recomputed one ulp
  apart (1.5e-5 at 150) would put the whole error into that softmax;
- no FMA contraction (``enable_fp_fusion=False``): ``s · (1/T) − max`` contracted to one FMA
  skips the product's rounding, so "the same" z̄ differs between two expressions of it;
- exp and log from libdevice (correctly rounded to ~1 ulp, as torch's CUDA kernels) rather than
  the hardware approximations (several ulp near 1, where the difference is formed), and
  divisions rounded to nearest (``div_rn``), as the reference's ``/``.

The exp / log helpers, the online log-sum-exp and softmax-expectation updates and the launch
options are tks_kernels/_softmax_triton.py, shared with the KD loss kernels.

-inf logits (masked classes; the conventions are in tks_kernels/tks_loss/__init__.py): every
exponential of -inf is an exact 0, also in class blocks that are all -inf; the teacher sums the
selected steps with a select (``m_t · z`` would give 0 · -inf = NaN) and gives probability 0 to
a class whose z̄_c is -inf; every product with a zero probability is 0 (N̄_c = +inf there); and a
term whose weight lam or 1 - lam is 0 is left out of the loss (ce is +inf for a masked label).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._backends import refuse_create_graph, double_backward_error
from .._softmax_triton import (
    COMPILE_OPTIONS, exp_shift, interpreter_truncates_bf16, log_softmax_from, next_power_of_2, num_warps,
    online_logsumexp, online_softmax_dot, rescale, times_prob,
)
from .._softmax_triton import exp as _exp
from .._softmax_triton import log as _log
from .config import TKSLossConfig

# Per-sample statistics saved by the forward for the backward, columns of ``stats`` [B, 8]. The
# maxima are kept for inspection only: the backward recomputes them (see "Accuracy" above).
STATS = ("zbar_max", "zbar_logsum", "u_max", "u_logsum", "p_dot_nll", "teacher_div", "n_selected", "unused")
N_STATS = len(STATS)
# Elements of one [BLOCK_T, BLOCK_C] tile: at most 16 fp32 values per thread and tile (the
# backward holds a few tiles of temporaries at once).
MAX_TILE = 4096


def _num_warps(block_t: int, block_c: int) -> int:
    return num_warps(block_t * block_c)


@triton.jit
def _pass1_update(x, cols, run_max, run_sum, run_arg):
    """Fold one tile (invalid columns at -inf) into each step's online max, sum of exp, argmax."""
    blk_max = tl.max(x, axis=1)
    # first index of the maximum, as torch.argmax
    blk_arg = tl.min(tl.where(x == blk_max[:, None], cols[None, :], 2147483647), axis=1)
    run_arg = tl.where(blk_max > run_max, blk_arg, run_arg)  # strict: an earlier block wins a tie
    new_max = tl.maximum(run_max, blk_max)
    run_sum = run_sum * rescale(run_max, new_max) + tl.sum(_exp(x - exp_shift(new_max)[:, None]), axis=1)
    return new_max, run_sum, run_arg


@triton.jit
def _load_tile(rows, cols, t_valid, c_valid):
    """One [BLOCK_T, BLOCK_C] tile in fp32; padded steps and classes read 0 (finite, masked later)."""
    return tl.load(rows + cols[None, :], mask=t_valid[:, None] & c_valid[None, :], other=0.0).to(tl.float32)


@triton.jit
def _mean_and_teacher(x, m, T_f, teacher_div, tau):
    """z̄ and u / τ of one tile, rounded as the reference's ``mean(0)``, ``/ n`` and ``/ τ``.

    The forward and the backward both call this, so both see the same bits (no FMA contraction).
    The teacher sums the selected steps with a select (0 · -inf would be NaN); a class whose z̄
    is -inf (masked at some step) gets u / τ = -inf, teacher probability 0.
    """
    zbar = tl.math.div_rn(tl.sum(x, axis=0), T_f)
    v = tl.math.div_rn(tl.math.div_rn(tl.sum(tl.where(m[:, None] > 0.0, x, 0.0), axis=0), teacher_div), tau)
    return zbar, tl.where(zbar == float("-inf"), float("-inf"), v)


@triton.jit
def _saved_parts(saved_ptr, T):
    """Pointers to the saved buffer's parts: row_max, row_logsum, mask [B, T], then stats [B, 8]
    (one program per sample, so B is the number of programs)."""
    bt = tl.num_programs(0).to(tl.int64) * T
    return saved_ptr, saved_ptr + bt, saved_ptr + 2 * bt, saved_ptr + 3 * bt


@triton.jit
def _program_start(logits_ptr, target_ptr, T, stride_t, stride_b, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's sample b, its step indices and validity, T as fp32, the class offsets of one
    block, the row pointers of its [BLOCK_T, 1] steps and its label."""
    b = tl.program_id(0).to(tl.int64)
    t_idx = tl.arange(0, BLOCK_T)
    # int64 offsets: T * B * C may pass 2**31
    rows = logits_ptr + b * stride_b + t_idx.to(tl.int64)[:, None] * stride_t
    y = tl.load(target_ptr + b).to(tl.int32)
    return b, t_idx, t_idx < T, T.to(tl.float32), tl.arange(0, BLOCK_C), rows, y


@triton.jit(do_not_specialize=["T"])  # T = 1 must not become a constant (T.to below, and one binary)
def _tks_loss_forward_kernel(
    logits_ptr, target_ptr, loss_ptr, ce_ptr, kd_ptr, saved_ptr,
    T, C, stride_t, stride_b,
    lam, tau, kd_scale,
    TEACHER_MEAN: tl.constexpr, ONE_BLOCK: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b, t_idx, t_valid, T_f, c_base, rows, y = _program_start(
        logits_ptr, target_ptr, T, stride_t, stride_b, BLOCK_T, BLOCK_C)
    row_max_ptr, row_logsum_ptr, mask_ptr, stats_ptr = _saved_parts(saved_ptr, T)

    # Pass 1: per step, online max / first argmax / sum of exp over C.
    run_max = tl.full([BLOCK_T], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_T], dtype=tl.float32)
    run_arg = tl.zeros([BLOCK_T], dtype=tl.int32)
    if ONE_BLOCK:
        c_valid = c_base < C
        x_one = _load_tile(rows, c_base, t_valid, c_valid)
        # padded classes are -inf in every max / sum
        run_max, run_sum, run_arg = _pass1_update(
            tl.where(c_valid[None, :], x_one, float("-inf")), c_base, run_max, run_sum, run_arg)
    else:
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + c_base
            c_valid = cols < C
            x = _load_tile(rows, cols, t_valid, c_valid)
            run_max, run_sum, run_arg = _pass1_update(
                tl.where(c_valid[None, :], x, float("-inf")), cols, run_max, run_sum, run_arg)
    row_logsum = _log(run_sum)
    m = tl.where(t_valid & (run_arg == y), 1.0, 0.0)  # [BLOCK_T] fp32 0/1
    n_sel = tl.sum(m, axis=0)
    if TEACHER_MEAN:
        teacher_div = tl.maximum(n_sel, 1.0)  # no selected step: the teacher is 0 whatever n is
    else:
        teacher_div = n_sel * 0.0 + 1.0
    out = b * T + t_idx
    tl.store(row_max_ptr + out, run_max, mask=t_valid)
    tl.store(row_logsum_ptr + out, row_logsum, mask=t_valid)
    tl.store(mask_ptr + out, m, mask=t_valid)

    # Pass 2: z̄ and the teacher per class block; online softmax statistics of both.
    zbar_max = tl.full([], float("-inf"), tl.float32)
    zbar_sum = tl.zeros([], dtype=tl.float32)
    zbar_y = tl.zeros([], dtype=tl.float32)
    u_max = tl.full([], float("-inf"), tl.float32)
    u_sum = tl.zeros([], dtype=tl.float32)
    u_dot_nll = tl.zeros([], dtype=tl.float32)  # Σ_c e^(u_c/τ − u_max) Σ_t (lse_t − z_{t,c})
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + c_base
        c_valid = cols < C
        if ONE_BLOCK:
            x = x_one
        else:
            x = _load_tile(rows, cols, t_valid, c_valid)
        zbar, v = _mean_and_teacher(x, m, T_f, teacher_div, tau)
        zbar_m = tl.where(c_valid, zbar, float("-inf"))
        v_m = tl.where(c_valid, v, float("-inf"))
        # ce: lse(z̄) online, and z̄_y
        zbar_max, zbar_sum = online_logsumexp(zbar_max, zbar_sum, zbar_m)
        zbar_y += tl.sum(tl.where(cols == y, zbar, 0.0), axis=0)
        # −log_softmax(z_t)_c = (max_t − z_{t,c}) + logsum_t >= 0 (+inf where masked), summed
        # over the valid steps
        nll = tl.sum(tl.where(t_valid[:, None], (run_max[:, None] - x) + row_logsum[:, None], 0.0), axis=0)
        nll = tl.where(c_valid, nll, 0.0)
        # teacher softmax, online: weights e^(v − u_max), 0 on padded and masked classes
        u_max, u_sum, u_dot_nll = online_softmax_dot(u_max, u_sum, u_dot_nll, v_m, nll)
    zbar_logsum = _log(zbar_sum)
    ce = (zbar_max - zbar_y) + zbar_logsum
    p_dot_nll_sum = tl.math.div_rn(u_dot_nll, u_sum)  # Σ_c p_c Σ_t (lse_t − z_{t,c})
    kd = kd_scale * p_dot_nll_sum
    # a term of weight 0 is left out, selected before the product (ce is +inf when the label is
    # masked: 0 · inf = NaN)
    ce_term = tl.where(lam == 1.0, 0.0, ce)
    kd_term = tl.where(lam == 0.0, 0.0, kd)
    tl.store(loss_ptr + b, (1.0 - lam) * ce_term + lam * kd_term)
    tl.store(ce_ptr + b, ce)
    tl.store(kd_ptr + b, kd)
    st = stats_ptr + b * 8
    tl.store(st + 0, zbar_max)
    tl.store(st + 1, zbar_logsum)
    tl.store(st + 2, u_max)
    tl.store(st + 3, _log(u_sum))
    tl.store(st + 4, tl.math.div_rn(p_dot_nll_sum, T_f))
    tl.store(st + 5, teacher_div)
    tl.store(st + 6, n_sel)
    tl.store(st + 7, 0.0)


@triton.jit(do_not_specialize=["T"])
def _tks_loss_backward_kernel(
    logits_ptr, target_ptr, saved_ptr,
    grad_loss_ptr, grad_ce_ptr, grad_kd_ptr, grad_logits_ptr,
    T, C, stride_t, stride_b, gstride_t, gstride_b,
    stride_gloss, stride_gce, stride_gkd, grad_div,
    lam, tau, kd_scale,
    HAS_GRAD_LOSS: tl.constexpr, HAS_GRAD_CE: tl.constexpr, HAS_GRAD_KD: tl.constexpr,
    DETACH_TEACHER: tl.constexpr, ONE_BLOCK: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b, t_idx, t_valid, T_f, c_base, rows, y = _program_start(
        logits_ptr, target_ptr, T, stride_t, stride_b, BLOCK_T, BLOCK_C)
    row_max_ptr, row_logsum_ptr, mask_ptr, stats_ptr = _saved_parts(saved_ptr, T)
    grad_rows = grad_logits_ptr + b * gstride_b + t_idx.to(tl.int64)[:, None] * gstride_t
    row_max = tl.load(row_max_ptr + b * T + t_idx, mask=t_valid, other=0.0)
    row_logsum = tl.load(row_logsum_ptr + b * T + t_idx, mask=t_valid, other=0.0)
    m = tl.load(mask_ptr + b * T + t_idx, mask=t_valid, other=0.0)
    st = stats_ptr + b * 8
    zbar_logsum = tl.load(st + 1)
    u_logsum = tl.load(st + 3)
    p_dot_nll = tl.load(st + 4)
    teacher_div = tl.load(st + 5)

    # The maxima of z̄ and u / τ, recomputed here from the same bits the main loop sees (see
    # "Accuracy" in the module docstring); a second read of the slab, from L2, when C spans blocks.
    zbar_max = tl.full([], float("-inf"), tl.float32)
    u_max = tl.full([], float("-inf"), tl.float32)
    if ONE_BLOCK:
        c_valid = c_base < C
        x_one = _load_tile(rows, c_base, t_valid, c_valid)
        zbar, v = _mean_and_teacher(x_one, m, T_f, teacher_div, tau)
        zbar_max = tl.max(tl.where(c_valid, zbar, float("-inf")), axis=0)
        u_max = tl.max(tl.where(c_valid, v, float("-inf")), axis=0)
    else:
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + c_base
            c_valid = cols < C
            zbar, v = _mean_and_teacher(_load_tile(rows, cols, t_valid, c_valid), m, T_f, teacher_div, tau)
            zbar_max = tl.maximum(zbar_max, tl.max(tl.where(c_valid, zbar, float("-inf")), axis=0))
            u_max = tl.maximum(u_max, tl.max(tl.where(c_valid, v, float("-inf")), axis=0))

    # Upstream gradients of the per-sample ce and kd terms (the loss is their λ-mix). A reduced
    # output's gradient is one value (stride 0), divided by B for "mean" as torch's MeanBackward.
    g_ce = tl.zeros([], dtype=tl.float32)
    g_kd = tl.zeros([], dtype=tl.float32)
    if HAS_GRAD_LOSS:
        g = tl.math.div_rn(tl.load(grad_loss_ptr + b * stride_gloss).to(tl.float32), grad_div)
        g_ce += (1.0 - lam) * g
        g_kd += lam * g
    if HAS_GRAD_CE:
        g_ce += tl.math.div_rn(tl.load(grad_ce_ptr + b * stride_gce).to(tl.float32), grad_div)
    if HAS_GRAD_KD:
        g_kd += tl.math.div_rn(tl.load(grad_kd_ptr + b * stride_gkd).to(tl.float32), grad_div)
    coef_ce = tl.math.div_rn(g_ce, T_f)
    coef_student = g_kd * kd_scale
    coef_teacher = tl.math.div_rn(g_kd * tau, teacher_div) * m  # [BLOCK_T]

    for c0 in range(0, C, BLOCK_C):
        cols = c0 + c_base
        c_valid = cols < C
        if ONE_BLOCK:
            x = x_one
        else:
            x = _load_tile(rows, cols, t_valid, c_valid)
        zbar, v = _mean_and_teacher(x, m, T_f, teacher_div, tau)
        softmax_zbar = _exp(log_softmax_from(zbar, zbar_max, zbar_logsum))
        p = _exp(log_softmax_from(v, u_max, u_logsum))
        d_ce = coef_ce * (softmax_zbar - tl.where(cols == y, 1.0, 0.0))  # [BLOCK_C]
        nll = (row_max[:, None] - x) + row_logsum[:, None]  # −log_softmax(z_t), >= 0
        softmax_z = _exp(-nll)
        d = d_ce[None, :] + coef_student * (softmax_z - p[None, :])
        if not DETACH_TEACHER:
            # z̄_c − p·z̄ written as p·N̄ − N̄_c, N̄ = mean_t −log_softmax(z_t): small when the
            # teacher is confident and right, where z̄_c − p·z̄ would cancel large logits
            nll_bar = tl.math.div_rn(tl.sum(tl.where(t_valid[:, None], nll, 0.0), axis=0), T_f)
            d -= coef_teacher[:, None] * times_prob(p, p_dot_nll - nll_bar)[None, :]  # 0 where p = 0
        tl.store(grad_rows + cols[None, :], d.to(grad_logits_ptr.dtype.element_ty),
                 mask=t_valid[:, None] & c_valid[None, :])


def _blocks(T: int, C: int, block_c: Optional[int]) -> tuple[int, int]:
    block_t = max(2, next_power_of_2(T))
    if block_c is None:
        block_c = max(16, min(next_power_of_2(C), MAX_TILE // block_t))
    return block_t, block_c


def tks_loss_forward_triton(
    logits: torch.Tensor, target: torch.Tensor, cfg: TKSLossConfig, block_c: Optional[int] = None
) -> tuple[torch.Tensor, ...]:
    """Launch the forward on ``logits`` [T, B, C] (class dim contiguous) and int64 ``target`` [B].

    Returns ``(loss_b, ce_b, kd_b, saved)``: three fp32 [B] and the fp32 [B·(3T + 8)] buffer of
    what the backward needs: per-step max, log-sum-exp offset and mask as [B, T] each, then the
    [B, 8] ``STATS``. ``block_c`` overrides the class block (tests use it to exercise the
    multi-block path on small C).
    """
    T, B, C = logits.shape
    if logits.stride(2) != 1:
        logits = logits.contiguous()
    dev = logits.device
    loss_b, ce_b, kd_b = (torch.empty(B, dtype=torch.float32, device=dev) for _ in range(3))
    # what the backward needs, in one allocation (fewer host calls: at training sizes this op is
    # bound by the host, not the GPU)
    saved = torch.empty(B * (3 * T + N_STATS), dtype=torch.float32, device=dev)
    block_t, block_c = _blocks(T, C, block_c)
    tau = cfg.temperature
    _tks_loss_forward_kernel[(B,)](
        logits, target.contiguous(), loss_b, ce_b, kd_b, saved,
        T, C, logits.stride(0), logits.stride(1),
        cfg.lam, tau, tau * tau / T,
        TEACHER_MEAN=cfg.teacher_mean, ONE_BLOCK=C <= block_c,
        BLOCK_T=block_t, BLOCK_C=block_c, num_warps=_num_warps(block_t, block_c), **COMPILE_OPTIONS,
    )
    return loss_b, ce_b, kd_b, saved


def _n_selected(saved: torch.Tensor, T: int, B: int) -> torch.Tensor:
    """The per-sample count of selected steps, a [B] view of ``saved`` (stats column 6)."""
    return saved[3 * B * T:].view(B, N_STATS)[:, 6]


def tks_loss_backward_triton(
    logits: torch.Tensor, target: torch.Tensor, saved: torch.Tensor,
    grad_loss: Optional[torch.Tensor], grad_ce: Optional[torch.Tensor], grad_kd: Optional[torch.Tensor],
    cfg: TKSLossConfig, block_c: Optional[int] = None, grad_div: float = 1.0,
) -> torch.Tensor:
    """Launch the backward from the forward's ``saved`` buffer. Upstream grads are [B] (any
    stride) or 0-dim (the gradient of a reduced output, divided by ``grad_div``: B for "mean"),
    None = zero. Returns dlogits [T, B, C] in the logits' dtype."""
    T, B, C = logits.shape
    if logits.stride(2) != 1:
        logits = logits.contiguous()
    # the interpreter truncates to bf16 in a store: write fp32 there and round on the host
    interpreter_bf16 = interpreter_truncates_bf16(logits.dtype)
    out_dtype = torch.float32 if interpreter_bf16 else logits.dtype
    grad_logits = torch.empty((T, B, C), dtype=out_dtype, device=logits.device)
    block_t, block_c = _blocks(T, C, block_c)
    tau = cfg.temperature

    def ptr_stride(g):
        if g is None:
            return saved, 0  # any valid pointer: the kernel does not read it
        return g, (g.stride(0) if g.dim() else 0)

    (gl, sgl), (gce, sgce), (gkd, sgkd) = ptr_stride(grad_loss), ptr_stride(grad_ce), ptr_stride(grad_kd)
    _tks_loss_backward_kernel[(B,)](
        logits, target.contiguous(), saved,
        gl, gce, gkd, grad_logits,
        T, C, logits.stride(0), logits.stride(1), grad_logits.stride(0), grad_logits.stride(1),
        sgl, sgce, sgkd, float(grad_div),
        cfg.lam, tau, tau * tau / T,
        HAS_GRAD_LOSS=grad_loss is not None, HAS_GRAD_CE=grad_ce is not None, HAS_GRAD_KD=grad_kd is not None,
        DETACH_TEACHER=cfg.detach_teacher, ONE_BLOCK=C <= block_c, BLOCK_T=block_t, BLOCK_C=block_c,
        num_warps=_num_warps(block_t, block_c), **COMPILE_OPTIONS,
    )
    return grad_logits.to(logits.dtype) if interpreter_bf16 else grad_logits


def _reduce(cfg: TKSLossConfig, loss_b, ce_b, kd_b):
    """``cfg.reduction`` of the loss (and, with ``return_parts``, of ce and kd), and the divisor
    the backward applies to their one upstream value."""
    if cfg.reduction == "none":
        return loss_b, ce_b, kd_b, 1.0
    reduce = torch.mean if cfg.reduction == "mean" else torch.sum
    grad_div = float(loss_b.shape[0]) if cfg.reduction == "mean" else 1.0
    if cfg.return_parts:
        ce_b, kd_b = reduce(ce_b), reduce(kd_b)
    return reduce(loss_b), ce_b, kd_b, grad_div


class TKSLossTritonFunction(torch.autograd.Function):
    """Autograd over the two Triton launches. Returns ``(loss, ce, kd, n_selected_b)``: fp32,
    per sample [B] for ``reduction="none"``, else reduced to 0-dim here (``ce`` and ``kd`` only
    with ``return_parts``; per sample otherwise, unused), so that no separate reduction node runs
    in the backward: at training sizes this op is bound by the host. ``n_selected_b`` [B] has no
    gradient."""

    @staticmethod
    def forward(ctx, logits, target, cfg: TKSLossConfig, block_c: Optional[int] = None):
        loss_b, ce_b, kd_b, saved = tks_loss_forward_triton(logits, target, cfg, block_c)
        ctx.save_for_backward(logits, target, saved)
        ctx.cfg, ctx.block_c = cfg, block_c
        ctx.set_materialize_grads(False)
        n_selected = _n_selected(saved, logits.shape[0], logits.shape[1])
        ctx.mark_non_differentiable(n_selected)
        loss, ce, kd, ctx.grad_div = _reduce(cfg, loss_b, ce_b, kd_b)
        if cfg.reduction != "none" and not cfg.return_parts:
            # per sample and unused: they must never bring a [B] gradient that grad_div would scale
            ctx.mark_non_differentiable(ce, kd)
        return loss, ce, kd, n_selected

    @staticmethod
    def backward(ctx, grad_loss, grad_ce, grad_kd, _grad_n):
        # the Triton backward is not itself differentiable: create_graph=True raises here, before
        # a gradient without (or with a wrong) graph is returned
        refuse_create_graph("tks_loss", "triton")
        logits, target, saved = ctx.saved_tensors
        if grad_loss is None and grad_ce is None and grad_kd is None:
            return None, None, None, None
        grad_logits = tks_loss_backward_triton(
            logits, target, saved, grad_loss, grad_ce, grad_kd, ctx.cfg, ctx.block_c, ctx.grad_div
        )
        return grad_logits, None, None, None


# The same two launches as torch custom ops, for torch.compile: dynamo keeps an op opaque (its
# fake implementation gives the shapes), where it would try to trace the Function's Triton
# launches. Eager calls keep the Function, which costs less host time per call.
@torch.library.custom_op("tks_triton::tks_loss_forward", mutates_args=())
def _forward_op(logits: torch.Tensor, target: torch.Tensor, lam: float, temperature: float, teacher: str,
                detach_teacher: bool, reduction: str, return_parts: bool, block_c: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = TKSLossConfig(lam, temperature, teacher, detach_teacher, reduction, return_parts)
    loss_b, ce_b, kd_b, saved = tks_loss_forward_triton(logits, target, cfg, block_c or None)
    loss, ce, kd, _ = _reduce(cfg, loss_b, ce_b, kd_b)
    return loss, ce, kd, saved


@_forward_op.register_fake
def _forward_fake(logits, target, lam, temperature, teacher, detach_teacher, reduction, return_parts, block_c):
    T, B, _ = logits.shape
    f32 = dict(dtype=torch.float32, device=logits.device)
    reduced = reduction != "none"
    part_shape = () if reduced and return_parts else (B,)
    return (logits.new_empty(() if reduced else (B,), **f32), logits.new_empty(part_shape, **f32),
            logits.new_empty(part_shape, **f32), logits.new_empty((B * (3 * T + N_STATS),), **f32))


@torch.library.custom_op("tks_triton::tks_loss_backward", mutates_args=())
def _backward_op(logits: torch.Tensor, target: torch.Tensor, saved: torch.Tensor, grad_loss: Optional[torch.Tensor],
                 grad_ce: Optional[torch.Tensor], grad_kd: Optional[torch.Tensor], lam: float, temperature: float,
                 detach_teacher: bool, grad_div: float, block_c: int) -> torch.Tensor:
    cfg = TKSLossConfig(lam, temperature, "sum", detach_teacher, "none", False)  # the teacher mode is in saved
    return tks_loss_backward_triton(logits, target, saved, grad_loss, grad_ce, grad_kd, cfg, block_c or None,
                                    grad_div)


@_backward_op.register_fake
def _backward_fake(logits, target, saved, grad_loss, grad_ce, grad_kd, lam, temperature, detach_teacher, grad_div,
                   block_c):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _op_setup_context(ctx, inputs, output):
    logits, target, lam, temperature, _teacher, detach_teacher, reduction, _parts, block_c = inputs
    ctx.save_for_backward(logits, target, output[3])
    ctx.lam, ctx.temperature, ctx.detach_teacher, ctx.block_c = lam, temperature, detach_teacher, block_c
    ctx.grad_div = float(logits.shape[1]) if reduction == "mean" else 1.0
    ctx.set_materialize_grads(False)


def _op_backward(ctx, grad_loss, grad_ce, grad_kd, _grad_saved):
    refuse_create_graph("tks_loss", "triton")
    none = (None,) * 9
    if grad_loss is None and grad_ce is None and grad_kd is None:
        return none
    logits, target, saved = ctx.saved_tensors
    grad = _backward_op(logits, target, saved, grad_loss, grad_ce, grad_kd, ctx.lam, ctx.temperature,
                        ctx.detach_teacher, ctx.grad_div, ctx.block_c)
    return (grad,) + none[1:]


def _no_double_backward(ctx, grad_grad_logits):
    raise double_backward_error("tks_loss", "triton")


_forward_op.register_autograd(_op_backward, setup_context=_op_setup_context)
# explicit, so a double backward raises instead of silently dropping the second-order terms
_backward_op.register_autograd(_no_double_backward)


def tks_loss_triton(logits: torch.Tensor, target: torch.Tensor, cfg: TKSLossConfig, block_c: Optional[int] = None):
    """``(loss, ce, kd, n_selected_b)`` as ``TKSLossTritonFunction``; under torch.compile through
    the custom ops instead."""
    if not torch.compiler.is_compiling():
        return TKSLossTritonFunction.apply(logits, target, cfg, block_c)
    loss, ce, kd, saved = torch.ops.tks_triton.tks_loss_forward(
        logits, target, cfg.lam, cfg.temperature, cfg.teacher, cfg.detach_teacher, cfg.reduction, cfg.return_parts,
        block_c or 0)
    return loss, ce, kd, _n_selected(saved, logits.shape[0], logits.shape[1])
