"""Eager reference of the multi-step LIF: an fp32 loop over T with autograd.

It is the ``torch`` backend of ``lif_multistep`` and the oracle of every test and benchmark.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from . import layout
from .config import LEAK_DIV, LEAK_IF, LEAK_MUL, TAU_DEFAULT, LIFConfig, check_tau_or_decay, parse_lif_args
from .surrogate import spike


def lif_multistep_reference(
    x_seq: torch.Tensor,
    v_init: Optional[torch.Tensor] = None,
    *,
    tau=TAU_DEFAULT,
    decay: Optional[torch.Tensor] = None,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    store_v_seq: bool = False,
    max_spike_count: Optional[int] = None,
    grad_window: Optional[tuple[float, float]] = None,
    count_charge: str = "ilif",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and outputs as :func:`tks_kernels.lif_multistep`, computed step by step
    (fp64 inputs too: the tests' extra-precise oracle)."""
    check_tau_or_decay(tau, decay)
    cfg, decay_tensor = parse_lif_args(
        x_seq, v_init, tau, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, store_v_seq,
        allow_float64=True, max_spike_count=max_spike_count, grad_window=grad_window, count_charge=count_charge,
    )
    return lif_reference_forward(x_seq, v_init, decay_tensor, cfg)


class _SpikeCount(torch.autograd.Function):
    """I-LIF firing ``C = round(clamp(H / v_threshold, 0, D))`` (torch.round: half to even), with
    the rectangular straight-through gradient ``dC/dH = 1 / v_threshold`` where
    ``grad_min <= H / v_threshold <= grad_max`` (both ends included), 0 elsewhere.

    ``threshold`` is a 0-dim tensor on h's device: a division by a Python float on CUDA is a
    multiplication by its reciprocal in torch, which rounds differently from the kernels' (and
    spikingjelly's) correctly rounded ``H / v_threshold``."""

    @staticmethod
    def forward(ctx, h, threshold, count, grad_min, grad_max):
        scaled = h / threshold
        ctx.save_for_backward(scaled, threshold)
        ctx.window = (grad_min, grad_max)
        return torch.round(torch.clamp(scaled, 0, count))

    @staticmethod
    def backward(ctx, grad):
        scaled, threshold = ctx.saved_tensors
        grad_min, grad_max = ctx.window
        inside = (scaled >= grad_min) & (scaled <= grad_max)
        return grad * torch.where(inside, 1 / threshold, 0.0), None, None, None, None


class _GradInLayout(torch.autograd.Function):
    """Identity whose backward returns the gradient with strides ``seq``: x's own layout, which
    autograd's stack of per-step gradients keeps only for channels_last."""

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, seq: tuple[int, ...]) -> torch.Tensor:
        ctx.seq = seq
        return x_seq.view_as(x_seq)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return layout.as_layout(grad, ctx.seq, grad.dtype), None


def lif_reference_forward(
    x_seq: torch.Tensor,
    v_init: Optional[torch.Tensor],
    decay: Optional[torch.Tensor],
    cfg: LIFConfig,
    spike_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop itself, on checked arguments (see ``parse_lif_args``).

    ``spike_fn``, when given, replaces the surrogate spike of ``cfg``: it is called on
    ``H - v_threshold`` each step (e.g. a spikingjelly surrogate object the kernels do not
    support, called exactly as spikingjelly calls it)."""
    v_r = cfg.reset_value
    # fp32 state; fp64 only when the input is fp64 (an extra-precise oracle for tests)
    state_dtype = torch.float64 if x_seq.dtype == torch.float64 else torch.float32
    # outputs in the kernels' layout (lif/layout.py): x's memory format where its steps are dense blocks
    step = layout.step_strides(x_seq)
    seq = layout.seq_strides(x_seq.shape, step)
    if seq is not None and x_seq.requires_grad:
        x_seq = _GradInLayout.apply(x_seq, seq)
    if v_init is not None:
        v = layout.as_layout(v_init, step, state_dtype)
    else:
        v = layout.empty(x_seq, x_seq.shape[1:], step, state_dtype).fill_(v_r)
    spikes, v_seq = [], []
    if decay is not None:
        decay = decay.to(state_dtype)
    if cfg.counts:
        return _count_loop(x_seq, v, decay, cfg, state_dtype, step, seq)
    for x in x_seq.to(state_dtype):
        if cfg.leak == LEAK_IF:
            h = v + x
        elif cfg.leak == LEAK_DIV:
            h = v + (x - (v - v_r)) / cfg.tau if cfg.decay_input else v - (v - v_r) / cfg.tau + x
        else:
            h = v + (x - (v - v_r)) * decay if cfg.decay_input else v - (v - v_r) * decay + x
        if spike_fn is None:
            s = spike(h - cfg.v_threshold, cfg.surrogate, cfg.alpha)
        else:
            s = spike_fn(h - cfg.v_threshold)
        s_reset = s.detach() if cfg.detach_reset else s
        if cfg.soft_reset:
            v = h - s_reset * cfg.v_threshold
        else:
            v = s_reset * cfg.v_reset + (1.0 - s_reset) * h
        spikes.append(s)
        if cfg.store_v_seq:
            v_seq.append(v)
    # (torch.stack keeps channels_last, not other permutations: then one copy into the layout)
    spikes = layout.as_layout(torch.stack(spikes), seq, x_seq.dtype)
    v_out = layout.as_layout(torch.stack(v_seq), seq, state_dtype) if cfg.store_v_seq else layout.as_layout(v, step, state_dtype)
    return spikes, v_out


def _count_loop(x_seq, v, decay, cfg: LIFConfig, state_dtype, step, seq):
    """The I-LIF loop (``cfg.counts``), spikingjelly 2.0.0's arithmetic: ``H = (1 - 1/tau) * V + X``
    with ``1 - 1/tau`` a Python float that the tensor-scalar product rounds to fp32 once (its
    ``_ops/ilif/reference.py``; not the LIF's ``V - V / tau + X``), C from ``_SpikeCount``, soft
    reset ``V = H - C * v_threshold``. A learnable leak charges ``(1 - decay) * V + X``; IF ``V + X``.
    ``cfg.count_lif_charge``: the LIF's ``V - V / tau + X`` (``V - V * decay + X``) instead, spikingjelly's
    single-step ILIFNode (its ``lif_charge(x, v, tau, False, None)``: ``v - (v - 0.0) / tau + x``)."""
    threshold = torch.full((), cfg.v_threshold, dtype=state_dtype, device=x_seq.device)
    keep = decay.new_ones(()) - decay if cfg.leak == LEAK_MUL else cfg.count_decay
    spikes, v_seq = [], []
    for x in x_seq.to(state_dtype):
        if cfg.leak == LEAK_IF:
            h = v + x
        elif cfg.count_lif_charge:
            h = v - (v - 0.0) / cfg.tau + x if cfg.leak == LEAK_DIV else v - (v - 0.0) * decay + x
        else:
            h = keep * v + x
        c = _SpikeCount.apply(h, threshold, cfg.max_spike_count, cfg.grad_min, cfg.grad_max)
        c_reset = c.detach() if cfg.detach_reset else c
        v = h - c_reset * cfg.v_threshold
        spikes.append(c)
        if cfg.store_v_seq:
            v_seq.append(v)
    spikes = layout.as_layout(torch.stack(spikes), seq, x_seq.dtype)
    v_out = layout.as_layout(torch.stack(v_seq), seq, state_dtype) if cfg.store_v_seq else layout.as_layout(v, step, state_dtype)
    return spikes, v_out
