"""The C++ CPU kernels of the distillation loss (csrc/kd_loss/kd_loss_cpu.cpp), as the torch custom
ops ``torch.ops.tks.kd_loss_forward`` / ``kd_loss_backward`` in ``tks_kernels._C``.

This module registers their fake implementations (torch.compile traces them) and autograd
formula when it is imported, which ``tks_kernels._ext`` does right after ``tks_kernels._C``
loads (``_ext._PY_REGISTRATIONS``; the schemas name it with ``m.set_python_module``), outside any
code that torch.compile traces, as for the TKS loss (tks_loss/cpp.py).
"""
from __future__ import annotations

import torch

from .. import _ext
from .._backends import double_backward_error, refuse_create_graph
from .config import KDLossConfig

N_STATS = 8  # per-sample statistics after a and v in the saved [B, 2C + 8] buffer


# Imported on its own (not through _ext), the schemas must exist first: load the extension, or
# raise why it cannot load (_ext imports this module again on the way: it finds it in sys.modules).
_ext.load("cpp")


@torch.library.register_fake("tks::kd_loss_forward")
def _forward_fake(student, teacher, temperature):
    _, B, C = student.shape
    f32 = dict(dtype=torch.float32, device=student.device)
    return student.new_empty((B,), **f32), student.new_empty((B, 2 * C + N_STATS), **f32)


@torch.library.register_fake("tks::kd_loss_backward")
def _backward_fake(saved, grad_loss, student_steps, teacher_steps, temperature, student_grad, teacher_grad,
                   student_dtype, teacher_dtype):
    B, row = saved.shape
    C = (row - N_STATS) // 2
    grad_s = saved.new_empty((student_steps, B, C) if student_grad else (0,), dtype=student_dtype if student_grad
                             else torch.float32)
    grad_t = saved.new_empty((teacher_steps, B, C) if teacher_grad else (0,), dtype=teacher_dtype if teacher_grad
                             else torch.float32)
    return grad_s, grad_t


def _setup_context(ctx, inputs, output):
    student, teacher, temperature = inputs
    ctx.save_for_backward(output[1])
    ctx.steps = (student.shape[0], teacher.shape[0])
    ctx.dtypes = (student.dtype, teacher.dtype)
    ctx.temperature = temperature
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_loss, _grad_saved):
    refuse_create_graph("kd_loss", "cpp")
    if grad_loss is None:
        return None, None, None
    (saved,) = ctx.saved_tensors
    need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_s, grad_t = torch.ops.tks.kd_loss_backward(
        saved, grad_loss, *ctx.steps, ctx.temperature, need_s, need_t, *ctx.dtypes)
    return (grad_s if need_s else None), (grad_t if need_t else None), None


torch.library.register_autograd("tks::kd_loss_forward", _backward, setup_context=_setup_context)


def _double_backward(ctx, *grads):
    raise double_backward_error("kd_loss", "cpp")


# The backward op called directly with inputs that require grad: its gradient raises too.
torch.library.register_autograd("tks::kd_loss_backward", _double_backward)


class KDLossCppFunction(torch.autograd.Function):
    """Eager autograd over the two C++ ops, the loss reduced inside: the same kernels and formula
    as the ops' own registration above (which torch.compile uses), with less host work per call
    (no torch.library autograd wrapper, no separate reduction node: ~100 us of a ~300 us fwd+bwd
    at B=64, C=10 on the dev VM)."""

    @staticmethod
    def forward(ctx, student, teacher, cfg: KDLossConfig):
        with torch._C._AutoDispatchBelowAutograd():  # this Function is the autograd formula
            loss_b, saved = torch.ops.tks.kd_loss_forward.default(student, teacher, cfg.temperature)
        ctx.save_for_backward(saved)
        ctx.meta = (student.shape[0], teacher.shape[0], cfg.temperature, student.dtype, teacher.dtype)
        ctx.reduction = cfg.reduction
        if cfg.reduction == "none":
            return loss_b
        return loss_b.mean() if cfg.reduction == "mean" else loss_b.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        refuse_create_graph("kd_loss", "cpp")
        (saved,) = ctx.saved_tensors
        B = saved.shape[0]
        if ctx.reduction != "none":  # one upstream value for every sample ([B], stride 0)
            grad_loss = (grad_loss / B if ctx.reduction == "mean" else grad_loss).expand(B)
        steps_s, steps_t, tau, dtype_s, dtype_t = ctx.meta
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch._C._AutoDispatchBelowAutograd():
            grad_s, grad_t = torch.ops.tks.kd_loss_backward.default(
                saved, grad_loss, steps_s, steps_t, tau, need_s, need_t, dtype_s, dtype_t)
        return (grad_s if need_s else None), (grad_t if need_t else None), None


def kd_loss_cpp(student: torch.Tensor, teacher: torch.Tensor, cfg: KDLossConfig) -> torch.Tensor:
    """The loss (reduced as ``cfg.reduction``) from the C++ kernels on checked ``[T, B, C]`` inputs
    (the teacher already detached when ``cfg.detach_teacher``; the caller has checked that the
    kernels can run): through ``KDLossCppFunction`` eagerly, the registered ops under torch.compile."""
    if not torch.compiler.is_compiling():
        return KDLossCppFunction.apply(student, teacher, cfg)
    loss_b, _ = torch.ops.tks.kd_loss_forward(student, teacher, cfg.temperature)
    if cfg.reduction == "none":
        return loss_b
    return loss_b.mean() if cfg.reduction == "mean" else loss_b.sum()
