"""The compiled LIF kernels (csrc/lif/) as torch ops, the ``cuda`` and ``cpp`` backends.

The C++ extension defines ``torch.ops.tks.lif_forward`` and ``torch.ops.tks.lif_backward``
(schemas in csrc/lif/lif_ops.cpp, kernels for CPU and CUDA tensors). This module, imported by
``tks_kernels._ext`` once the extension has loaded, registers what the ops need in Python: fake
(meta) implementations, so ``torch.compile(fullgraph=True)`` traces them, and the autograd
formula of ``lif_forward`` (its backward is ``lif_backward``). Same saved tensors as the Triton
backend: ``h`` fp32 [T, *], plus ``x_seq`` and ``v_init`` only for a learnable leak.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _ext
from .config import LEAK_MUL, LIFConfig


def lif_extension_forward(
    name: str, x_seq: torch.Tensor, v_init: Optional[torch.Tensor], decay: Optional[torch.Tensor], cfg: LIFConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``tks::lif_forward`` (backend ``name``: "cuda" or "cpp"; the dispatcher picks the kernel of
    x_seq's device). Returns (spikes [T, *] in x dtype, v fp32 [T, *] or [*])."""
    reason = _ext.unavailable_reason(name, x_seq, "lif")
    if reason is not None:
        raise RuntimeError(f"lif_multistep: backend={name!r} cannot run: {reason}")
    save_h = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_seq, v_init, decay)
    )
    spikes, v, _ = torch.ops.tks.lif_forward(
        x_seq, v_init, decay, cfg.leak, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.reset_value,
        cfg.soft_reset, cfg.detach_reset, cfg.surrogate_id, cfg.alpha, cfg.store_v_seq, save_h,
    )
    return spikes, v


# ---------------------------------------------------------------- fake implementations

def _check_devices(op: str, first: str, tensors: dict) -> None:
    # the kernels' TORCH_CHECK, for the fake (and meta) tensors that never reach them
    device = tensors[first].device
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise RuntimeError(f"{op}: {name} is on {t.device} but {first} is on {device}; put every tensor on one device")


def _lif_forward_fake(x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset,
                      surrogate, alpha, store_v_seq, save_h):
    _check_devices("tks::lif_forward", "x_seq", {"x_seq": x_seq, "v_init": v_init, "decay": decay})
    spikes = x_seq.new_empty(x_seq.shape)
    v = x_seq.new_empty(x_seq.shape if store_v_seq else x_seq.shape[1:], dtype=torch.float32)
    h = x_seq.new_empty(x_seq.shape if save_h else (0,), dtype=torch.float32)
    return spikes, v, h


def _lif_backward_fake(grad_spikes, grad_v, h, x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset,
                       soft_reset, detach_reset, surrogate, alpha, store_v_seq, x_dtype, need_grad_decay):
    _check_devices("tks::lif_backward", "h", {"h": h, "grad_spikes": grad_spikes, "grad_v": grad_v, "x_seq": x_seq,
                                              "v_init": v_init, "decay": decay})
    return h.new_empty(h.shape, dtype=x_dtype), h.new_empty(h.shape[1:]), h.new_empty(())


# ---------------------------------------------------------------- autograd

def _setup_context(ctx, inputs, output):
    (x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
     store_v_seq, save_h) = inputs
    h = output[2]
    need_grad_decay = leak == LEAK_MUL and ctx.needs_input_grad[2]
    # x_seq and v_init are referenced (not copied), and only for the learnable leak's gradient
    ctx.save_for_backward(
        h, x_seq if need_grad_decay and decay_input else None, v_init if need_grad_decay else None, decay
    )
    ctx.options = (leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
                   store_v_seq)
    ctx.x_dtype, ctx.need_grad_decay = x_seq.dtype, need_grad_decay
    ctx.mark_non_differentiable(h)
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not a zero tensor


def _lif_forward_backward(ctx, grad_spikes, grad_v, _grad_h):
    h, x_seq, v_init, decay = ctx.saved_tensors
    if h.dim() == 1 and h.shape[0] == 0:
        raise RuntimeError("tks::lif_forward was called with save_h=False, so it cannot be differentiated")
    grad_x, grad_v_init, grad_decay = torch.ops.tks.lif_backward(
        grad_spikes, grad_v, h, x_seq, v_init, decay, *ctx.options, ctx.x_dtype, ctx.need_grad_decay
    )
    return (
        grad_x if ctx.needs_input_grad[0] else None,
        grad_v_init if ctx.needs_input_grad[1] else None,
        grad_decay if ctx.need_grad_decay else None,
    ) + (None,) * 11


torch.library.register_fake("tks::lif_forward")(_lif_forward_fake)
torch.library.register_fake("tks::lif_backward")(_lif_backward_fake)
torch.library.register_autograd("tks::lif_forward", _lif_forward_backward, setup_context=_setup_context)
