"""Eager reference of the multi-step LIF: an fp32 loop over T with autograd.

It is the ``torch`` backend of ``lif_multistep`` and the oracle of every test and benchmark.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from . import layout
from .config import LEAK_DIV, LEAK_IF, TAU_DEFAULT, LIFConfig, check_tau_or_decay, parse_lif_args
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and outputs as :func:`tks_kernels.lif_multistep`, computed step by step."""
    check_tau_or_decay(tau, decay)
    cfg, decay_tensor = parse_lif_args(
        x_seq, v_init, tau, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, store_v_seq,
        allow_float64=True,
    )
    return lif_reference_forward(x_seq, v_init, decay_tensor, cfg)


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
