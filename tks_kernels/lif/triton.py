"""Fused multi-step LIF in Triton: one launch runs charge/fire/reset over all T, one launch runs
the surrogate-gradient backward over all T in reverse.

Layout: the input is viewed as ``[T, N]`` (time stride free, each step a dense block walked in
memory order; outputs in x's step layout, lif/layout.py). One program
owns ``BLOCK`` neurons and walks time in a loop, so the state stays in registers, every input
element is read once and every output element written once, and a new T does not recompile.
Options that change the code path are ``tl.constexpr``.

Saved for backward: ``h`` (the charged potential ``H``, fp32 ``[T, N]``, 4 bytes per neuron
per step), plus ``x_seq`` (referenced, not copied) and ``v_init`` when the leak is learnable
with ``decay_input``. H stays fp32 because the surrogate and the reset gradient need it exactly;
recomputing H from x in the backward (saving only x, 2 bytes for bf16) was measured on an H100
at 3.4x the backward time of reading H (register arrays over time segments are compute-bound in
Triton), so this kernel reads H.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import layout
from .config import LEAK_MUL, LIFConfig
from .ops import lif_backward_fake, lif_forward_fake, refuse_double_backward, register_lif_autograd
from .surrogate import SURROGATES

# One config: the interpreter cannot autotune, and a memory-bound elementwise recurrence gains
# little from tuning beyond a large block with 16-byte accesses.
BLOCK = 1024
NUM_WARPS = 4
NUM_STAGES = 1
# No FMA contraction: fp32 spikes equal the reference's bit for bit (tests/test_triton_aot.py
# checks the compiled PTX).
COMPILE_OPTIONS = {"enable_fp_fusion": False}


@triton.jit
def _charge(v, x, tau, decay, v_r, LEAK: tl.constexpr, DECAY_INPUT: tl.constexpr):
    # Same operation order as spikingjelly's reference, so fp32 results agree bit for bit.
    if LEAK == 0:
        h = v + x
    elif LEAK == 1:
        if DECAY_INPUT:
            h = v + tl.math.div_rn(x - (v - v_r), tau)
        else:
            h = v - tl.math.div_rn(v - v_r, tau) + x
    else:
        if DECAY_INPUT:
            h = v + (x - (v - v_r)) * decay
        else:
            h = v - (v - v_r) * decay + x
    return h


@triton.jit
def _reset(h, spike, v_threshold, v_r, SOFT_RESET: tl.constexpr):
    if SOFT_RESET:
        v = tl.where(spike, h - v_threshold, h)
    else:
        v = tl.where(spike, v_r, h)
    return v


@triton.jit
def _surrogate_grad(x, alpha, SURROGATE: tl.constexpr):
    # g'(x) of spikingjelly 2.0.0's surrogates; ids from surrogate.SURROGATES. Divisions are
    # rounded to nearest (div_rn), as the CUDA and C++ kernels': Triton's "/" on fp32 compiles to
    # the approximate div.full.f32 (tests/test_triton_aot.py checks the PTX).
    if SURROGATE == 0:  # sigmoid
        s = tl.math.div_rn(1.0, 1.0 + tl.exp(-(x * alpha)))
        g = (1.0 - s) * s * alpha
    elif SURROGATE == 1:  # atan
        a = alpha * 0.5
        ax = 3.141592653589793 * a * x
        g = tl.math.div_rn(a, 1.0 + ax * ax)
    elif SURROGATE == 2:  # piecewise_quadratic
        x_abs = tl.abs(x)
        g = tl.where(x_abs > tl.math.div_rn(1.0, alpha), 0.0, -(alpha * alpha) * x_abs + alpha)
    elif SURROGATE == 3:  # erf
        ax = x * alpha
        g = tl.exp(-(ax * ax)) * (alpha * 0.5641895835477563)
    elif SURROGATE == 4:  # piecewise_exp
        g = alpha * 0.5 * tl.exp(-alpha * tl.abs(x))
    elif SURROGATE == 5:  # soft_sign
        z = tl.math.div_rn(1.0, alpha) + tl.abs(x)
        g = tl.math.div_rn(1.0, 2.0 * alpha * (z * z))
    elif SURROGATE == 6:  # super_spike
        z = tl.abs(x) + 1.0
        g = tl.math.div_rn(alpha, z * z)
    else:  # rect
        g = tl.where(tl.abs(x) < tl.math.div_rn(0.5, alpha), alpha, 0.0)
    return g


@triton.jit
def _backward_step(
    h, grad_v, grad_spike, tau, decay, v_threshold, v_r, alpha,
    HAS_GRAD_SPIKE: tl.constexpr, LEAK: tl.constexpr, DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr,
    DETACH_RESET: tl.constexpr, SURROGATE: tl.constexpr,
):
    """One reverse step: from H[t], dL/dV[t] (all paths) and dL/dS[t], return dL/dX[t],
    dL/dV[t-1] (through the charge) and dL/dH[t]."""
    sg = _surrogate_grad(h - v_threshold, alpha, SURROGATE)
    # dV[t]/dH[t] through the reset
    if SOFT_RESET:
        if DETACH_RESET:
            dv_dh = tl.full(h.shape, 1.0, tl.float32)
        else:
            dv_dh = 1.0 - v_threshold * sg
    else:
        dv_dh = tl.where(h >= v_threshold, 0.0, 1.0)
        if not DETACH_RESET:
            dv_dh = dv_dh + (v_r - h) * sg
    gh = grad_v * dv_dh
    if HAS_GRAD_SPIKE:
        gh = grad_spike * sg + gh
    if LEAK == 0:
        gx = gh
        grad_v_prev = gh
    elif LEAK == 1:
        gh_tau = tl.math.div_rn(gh, tau)
        gx = gh_tau if DECAY_INPUT else gh
        grad_v_prev = gh - gh_tau
    else:
        gh_k = gh * decay
        gx = gh_k if DECAY_INPUT else gh
        grad_v_prev = gh - gh_k
    return gx, grad_v_prev, gh


@triton.jit
def _spike_count(h, v_threshold, count):
    """I-LIF firing round(clamp(H / V_th, 0, D)) as torch.clamp then torch.round: NaN stays NaN,
    ties to even; below 2^23, (y + 2^23) - 2^23 rounds y to an integer (to nearest, ties to even),
    from 2^23 on every fp32 is an integer. The division is correctly rounded, as spikingjelly's."""
    scaled = tl.math.div_rn(h, v_threshold)
    y = tl.where(scaled < 0.0, 0.0, scaled)
    y = tl.where(y > count, count, y)
    return tl.where(y < 8388608.0, (y + 8388608.0) - 8388608.0, y)


@triton.jit
def _count_backward_step(
    h, grad_v, grad_spike, count_decay, tau, decay, v_threshold, inv_threshold, grad_min, grad_max,
    HAS_GRAD_SPIKE: tl.constexpr, DETACH_RESET: tl.constexpr, LEAK: tl.constexpr, LIF_CHARGE: tl.constexpr,
):
    """One reverse step of the I-LIF: dC/dH = 1 / V_th inside the window on H / V_th, dV/dH =
    1 - V_th * dC/dH (1 with detach_reset); returns dL/dX[t] (= dL/dH[t]), dL/dV[t-1], dL/dH[t].
    dH/dV: count_decay, or for the LIF charge (LIF_CHARGE) V - V / tau + X: gh - gh / tau."""
    scaled = tl.math.div_rn(h, v_threshold)
    g = tl.where((scaled >= grad_min) & (scaled <= grad_max), inv_threshold, 0.0)
    if DETACH_RESET:
        gh = grad_v * 1.0
    else:
        gh = grad_v * (1.0 - v_threshold * g)
    if HAS_GRAD_SPIKE:
        gh = grad_spike * g + gh
    if LIF_CHARGE:
        if LEAK == 0:
            grad_v_prev = gh
        elif LEAK == 1:
            grad_v_prev = gh - tl.math.div_rn(gh, tau)
        else:
            grad_v_prev = gh - gh * decay
    else:
        grad_v_prev = gh * count_decay
    return gh, grad_v_prev, gh


@triton.jit
def _leak_factor(x, v_prev, v_r, DECAY_INPUT: tl.constexpr):
    """dH/d(decay) for the learnable leak."""
    if DECAY_INPUT:
        return x - (v_prev - v_r)
    return -(v_prev - v_r)


# T is never specialised (Triton would compile T == 1 apart): any T runs on one compiled kernel.
@triton.jit(do_not_specialize=["T"])
def _lif_forward_kernel(
    x_ptr, v_init_ptr, decay_ptr, spike_ptr, v_ptr, h_ptr,
    T, N, stride_xt,
    tau, v_threshold, v_r, count, count_decay,
    HAS_V_INIT: tl.constexpr, LEAK: tl.constexpr, DECAY_INPUT: tl.constexpr,
    SOFT_RESET: tl.constexpr, STORE_V_SEQ: tl.constexpr, SAVE_H: tl.constexpr, COUNT: tl.constexpr,
    LIF_CHARGE: tl.constexpr, BLOCK: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    # COUNT: integer spike counts (I-LIF): H = count_decay * V + X (count_decay = fp32(1 - 1/tau),
    # 1 - decay for a learnable leak; no factor for IF), or with LIF_CHARGE the LIF's
    # H = V - V / tau + X; C = round(clamp(H / V_th, 0, count)), V = H - C * V_th.
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # int64: T * N may pass 2**31
    mask = offs < N
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32) + v_r
    decay = 0.0
    if LEAK == 2:
        decay = tl.load(decay_ptr).to(tl.float32)
        if COUNT:
            count_decay = 1.0 - decay
    x_row = x_ptr + offs
    out_row = offs
    for _ in tl.range(0, T, num_stages=NUM_STAGES):
        x = tl.load(x_row, mask=mask, other=0.0).to(tl.float32)
        if COUNT:
            if LEAK == 0:
                h = v + x
            elif LIF_CHARGE:
                h = _charge(v, x, tau, decay, v_r, LEAK, DECAY_INPUT)  # v_r = 0, no decay_input
            else:
                h = count_decay * v + x
            spike_f = _spike_count(h, v_threshold, count)
            v = h - spike_f * v_threshold
        else:
            h = _charge(v, x, tau, decay, v_r, LEAK, DECAY_INPUT)
            spike = h >= v_threshold
            v = _reset(h, spike, v_threshold, v_r, SOFT_RESET)
            # via fp32: the interpreter mis-sizes a bool -> bf16 cast (triton 3.8)
            spike_f = tl.where(spike, 1.0, 0.0)
        tl.store(spike_ptr + out_row, spike_f.to(spike_ptr.dtype.element_ty), mask=mask)
        if SAVE_H:
            tl.store(h_ptr + out_row, h, mask=mask)
        if STORE_V_SEQ:
            tl.store(v_ptr + out_row, v, mask=mask)
        x_row += stride_xt
        out_row += N
    if not STORE_V_SEQ:
        tl.store(v_ptr + offs, v, mask=mask)


@triton.jit(do_not_specialize=["T", "last_row", "last_x_row"])
def _lif_backward_kernel(
    grad_spike_ptr, grad_v_ptr, h_ptr, x_ptr, v_init_ptr, decay_ptr,
    grad_x_ptr, grad_v_init_ptr, grad_decay_partial_ptr,
    T, N, stride_xt, last_row, last_x_row,
    tau, v_threshold, v_r, alpha, count, count_decay, grad_min, grad_max,
    HAS_GRAD_SPIKE: tl.constexpr, HAS_GRAD_V: tl.constexpr, HAS_V_INIT: tl.constexpr,
    LEAK: tl.constexpr, DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr,
    DETACH_RESET: tl.constexpr, SURROGATE: tl.constexpr, STORE_V_SEQ: tl.constexpr,
    GRAD_DECAY: tl.constexpr, COUNT: tl.constexpr, LIF_CHARGE: tl.constexpr, BLOCK: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    decay = 0.0
    if LEAK == 2:
        decay = tl.load(decay_ptr).to(tl.float32)
        if COUNT:
            count_decay = 1.0 - decay
    inv_threshold = 0.0
    if COUNT:
        inv_threshold = tl.math.div_rn(1.0, v_threshold)
    # grad of the loss w.r.t. V[t] arriving from step t + 1 (and from the final-v output).
    grad_v_next = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_GRAD_V:
        if not STORE_V_SEQ:
            grad_v_next = tl.load(grad_v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # The leak's gradient sums T * N terms of both signs; fp64 keeps the sum accurate.
    grad_decay_acc = tl.zeros([BLOCK], dtype=tl.float64)
    row = last_row + offs  # last_row = (T - 1) * N, computed on the host in 64 bits
    h = tl.load(h_ptr + row, mask=mask, other=0.0)
    x_row = last_x_row + offs
    for i in tl.range(0, T, num_stages=NUM_STAGES):
        t = T - 1 - i
        gv = grad_v_next
        if HAS_GRAD_V:
            if STORE_V_SEQ:
                gv += tl.load(grad_v_ptr + row, mask=mask, other=0.0).to(tl.float32)
        gs = 0.0
        if HAS_GRAD_SPIKE:
            gs = tl.load(grad_spike_ptr + row, mask=mask, other=0.0).to(tl.float32)
        if COUNT:
            gx, grad_v_next, gh = _count_backward_step(
                h, gv, gs, count_decay, tau, decay, v_threshold, inv_threshold, grad_min, grad_max, HAS_GRAD_SPIKE,
                DETACH_RESET, LEAK, LIF_CHARGE,
            )
        else:
            gx, grad_v_next, gh = _backward_step(
                h, gv, gs, tau, decay, v_threshold, v_r, alpha, HAS_GRAD_SPIKE, LEAK, DECAY_INPUT, SOFT_RESET,
                DETACH_RESET, SURROGATE,
            )
        tl.store(grad_x_ptr + row, gx.to(grad_x_ptr.dtype.element_ty), mask=mask)
        # H[t-1] is needed next iteration anyway; load it now for V[t-1] (the learnable leak's factor).
        if t > 0:
            h = tl.load(h_ptr + row - N, mask=mask, other=0.0)
        if GRAD_DECAY:
            if t > 0:
                if COUNT:
                    v_prev = h - _spike_count(h, v_threshold, count) * v_threshold
                else:
                    v_prev = _reset(h, h >= v_threshold, v_threshold, v_r, SOFT_RESET)
            else:
                if HAS_V_INIT:
                    v_prev = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                else:
                    v_prev = tl.zeros([BLOCK], dtype=tl.float32) + v_r
            x = 0.0
            if DECAY_INPUT:
                x = tl.load(x_ptr + x_row, mask=mask, other=0.0).to(tl.float32)
            if COUNT:
                factor = -v_prev  # dH/d(decay) of (1 - decay) * V
            else:
                factor = _leak_factor(x, v_prev, v_r, DECAY_INPUT)
            grad_decay_acc += tl.where(mask, gh * factor, 0.0).to(tl.float64)
        row -= N
        x_row -= stride_xt
    tl.store(grad_v_init_ptr + offs, grad_v_next, mask=mask)
    if GRAD_DECAY:
        tl.store(grad_decay_partial_ptr + pid, tl.sum(grad_decay_acc, axis=0))



def _as_rows(x_seq: torch.Tensor, step: Optional[tuple[int, ...]]) -> tuple[torch.Tensor, int, int]:
    """``x_seq`` as [T, N] rows in the layout ``step`` (lif/layout.py): read in place when its steps
    already are, else a copy. Returns (rows, N, time stride)."""
    T = x_seq.shape[0]
    if not layout.reads_in_place(x_seq, step):
        x_seq = layout.as_layout(x_seq, layout.seq_strides(x_seq.shape, step), x_seq.dtype)
    N = x_seq[0].numel()
    stride_t = x_seq.stride(0) if T > 1 else N
    return x_seq, N, stride_t


def lif_forward_triton(
    x_seq: torch.Tensor, v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor], cfg: LIFConfig,
    save_h: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Launch the forward. Returns spikes [T, *] (x dtype), v ([T, *] or [*], fp32), h [T, *] fp32 or
    None; outputs in x's memory layout where its steps are dense blocks (lif/layout.py)."""
    step = layout.step_strides(x_seq)
    seq = layout.seq_strides(x_seq.shape, step)
    x_rows, N, stride_t = _as_rows(x_seq, step)
    T = x_seq.shape[0]
    shape = x_seq.shape
    spikes = layout.empty(x_seq, shape, seq, x_seq.dtype)
    if cfg.store_v_seq:
        v_out = layout.empty(x_seq, shape, seq, torch.float32)
    else:
        v_out = layout.empty(x_seq, shape[1:], step, torch.float32)
    h = layout.empty(x_seq, shape, seq, torch.float32) if save_h else None
    v_init_c = layout.as_layout(v_init, step, v_init.dtype) if v_init is not None else None
    grid = (-(-N // BLOCK),)  # ceil division in plain Python (triton.cdiv costs ~1.5 us on the host)
    if N > 0:
        _lif_forward_kernel[grid](
            x_rows, v_init_c, decay, spikes, v_out, h,
            T, N, stride_t,
            cfg.tau, cfg.v_threshold, cfg.reset_value, float(cfg.max_spike_count), cfg.count_decay,
            HAS_V_INIT=v_init is not None, LEAK=cfg.leak, DECAY_INPUT=cfg.decay_input,
            SOFT_RESET=cfg.soft_reset, STORE_V_SEQ=cfg.store_v_seq, SAVE_H=save_h, COUNT=cfg.counts,
            LIF_CHARGE=cfg.count_lif_charge, BLOCK=BLOCK, NUM_STAGES=NUM_STAGES, num_warps=NUM_WARPS, **COMPILE_OPTIONS,
        )
    return spikes, v_out, h


def lif_backward_triton(
    grad_spikes: Optional[torch.Tensor], grad_v: Optional[torch.Tensor], h: torch.Tensor,
    x_seq: Optional[torch.Tensor], v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor],
    cfg: LIFConfig, x_dtype: torch.dtype, need_grad_decay: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Launch the backward. Returns grad_x [T, *] (x dtype), grad_v_init [*] fp32, grad_decay 0-dim or
    None; in the layout the forward wrote h in, the incoming gradients brought to it."""
    T, N = h.shape[0], h[0].numel()
    device = h.device
    step = layout.saved_step_strides(h)
    seq = layout.seq_strides(h.shape, step)
    h = layout.as_layout(h, seq, torch.float32)
    grad_x = layout.empty(h, h.shape, seq, x_dtype)
    grad_v_init = layout.empty(h, h.shape[1:], step, torch.float32)
    grid = (-(-N // BLOCK),)  # ceil division in plain Python (triton.cdiv costs ~1.5 us on the host)
    grad_decay_partial = torch.empty(grid[0] if need_grad_decay else 1, dtype=torch.float64, device=device)
    if grad_spikes is not None:
        grad_spikes = layout.as_layout(grad_spikes, seq, grad_spikes.dtype)
    if grad_v is not None:
        grad_v = layout.as_layout(grad_v, seq if cfg.store_v_seq else step, grad_v.dtype)
    if v_init is not None:
        v_init = layout.as_layout(v_init, step, v_init.dtype)
    stride_t = N
    if need_grad_decay and cfg.decay_input:
        x_seq, _, stride_t = _as_rows(x_seq, step)
    if N > 0:
        _lif_backward_kernel[grid](
            grad_spikes, grad_v, h, x_seq, v_init, decay,
            grad_x, grad_v_init, grad_decay_partial,
            T, N, stride_t, (T - 1) * N, (T - 1) * stride_t,
            cfg.tau, cfg.v_threshold, cfg.reset_value, cfg.alpha, float(cfg.max_spike_count), cfg.count_decay,
            cfg.grad_min, cfg.grad_max,
            HAS_GRAD_SPIKE=grad_spikes is not None, HAS_GRAD_V=grad_v is not None,
            HAS_V_INIT=v_init is not None, LEAK=cfg.leak, DECAY_INPUT=cfg.decay_input,
            SOFT_RESET=cfg.soft_reset, DETACH_RESET=cfg.detach_reset,
            SURROGATE=0 if cfg.counts else cfg.surrogate_id, STORE_V_SEQ=cfg.store_v_seq, GRAD_DECAY=need_grad_decay,
            COUNT=cfg.counts, LIF_CHARGE=cfg.count_lif_charge,
            BLOCK=BLOCK, NUM_STAGES=NUM_STAGES, num_warps=NUM_WARPS, **COMPILE_OPTIONS,
        )
    grad_decay = grad_decay_partial.sum().float() if need_grad_decay else None
    if N == 0:
        grad_x.zero_()
        grad_v_init.zero_()
        grad_decay = torch.zeros((), device=device) if need_grad_decay else None
    return grad_x, grad_v_init, grad_decay


class LIFTritonFunction(torch.autograd.Function):
    """Autograd over the two Triton launches. Inputs: x_seq [T, *], v_init [*] or None,
    decay 0-dim fp32 or None (LEAK_MUL), cfg."""

    @staticmethod
    def forward(ctx, x_seq, v_init, decay, cfg: LIFConfig):
        need_grad_decay = cfg.leak == LEAK_MUL and ctx.needs_input_grad[2]
        spikes, v, h = lif_forward_triton(x_seq, v_init, decay, cfg, save_h=True)
        saved_x = x_seq if need_grad_decay and cfg.decay_input else None
        saved_v_init = v_init if need_grad_decay else None
        ctx.save_for_backward(h, saved_x, saved_v_init, decay)
        ctx.cfg, ctx.x_dtype, ctx.need_grad_decay = cfg, x_seq.dtype, need_grad_decay
        ctx.set_materialize_grads(False)
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        if torch.is_grad_enabled():  # create_graph=True
            refuse_double_backward("triton")
        h, x_seq, v_init, decay = ctx.saved_tensors
        grad_x, grad_v_init, grad_decay = lif_backward_triton(
            grad_spikes, grad_v, h, x_seq, v_init, decay, ctx.cfg, ctx.x_dtype, ctx.need_grad_decay
        )
        if not ctx.needs_input_grad[1]:
            grad_v_init = None
        return grad_x, grad_v_init, grad_decay, None


# The same launches as torch custom ops with the C++ ops' schemas (tks::lif_forward / backward),
# for torch.compile: dynamo keeps an op opaque where it would try to trace the Function's Triton
# launches. Eager calls keep the Function, which costs less host time per call.
_SURROGATE_NAMES = {sid: name for name, (sid, _) in SURROGATES.items()}


def _op_config(leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
               store_v_seq, max_spike_count, grad_min, grad_max, count_lif_charge) -> LIFConfig:
    return LIFConfig(leak, tau, decay_input, v_threshold, None if soft_reset else v_reset, detach_reset,
                     _SURROGATE_NAMES[surrogate], alpha, store_v_seq, max_spike_count, grad_min, grad_max,
                     count_lif_charge)


@torch.library.custom_op("tks_triton::lif_forward", mutates_args=())
def lif_forward_op(x_seq: torch.Tensor, v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor], leak: int,
                   tau: float, decay_input: bool, v_threshold: float, v_reset: float, soft_reset: bool,
                   detach_reset: bool, surrogate: int, alpha: float, store_v_seq: bool, save_h: bool,
                   max_spike_count: int = 0, grad_min: float = 0.0, grad_max: float = 0.0,
                   count_lif_charge: bool = False,
                   save_x: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if save_x:  # the Triton backward reads H; it has no recompute (lif_multistep refuses save="x" here first)
        raise RuntimeError("tks_triton::lif_forward: save_x=True is not supported (the Triton backward reads H)")
    cfg = _op_config(leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
                     store_v_seq, max_spike_count, grad_min, grad_max, count_lif_charge)
    spikes, v, h = lif_forward_triton(x_seq, v_init, decay, cfg, save_h)
    return spikes, v, h if h is not None else x_seq.new_empty((0,), dtype=torch.float32)


@torch.library.custom_op("tks_triton::lif_backward", mutates_args=())
def lif_backward_op(grad_spikes: Optional[torch.Tensor], grad_v: Optional[torch.Tensor], h: torch.Tensor,
                    x_seq: Optional[torch.Tensor], v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor],
                    leak: int, tau: float, decay_input: bool, v_threshold: float, v_reset: float, soft_reset: bool,
                    detach_reset: bool, surrogate: int, alpha: float, store_v_seq: bool, x_dtype: torch.dtype,
                    need_grad_decay: bool, max_spike_count: int = 0, grad_min: float = 0.0, grad_max: float = 0.0,
                    count_lif_charge: bool = False,
                    recompute: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if recompute:
        raise RuntimeError("tks_triton::lif_backward: recompute=True is not supported (the Triton backward reads H)")
    cfg = _op_config(leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
                     store_v_seq, max_spike_count, grad_min, grad_max, count_lif_charge)
    grad_x, grad_v_init, grad_decay = lif_backward_triton(grad_spikes, grad_v, h, x_seq, v_init, decay, cfg, x_dtype,
                                                          need_grad_decay)
    return grad_x, grad_v_init, grad_decay if grad_decay is not None else h.new_zeros(())


torch.library.register_fake("tks_triton::lif_forward")(lif_forward_fake)
torch.library.register_fake("tks_triton::lif_backward")(lif_backward_fake)
register_lif_autograd("tks_triton::lif_forward", lif_backward_op, "tks_triton::lif_backward", lambda h: "triton")


def lif_triton(x_seq: torch.Tensor, v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor], cfg: LIFConfig,
               needs_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes, v)`` from the Triton kernels: the Function in eager mode (no H written when no
    gradient is needed), the custom ops under torch.compile."""
    if torch.compiler.is_compiling():
        spikes, v, _ = lif_forward_op(
            x_seq, v_init, decay, cfg.leak, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.reset_value,
            cfg.soft_reset, cfg.detach_reset, cfg.surrogate_id, cfg.alpha, cfg.store_v_seq, needs_grad,
            cfg.max_spike_count, cfg.grad_min, cfg.grad_max, cfg.count_lif_charge,
        )
        return spikes, v
    if not needs_grad:
        # Inside Function.forward needs_input_grad ignores no_grad mode: decide here, so
        # inference does not write H (a third of the forward's bytes).
        spikes, v, _ = lif_forward_triton(x_seq, v_init, decay, cfg, save_h=False)
        return spikes, v
    return LIFTritonFunction.apply(x_seq, v_init, decay, cfg)
