"""The compiled LIF kernels (csrc/lif/) as torch ops, the ``cuda`` and ``cpp`` backends.

The C++ extension defines ``torch.ops.tks.lif_forward`` and ``torch.ops.tks.lif_backward``
(schemas in csrc/lif/lif_ops.cpp, kernels for CPU and CUDA tensors). This module, imported by
``tks_kernels._ext`` once the extension has loaded, registers what the ops need in Python (fake
implementations and the autograd formula, from lif/ops.py).
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _ext
from .config import LIFConfig
from .ops import extension_backend, lif_backward_fake, lif_forward_fake, register_lif_autograd


def lif_extension_forward(
    name: str, x_seq: torch.Tensor, v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor], cfg: LIFConfig,
    save_x: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``tks::lif_forward`` (backend ``name``: "cuda" or "cpp"; the dispatcher picks the kernel of
    x_seq's device). ``save_x``: the backward recomputes H from x_seq and v_init (no H written).
    Returns (spikes [T, *] in x dtype, v fp32 [T, *] or [*])."""
    reason = _ext.unavailable_reason(name, x_seq, "lif")
    if reason is not None:
        raise RuntimeError(f"lif_multistep: backend={name!r} cannot run: {reason}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_seq, v_init, decay)
    )
    spikes, v, _ = torch.ops.tks.lif_forward(
        x_seq, v_init, decay, cfg.leak, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.reset_value,
        cfg.soft_reset, cfg.detach_reset, cfg.surrogate_id, cfg.alpha, cfg.store_v_seq, needs_grad and not save_x,
        cfg.max_spike_count, cfg.grad_min, cfg.grad_max, cfg.count_lif_charge, needs_grad and save_x,
    )
    return spikes, v


# Registered from this module: the C++ schemas name it as the home of their fake implementations
# (m.set_python_module in csrc/lif/lif_ops.cpp), and torch checks where register_fake is called.
torch.library.register_fake("tks::lif_forward")(lif_forward_fake)
torch.library.register_fake("tks::lif_backward")(lif_backward_fake)
register_lif_autograd("tks::lif_forward", torch.ops.tks.lif_backward, "tks::lif_backward", extension_backend)
