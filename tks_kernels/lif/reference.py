"""Eager reference of the multi-step LIF: an fp32 loop over T with autograd.

It is the ``torch`` backend of ``lif_multistep`` and the oracle of every test and benchmark.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .config import LEAK_DIV, LEAK_IF, LIFConfig, parse_lif_args
from .surrogate import spike


def lif_multistep_reference(
    x_seq: torch.Tensor,
    v_init: Optional[torch.Tensor] = None,
    *,
    tau=2.0,
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
    cfg, decay_tensor = parse_lif_args(
        x_seq, v_init, tau, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, store_v_seq,
        allow_float64=True,
    )
    return lif_reference_forward(x_seq, v_init, decay_tensor, cfg)


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
    v = v_init.to(state_dtype) if v_init is not None else torch.full_like(x_seq[0], v_r, dtype=state_dtype)
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
    spikes = torch.stack(spikes).to(x_seq.dtype)
    return spikes, (torch.stack(v_seq) if cfg.store_v_seq else v)
