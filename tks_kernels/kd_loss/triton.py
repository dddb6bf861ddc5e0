"""Fused distillation loss in Triton: one forward launch, one backward launch, one program per sample.

Per sample ``b`` (s_t = student[t, b], Ts steps; u_t = teacher[t, b], Tt steps)::

    a = mean_t u_t / τ,  v = mean_t s_t / τ          (teacher, student)
    log q = log_softmax(a),  log p = log_softmax(v)
    kl = Σ_c q_c (log q_c − log p_c)                  (0 · log 0 = 0: q_c = 0 adds nothing)
    loss = τ² kl

Backward, g = the upstream gradient of loss_b::

    ∂/∂student[t, b, c] = g τ (p_c − q_c) / Ts                      (the same at every step)
    ∂/∂teacher[t, b, c] = g τ q_c ((log q_c − log p_c) − kl) / Tt   (0 where q_c = 0)

Forward kernel: the program walks C in blocks of ``BLOCK_C``; per block it averages the student's
and the teacher's steps (a loop over each one's own T), folds a and v into online log-sum-exp
statistics and stores them in the saved buffer; a second walk over the saved a and v (2C floats,
from L1/L2) sums the KL terms once both log-sum-exps are known, so each term is formed from
log-probabilities (no cancellation of the two log-sum-exps against each other). When C fits one
block the second walk uses the registers. Saved for backward, per sample, ``[a | v | STATS]``
(fp32, ``2C + 8``): the backward reads those 2C floats, never the logits, and writes each
gradient row once per step.

The exp / log helpers (libdevice), the online log-sum-exp update (safe for class blocks that
are all -inf), log-softmax from the statistics and the no-FMA launch options are
tks_kernels/_softmax_triton.py, shared with the TKS loss kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._backends import double_backward_error, refuse_create_graph
from .._softmax_triton import (
    COMPILE_OPTIONS, interpreter_truncates_bf16, log_softmax_from, next_power_of_2, num_warps, online_logsumexp,
    times_prob,
)
from .._softmax_triton import exp as _exp
from .._softmax_triton import log as _log
from .config import KDLossConfig

# Per-sample statistics after a and v in the saved buffer.
STATS = ("a_max", "a_logsum", "v_max", "v_logsum", "kl", "unused", "unused", "unused")
N_STATS = len(STATS)
# The largest class block: C = 1000 (ImageNet) is one block of 1024; the forward holds a few
# [BLOCK_C] fp32 vectors per program.
MAX_BLOCK_C = 2048


@triton.jit
def _scaled_mean(base, stride_t, T, T_f, tau, cols, valid):
    """mean over the T rows ``base + t * stride_t`` of one class block, / τ, in fp32, rounded as
    the reference's ``mean(0) / τ`` (sum in step order, then two divisions)."""
    acc = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32)
    row = base
    for _ in range(1, T):
        row += stride_t  # a pointer walks the steps: 64-bit offsets whatever T * stride_t
        acc += tl.load(row + cols, mask=valid, other=0.0).to(tl.float32)
    return tl.math.div_rn(tl.math.div_rn(acc, T_f), tau)


@triton.jit
def _log_ratio(q, log_q, log_p):
    """log q − log p, 0 where q = 0 (both selected before the difference: -inf − (-inf) is never
    formed); +inf where the student gives -inf to a class the teacher does not."""
    keep = q > 0.0
    return tl.where(keep, log_q, 0.0) - tl.where(keep, log_p, 0.0)


@triton.jit
def _kl_block(a, v, a_max, a_logsum, v_max, v_logsum):
    """Σ_c q_c (log q_c − log p_c) over one block (padding and masked classes at a = -inf)."""
    log_q = log_softmax_from(a, a_max, a_logsum)
    q = _exp(log_q)
    return tl.sum(q * _log_ratio(q, log_q, log_softmax_from(v, v_max, v_logsum)), axis=0)


@triton.jit(do_not_specialize=["TS", "TT"])  # T = 1 must not become a constant (T.to below)
def _kd_loss_forward_kernel(
    student_ptr, teacher_ptr, loss_ptr, saved_ptr,
    TS, TT, C, s_stride_t, s_stride_b, t_stride_t, t_stride_b,
    tau, tau_sq,
    ONE_BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_C)
    s_base = student_ptr + b * s_stride_b
    t_base = teacher_ptr + b * t_stride_b
    a_row = saved_ptr + b * (2 * C + 8)  # int64 offsets: B * C may pass 2**31
    v_row = a_row + C
    st = a_row + 2 * C
    TS_f = TS.to(tl.float32)
    TT_f = TT.to(tl.float32)
    a_max = tl.full([], float("-inf"), tl.float32)
    a_sum = tl.zeros([], dtype=tl.float32)
    v_max = tl.full([], float("-inf"), tl.float32)
    v_sum = tl.zeros([], dtype=tl.float32)
    if ONE_BLOCK:
        valid = offs < C
        a = tl.where(valid, _scaled_mean(t_base, t_stride_t, TT, TT_f, tau, offs, valid), float("-inf"))
        v = tl.where(valid, _scaled_mean(s_base, s_stride_t, TS, TS_f, tau, offs, valid), float("-inf"))
        a_max, a_sum = online_logsumexp(a_max, a_sum, a)
        v_max, v_sum = online_logsumexp(v_max, v_sum, v)
        tl.store(a_row + offs, a, mask=valid)
        tl.store(v_row + offs, v, mask=valid)
        a_logsum = _log(a_sum)
        v_logsum = _log(v_sum)
        kl = _kl_block(a, v, a_max, a_logsum, v_max, v_logsum)
    else:
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs
            valid = cols < C
            a = tl.where(valid, _scaled_mean(t_base, t_stride_t, TT, TT_f, tau, cols, valid), float("-inf"))
            v = tl.where(valid, _scaled_mean(s_base, s_stride_t, TS, TS_f, tau, cols, valid), float("-inf"))
            a_max, a_sum = online_logsumexp(a_max, a_sum, a)
            v_max, v_sum = online_logsumexp(v_max, v_sum, v)
            tl.store(a_row + cols, a, mask=valid)
            tl.store(v_row + cols, v, mask=valid)
        a_logsum = _log(a_sum)
        v_logsum = _log(v_sum)
        tl.debug_barrier()  # every thread's stores of a and v visible before they are read back
        kl = tl.zeros([], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs
            valid = cols < C
            a = tl.load(a_row + cols, mask=valid, other=float("-inf"))
            v = tl.load(v_row + cols, mask=valid, other=float("-inf"))
            kl += _kl_block(a, v, a_max, a_logsum, v_max, v_logsum)
    tl.store(loss_ptr + b, tau_sq * kl)
    tl.store(st + 0, a_max)
    tl.store(st + 1, a_logsum)
    tl.store(st + 2, v_max)
    tl.store(st + 3, v_logsum)
    tl.store(st + 4, kl)
    tl.store(st + 5, 0.0)
    tl.store(st + 6, 0.0)
    tl.store(st + 7, 0.0)


@triton.jit(do_not_specialize=["TS", "TT"])
def _kd_loss_backward_kernel(
    saved_ptr, grad_ptr, grad_s_ptr, grad_t_ptr,
    TS, TT, C, grad_stride_t, stride_grad, grad_div, tau,
    STUDENT_GRAD: tl.constexpr, TEACHER_GRAD: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_C)
    a_row = saved_ptr + b * (2 * C + 8)
    v_row = a_row + C
    st = a_row + 2 * C
    a_max = tl.load(st + 0)
    a_logsum = tl.load(st + 1)
    v_max = tl.load(st + 2)
    v_logsum = tl.load(st + 3)
    kl = tl.load(st + 4)
    # a reduced loss's gradient is one value (stride 0), divided by B for "mean" as MeanBackward
    g = tl.math.div_rn(tl.load(grad_ptr + b * stride_grad).to(tl.float32), grad_div)
    coef_s = tl.math.div_rn(g * tau, TS.to(tl.float32))
    coef_t = tl.math.div_rn(g * tau, TT.to(tl.float32))
    gs_row = grad_s_ptr + b * C  # the gradients are contiguous [T, B, C]
    gt_row = grad_t_ptr + b * C
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + offs
        valid = cols < C
        a = tl.load(a_row + cols, mask=valid, other=float("-inf"))
        v = tl.load(v_row + cols, mask=valid, other=float("-inf"))
        log_q = log_softmax_from(a, a_max, a_logsum)
        log_p = log_softmax_from(v, v_max, v_logsum)
        q = _exp(log_q)
        if STUDENT_GRAD:
            d_s = (coef_s * (_exp(log_p) - q)).to(grad_s_ptr.dtype.element_ty)
            row = gs_row
            for _ in range(0, TS):
                tl.store(row + cols, d_s, mask=valid)
                row += grad_stride_t
        if TEACHER_GRAD:
            d_t = coef_t * times_prob(q, _log_ratio(q, log_q, log_p) - kl)  # 0 where q = 0
            d_t = d_t.to(grad_t_ptr.dtype.element_ty)
            row = gt_row
            for _ in range(0, TT):
                tl.store(row + cols, d_t, mask=valid)
                row += grad_stride_t


def _block_c(C: int, block_c: Optional[int]) -> int:
    return block_c or max(16, min(next_power_of_2(C), MAX_BLOCK_C))


def kd_loss_forward_triton(
    student: torch.Tensor, teacher: torch.Tensor, cfg: KDLossConfig, block_c: Optional[int] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward on ``student`` [Ts, B, C] and ``teacher`` [Tt, B, C] (any strides).

    Returns ``(loss_b, saved)``: fp32 [B] and the fp32 [B, 2C + 8] buffer ``[a | v | STATS]``.
    ``block_c`` overrides the class block (tests use it to exercise the multi-block path).
    """
    Ts, B, C = student.shape
    Tt = teacher.shape[0]
    if student.stride(2) != 1:
        student = student.contiguous()
    if teacher.stride(2) != 1:
        teacher = teacher.contiguous()
    loss_b = torch.empty(B, dtype=torch.float32, device=student.device)
    saved = torch.empty((B, 2 * C + N_STATS), dtype=torch.float32, device=student.device)
    bc = _block_c(C, block_c)
    tau = cfg.temperature
    _kd_loss_forward_kernel[(B,)](
        student, teacher, loss_b, saved,
        Ts, Tt, C, student.stride(0), student.stride(1), teacher.stride(0), teacher.stride(1),
        tau, tau * tau,
        ONE_BLOCK=C <= bc, BLOCK_C=bc, num_warps=num_warps(bc), **COMPILE_OPTIONS,
    )
    return loss_b, saved


def kd_loss_backward_triton(
    saved: torch.Tensor, grad_loss: torch.Tensor, student_steps: int, teacher_steps: int, temperature: float,
    student_grad: bool, teacher_grad: bool, student_dtype: torch.dtype, teacher_dtype: torch.dtype,
    block_c: Optional[int] = None, grad_div: float = 1.0,
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Launch the backward from the forward's ``saved`` buffer. ``grad_loss`` is [B] (any stride)
    or 0-dim (the gradient of a reduced loss, divided by ``grad_div``: B for "mean"). Returns
    ``(grad_student [Ts, B, C], grad_teacher [Tt, B, C])`` in their inputs' dtypes, None where not
    asked for."""
    B, row = saved.shape
    C = (row - N_STATS) // 2

    def new_grad(wanted, steps, dtype):
        if not wanted:
            return None
        # the interpreter truncates to bf16 in a store: write fp32 there and round on the host
        out_dtype = torch.float32 if interpreter_truncates_bf16(dtype) else dtype
        return torch.empty((steps, B, C), dtype=out_dtype, device=saved.device)

    grad_s = new_grad(student_grad, student_steps, student_dtype)
    grad_t = new_grad(teacher_grad, teacher_steps, teacher_dtype)
    if grad_s is None and grad_t is None:
        return None, None
    bc = _block_c(C, block_c)
    _kd_loss_backward_kernel[(B,)](
        saved, grad_loss, saved if grad_s is None else grad_s, saved if grad_t is None else grad_t,
        student_steps, teacher_steps, C, B * C, grad_loss.stride(0) if grad_loss.dim() else 0, float(grad_div),
        temperature,
        STUDENT_GRAD=grad_s is not None, TEACHER_GRAD=grad_t is not None, BLOCK_C=bc,
        num_warps=num_warps(bc), **COMPILE_OPTIONS,
    )
    if grad_s is not None and grad_s.dtype != student_dtype:
        grad_s = grad_s.to(student_dtype)
    if grad_t is not None and grad_t.dtype != teacher_dtype:
        grad_t = grad_t.to(teacher_dtype)
    return grad_s, grad_t


def _reduce(reduction: str, loss_b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``reduction`` of the per-sample loss, and the divisor the backward applies to its one
    upstream value."""
    if reduction == "none":
        return loss_b, 1.0
    if reduction == "mean":
        return loss_b.mean(), float(loss_b.shape[0])
    return loss_b.sum(), 1.0


class KDLossTritonFunction(torch.autograd.Function):
    """Autograd over the two Triton launches; the loss comes back reduced (0-dim) or per sample
    [B], the reduction inside the Function (no separate reduction node in the backward). Pass the
    teacher detached for ``detach_teacher``: its gradient is computed only when it requires one."""

    @staticmethod
    def forward(ctx, student, teacher, cfg: KDLossConfig, block_c: Optional[int] = None):
        loss_b, saved = kd_loss_forward_triton(student, teacher, cfg, block_c)
        ctx.save_for_backward(saved)
        ctx.meta = (student.shape[0], teacher.shape[0], cfg.temperature, student.dtype, teacher.dtype)
        ctx.block_c = block_c
        loss, ctx.grad_div = _reduce(cfg.reduction, loss_b)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        # the Triton backward is not itself differentiable: create_graph=True raises here, before
        # a gradient without a graph is returned
        refuse_create_graph("kd_loss", "triton")
        (saved,) = ctx.saved_tensors
        steps_s, steps_t, tau, dtype_s, dtype_t = ctx.meta
        grad_s, grad_t = kd_loss_backward_triton(
            saved, grad_loss, steps_s, steps_t, tau, ctx.needs_input_grad[0], ctx.needs_input_grad[1],
            dtype_s, dtype_t, ctx.block_c, ctx.grad_div)
        return grad_s, grad_t, None, None


# The same two launches as torch custom ops, for torch.compile (dynamo keeps an op opaque, where it
# would try to trace the Function's Triton launches); eager calls keep the Function.
@torch.library.custom_op("tks_triton::kd_loss_forward", mutates_args=())
def _forward_op(student: torch.Tensor, teacher: torch.Tensor, temperature: float, reduction: str, block_c: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = KDLossConfig(temperature, False, reduction)
    loss_b, saved = kd_loss_forward_triton(student, teacher, cfg, block_c or None)
    return _reduce(reduction, loss_b)[0], saved


@_forward_op.register_fake
def _forward_fake(student, teacher, temperature, reduction, block_c):
    _, B, C = student.shape
    f32 = dict(dtype=torch.float32, device=student.device)
    return (student.new_empty(() if reduction != "none" else (B,), **f32),
            student.new_empty((B, 2 * C + N_STATS), **f32))


@torch.library.custom_op("tks_triton::kd_loss_backward", mutates_args=())
def _backward_op(saved: torch.Tensor, grad_loss: torch.Tensor, student_steps: int, teacher_steps: int,
                 temperature: float, student_grad: bool, teacher_grad: bool, student_dtype: torch.dtype,
                 teacher_dtype: torch.dtype, grad_div: float, block_c: int) -> tuple[torch.Tensor, torch.Tensor]:
    grad_s, grad_t = kd_loss_backward_triton(saved, grad_loss, student_steps, teacher_steps, temperature,
                                             student_grad, teacher_grad, student_dtype, teacher_dtype,
                                             block_c or None, grad_div)
    # an output not asked for is an empty tensor (custom ops return tensors, never the same one twice)
    return (saved.new_empty((0,)) if grad_s is None else grad_s), (saved.new_empty((0,)) if grad_t is None else grad_t)


@_backward_op.register_fake
def _backward_fake(saved, grad_loss, student_steps, teacher_steps, temperature, student_grad, teacher_grad,
                   student_dtype, teacher_dtype, grad_div, block_c):
    B, row = saved.shape
    C = (row - N_STATS) // 2
    grad_s = saved.new_empty((student_steps, B, C), dtype=student_dtype) if student_grad else saved.new_empty((0,))
    grad_t = saved.new_empty((teacher_steps, B, C), dtype=teacher_dtype) if teacher_grad else saved.new_empty((0,))
    return grad_s, grad_t


def _op_setup_context(ctx, inputs, output):
    student, teacher, temperature, reduction, block_c = inputs
    ctx.save_for_backward(output[1])
    ctx.meta = (student.shape[0], teacher.shape[0], temperature, student.dtype, teacher.dtype)
    ctx.block_c = block_c
    ctx.grad_div = float(student.shape[1]) if reduction == "mean" else 1.0
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _op_backward(ctx, grad_loss, _grad_saved):
    refuse_create_graph("kd_loss", "triton")
    if grad_loss is None:
        return None, None, None, None, None
    (saved,) = ctx.saved_tensors
    steps_s, steps_t, tau, dtype_s, dtype_t = ctx.meta
    need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_s, grad_t = _backward_op(saved, grad_loss, steps_s, steps_t, tau, need_s, need_t, dtype_s, dtype_t,
                                  ctx.grad_div, ctx.block_c)
    return (grad_s if need_s else None), (grad_t if need_t else None), None, None, None


def _no_double_backward(ctx, *grads):
    raise double_backward_error("kd_loss", "triton")


_forward_op.register_autograd(_op_backward, setup_context=_op_setup_context)
# explicit, so a double backward raises instead of silently dropping the second-order terms
_backward_op.register_autograd(_no_double_backward)


def kd_loss_triton(student: torch.Tensor, teacher: torch.Tensor, cfg: KDLossConfig,
                   block_c: Optional[int] = None) -> torch.Tensor:
    """The loss (reduced as ``cfg.reduction``) through ``KDLossTritonFunction``; under torch.compile
    through the custom ops instead."""
    if not torch.compiler.is_compiling():
        return KDLossTritonFunction.apply(student, teacher, cfg, block_c)
    return torch.ops.tks_triton.kd_loss_forward(student, teacher, cfg.temperature, cfg.reduction, block_c or 0)[0]
