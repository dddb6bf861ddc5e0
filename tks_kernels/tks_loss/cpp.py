"""The C++ CPU kernels of the TKS loss (csrc/tks_loss/tks_loss_cpu.cpp), as the torch custom ops
``torch.ops.tks.tks_loss_forward`` / ``tks_loss_backward`` in ``tks_kernels._C``.

This module registers their fake implementations (torch.compile traces them) and autograd
formula when it is imported, which ``tks_kernels._ext`` does right after ``tks_kernels._C``
loads (it is in ``_ext._PY_REGISTRATIONS``, and the schemas name it with ``m.set_python_module``).
That load runs in ``_ext``'s cached availability check, which torch.compile calls as plain Python
(``assume_constant_result``), so nothing is registered inside traced code: a
``torch.compile(fullgraph=True)`` call can be the first tks_loss call of the process.
"""
from __future__ import annotations

import torch

from .. import _ext
from .._backends import double_backward_error, refuse_create_graph
from .config import TKSLossConfig


# Imported on its own (not through _ext), the schemas must exist first: load the extension, or
# raise why it cannot load (_ext imports this module again on the way: it finds it in sys.modules).
_ext.load("cpp")


@torch.library.register_fake("tks::tks_loss_forward")
def _forward_fake(logits, target, lam, temperature, teacher_mean, detach_teacher):
    T, B, _ = logits.shape
    f32 = dict(dtype=torch.float32, device=logits.device)
    per_sample = [logits.new_empty((B,), **f32) for _ in range(3)]
    per_step = [logits.new_empty((B, T), **f32) for _ in range(3)]
    return (*per_sample, *per_step, logits.new_empty((B, 8), **f32))


@torch.library.register_fake("tks::tks_loss_backward")
def _backward_fake(logits, target, row_max, row_logsum, mask, stats, grad_loss, grad_ce, grad_kd,
                   lam, temperature, detach_teacher):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, target, lam, temperature, _teacher_mean, detach_teacher = inputs
    _, _, _, row_max, row_logsum, mask, stats = output
    ctx.save_for_backward(logits, target, row_max, row_logsum, mask, stats)
    ctx.lam, ctx.temperature, ctx.detach_teacher = lam, temperature, detach_teacher
    # unused outputs' gradients stay None (the op takes them as optional) instead of six
    # tensors of zeros per call
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_loss, grad_ce, grad_kd, *_grads_of_saved_stats):
    refuse_create_graph("tks_loss", "cpp")
    if grad_loss is None and grad_ce is None and grad_kd is None:
        return None, None, None, None, None, None
    logits, target, row_max, row_logsum, mask, stats = ctx.saved_tensors
    grad_logits = torch.ops.tks.tks_loss_backward(
        logits, target, row_max, row_logsum, mask, stats, grad_loss, grad_ce, grad_kd,
        ctx.lam, ctx.temperature, ctx.detach_teacher,
    )
    return grad_logits, None, None, None, None, None


torch.library.register_autograd("tks::tks_loss_forward", _backward, setup_context=_setup_context)


def _double_backward(ctx, grad_grad_logits):
    raise double_backward_error("tks_loss", "cpp")


# The backward op called directly with inputs that require grad: its gradient raises too, never
# silently dropping the second-order terms.
torch.library.register_autograd("tks::tks_loss_backward", _double_backward)


def tks_loss_cpp_per_sample(logits: torch.Tensor, target: torch.Tensor, cfg: TKSLossConfig):
    """Per-sample ``(loss_b, ce_b, kd_b, n_selected_b)`` from the C++ kernels (the caller has
    checked that they can run: ``tks_kernels._ext.unavailable_reason``)."""
    loss_b, ce_b, kd_b, _, _, _, stats = torch.ops.tks.tks_loss_forward(
        logits, target, cfg.lam, cfg.temperature, cfg.teacher_mean, cfg.detach_teacher
    )
    return loss_b, ce_b, kd_b, stats[:, 6].detach()
