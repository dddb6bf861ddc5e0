"""What the LIF torch ops need in Python, for every op with their schemas: the C++ extension's
``tks::lif_forward`` / ``lif_backward`` (lif/extension.py) and the Triton ones
``tks_triton::lif_forward`` / ``lif_backward`` (lif/triton.py, for torch.compile). Fake (meta)
implementations with the kernels' output strides (lif/layout.py), so ``torch.compile(fullgraph=True)``
traces them, and the autograd formula of the forward (its backward is the backward op, which
refuses to be differentiated). Saved: ``h`` fp32 [T, *], plus ``x_seq`` and ``v_init`` only for
a learnable leak; or, with ``save_x`` (``lif_multistep(save="x")``), no ``h``: references to
``x_seq`` and ``v_init``, from which the backward (``recompute=True``) re-runs the charge. The same
ops serve binary spikes and integer counts (``max_spike_count`` > 0).
"""
from __future__ import annotations

import torch

from . import layout
from .config import LEAK_MUL


# ---------------------------------------------------------------- fake implementations

def _check_devices(op: str, first: str, tensors: dict) -> None:
    # the kernels' TORCH_CHECK, for the fake (and meta) tensors that never reach them
    device = tensors[first].device
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise RuntimeError(f"{op}: {name} is on {t.device} but {first} is on {device}; put every tensor on one device")


def lif_forward_fake(x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset,
                     surrogate, alpha, store_v_seq, save_h, max_spike_count=0, grad_min=0.0, grad_max=0.0,
                     count_lif_charge=False, save_x=False):
    _check_devices("lif_forward", "x_seq", {"x_seq": x_seq, "v_init": v_init, "decay": decay})
    # the kernels' output layout (lif/layout.py): x's step strides when its steps are dense blocks
    step = layout.step_strides(x_seq)
    seq = layout.seq_strides(x_seq.shape, step)
    spikes = layout.empty(x_seq, x_seq.shape, seq, x_seq.dtype)
    if store_v_seq:
        v = layout.empty(x_seq, x_seq.shape, seq, torch.float32)
    else:
        v = layout.empty(x_seq, x_seq.shape[1:], step, torch.float32)
    h = layout.empty(x_seq, x_seq.shape, seq, torch.float32) if save_h else x_seq.new_empty((0,), dtype=torch.float32)
    return spikes, v, h


def lif_backward_fake(grad_spikes, grad_v, h, x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset,
                      soft_reset, detach_reset, surrogate, alpha, store_v_seq, x_dtype, need_grad_decay,
                      max_spike_count=0, grad_min=0.0, grad_max=0.0, count_lif_charge=False, recompute=False):
    _check_devices("lif_backward", "h", {"h": h, "grad_spikes": grad_spikes, "grad_v": grad_v, "x_seq": x_seq,
                                         "v_init": v_init, "decay": decay})
    if recompute:  # no h: the layout is the forward's, from x_seq
        if x_seq is None:
            raise RuntimeError("lif_backward: recompute=True needs x_seq")
        like, step = x_seq, layout.step_strides(x_seq)
    else:
        like, step = h, layout.saved_step_strides(h)
    grad_x = layout.empty(like, like.shape, layout.seq_strides(like.shape, step), x_dtype)
    return grad_x, layout.empty(like, like.shape[1:], step, torch.float32), like.new_empty((), dtype=torch.float32)


# ---------------------------------------------------------------- autograd

def lif_setup_context(ctx, inputs, output):
    (x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
     store_v_seq, save_h, max_spike_count, grad_min, grad_max, count_lif_charge, save_x) = inputs
    h = output[2]
    need_grad_decay = leak == LEAK_MUL and ctx.needs_input_grad[2]
    # x_seq and v_init are referenced (not copied): with save_x always (the backward recomputes H
    # from them; h is then the empty [0]), else only for the learnable leak's gradient
    ctx.recompute = bool(save_x)
    ctx.save_for_backward(
        h,
        x_seq if save_x or (need_grad_decay and decay_input) else None,
        v_init if save_x or need_grad_decay else None,
        decay,
    )
    ctx.options = (leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha,
                   store_v_seq)
    ctx.count_options = (max_spike_count, grad_min, grad_max, count_lif_charge)
    ctx.x_dtype, ctx.need_grad_decay = x_seq.dtype, need_grad_decay
    ctx.mark_non_differentiable(h)
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not a zero tensor


def refuse_double_backward(backend: str) -> None:
    """The fused backward is not itself differentiable: with ``create_graph=True`` its result
    would carry a graph that gives a zero second derivative. Refuse, before any kernel runs."""
    raise RuntimeError(
        f"lif_multistep(backend={backend!r}) does not support double backward (create_graph=True); "
        "use backend='torch'"
    )


def extension_backend(t: torch.Tensor) -> str:
    """The backend name of the compiled ops (tks::lif_*) for a tensor on their device."""
    return "cuda" if t.device.type == "cuda" else "cpp"


def make_lif_forward_backward(backward_op, forward_name: str, backend_of):
    """The autograd formula of a ``lif_forward`` op whose backward is ``backward_op`` (same
    schemas as tks::lif_forward / lif_backward; the Triton ops of lif/triton.py share them).
    ``backend_of(h)`` names the backend in the double-backward error."""

    def backward(ctx, grad_spikes, grad_v, _grad_h):
        h, x_seq, v_init, decay = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the backward would have to be differentiable
            refuse_double_backward(backend_of(h))
        if not ctx.recompute and h.dim() == 1 and h.shape[0] == 0:
            raise RuntimeError(
                f"{forward_name} was called with save_h=False and save_x=False, so it cannot be differentiated"
            )
        grad_x, grad_v_init, grad_decay = backward_op(
            grad_spikes, grad_v, h, x_seq, v_init, decay, *ctx.options, ctx.x_dtype, ctx.need_grad_decay,
            *ctx.count_options, ctx.recompute,
        )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            grad_v_init if ctx.needs_input_grad[1] else None,
            grad_decay if ctx.need_grad_decay else None,
        ) + (None,) * 16

    return backward


def register_lif_autograd(forward_name: str, backward_op, backward_name: str, backend_of) -> None:
    """The forward op's autograd formula, and the backward op's refusal to be differentiated (the
    fake implementations are registered by the module that defines the ops: torch checks where
    that call is made).

    The backward op itself is not differentiable. Without an autograd kernel torch would only warn
    and treat it as a constant (a zero second derivative), so calling it in grad mode with any
    input that requires grad (differentiating through the op itself, as a backward graph traced
    with it would) raises at once. (torch.compile refuses a double backward of its compiled
    graphs itself.)"""
    torch.library.register_autograd(forward_name, make_lif_forward_backward(backward_op, forward_name, backend_of),
                                    setup_context=lif_setup_context)

    def backward_setup_context(ctx, inputs, output):
        refuse_double_backward(backend_of(inputs[2]))

    def backward_backward(ctx, *grads):  # never reached: backward_setup_context raises first
        refuse_double_backward("?")

    torch.library.register_autograd(backward_name, backward_backward, setup_context=backward_setup_context)
