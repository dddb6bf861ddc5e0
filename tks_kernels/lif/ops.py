"""What the LIF torch ops need in Python, for every op with their schemas: the C++ extension's
``tks::lif_forward`` / ``lif_backward`` (lif/extension.py) and the Triton ones
``tks_triton::lif_forward`` / ``lif_backward`` (lif/triton.py, for torch.compile). Fake (meta)
implementations, so ``torch.compile(fullgraph=True)`` traces them, and the autograd formula of
the forward (its backward is the backward op). Saved: ``h`` fp32 [T, *], plus ``x_seq`` and
``v_init`` only for a learnable leak.
"""
from __future__ import annotations

import torch

from .config import LEAK_MUL


# ---------------------------------------------------------------- fake implementations

def _check_devices(op: str, first: str, tensors: dict) -> None:
    # the kernels' TORCH_CHECK, for the fake (and meta) tensors that never reach them
    device = tensors[first].device
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise RuntimeError(f"{op}: {name} is on {t.device} but {first} is on {device}; put every tensor on one device")


def lif_forward_fake(x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset,
                     surrogate, alpha, store_v_seq, save_h):
    _check_devices("lif_forward", "x_seq", {"x_seq": x_seq, "v_init": v_init, "decay": decay})
    spikes = x_seq.new_empty(x_seq.shape)
    v = x_seq.new_empty(x_seq.shape if store_v_seq else x_seq.shape[1:], dtype=torch.float32)
    h = x_seq.new_empty(x_seq.shape if save_h else (0,), dtype=torch.float32)
    return spikes, v, h


def lif_backward_fake(grad_spikes, grad_v, h, x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset,
                      soft_reset, detach_reset, surrogate, alpha, store_v_seq, x_dtype, need_grad_decay):
    _check_devices("lif_backward", "h", {"h": h, "grad_spikes": grad_spikes, "grad_v": grad_v, "x_seq": x_seq,
                                         "v_init": v_init, "decay": decay})
    return h.new_empty(h.shape, dtype=x_dtype), h.new_empty(h.shape[1:]), h.new_empty(())


# ---------------------------------------------------------------- autograd

def lif_setup_context(ctx, inputs, output):
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


def make_lif_forward_backward(backward_op, forward_name: str):
    """The autograd formula of a ``lif_forward`` op whose backward is ``backward_op`` (same
    schemas as tks::lif_forward / lif_backward; the Triton ops of lif/triton.py share them)."""

    def backward(ctx, grad_spikes, grad_v, _grad_h):
        h, x_seq, v_init, decay = ctx.saved_tensors
        if h.dim() == 1 and h.shape[0] == 0:
            raise RuntimeError(f"{forward_name} was called with save_h=False, so it cannot be differentiated")
        grad_x, grad_v_init, grad_decay = backward_op(
            grad_spikes, grad_v, h, x_seq, v_init, decay, *ctx.options, ctx.x_dtype, ctx.need_grad_decay
        )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_v_init if ctx.needs_input_grad[1] else None,
            grad_decay if ctx.need_grad_decay else None,
        ) + (None,) * 11

    return backward


def register_lif_autograd(forward_name: str, backward_op) -> None:
    """The forward op's autograd formula (the fake implementations are registered by the module
    that defines the ops: torch checks where that call is made)."""
    torch.library.register_autograd(forward_name, make_lif_forward_backward(backward_op, forward_name),
                                    setup_context=lif_setup_context)
