"""The C++ CPU kernels of the TKS loss (csrc/tks_loss/tks_loss_cpu.cpp), as the torch custom ops
``torch.ops.tks.tks_loss_forward`` / ``tks_loss_backward`` in ``tks_kernels._C``, with a fake
implementation (torch.compile traces them) and an autograd formula registered here."""
from __future__ import annotations

from typing import Optional

import torch

from .. import _ext
from .config import TKSLossConfig

_registered = False


def _load() -> Optional[str]:
    """Load ``tks_kernels._C`` (through ``tks_kernels._ext``) and register the Python parts of the
    ops once; None when ready, else why not."""
    global _registered
    if _registered:
        return None
    reason = _ext.unavailable_reason("cpp", torch.empty(0), "tks_loss", arg="logits")
    if reason is not None:
        return reason
    _register_python_parts()
    _registered = True
    return None


def cpp_unavailable_reason(x: torch.Tensor) -> Optional[str]:
    """None when the C++ kernels can run on ``x``, else why not and how to fix it."""
    if x.device.type != "cpu":
        return f"the C++ kernels run on CPU tensors, got logits on {x.device} (use backend='triton' on CUDA)"
    return _load()


def _register_python_parts() -> None:
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

    def setup_context(ctx, inputs, output):
        logits, target, lam, temperature, _teacher_mean, detach_teacher = inputs
        _, _, _, row_max, row_logsum, mask, stats = output
        ctx.save_for_backward(logits, target, row_max, row_logsum, mask, stats)
        ctx.lam, ctx.temperature, ctx.detach_teacher = lam, temperature, detach_teacher
        # unused outputs' gradients stay None (the op takes them as optional) instead of six
        # tensors of zeros per call
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_loss, grad_ce, grad_kd, *_grads_of_saved_stats):
        if grad_loss is None and grad_ce is None and grad_kd is None:
            return None, None, None, None, None, None
        logits, target, row_max, row_logsum, mask, stats = ctx.saved_tensors
        grad_logits = torch.ops.tks.tks_loss_backward(
            logits, target, row_max, row_logsum, mask, stats, grad_loss, grad_ce, grad_kd,
            ctx.lam, ctx.temperature, ctx.detach_teacher,
        )
        return grad_logits, None, None, None, None, None

    torch.library.register_autograd("tks::tks_loss_forward", backward, setup_context=setup_context)

    def double_backward(ctx, grad_grad_logits):
        raise RuntimeError(
            "tks_loss: the cpp backend has no double backward (create_graph=True); use backend='torch'"
        )

    # explicit, so a double backward raises instead of silently dropping the second-order terms
    torch.library.register_autograd("tks::tks_loss_backward", double_backward)


def tks_loss_cpp_per_sample(logits: torch.Tensor, target: torch.Tensor, cfg: TKSLossConfig):
    """Per-sample ``(loss_b, ce_b, kd_b, n_selected_b)`` from the C++ kernels (see ``_load``)."""
    reason = _load()
    if reason:
        raise RuntimeError(f"tks_loss: backend='cpp' cannot run: {reason}")
    loss_b, ce_b, kd_b, _, _, _, stats = torch.ops.tks.tks_loss_forward(
        logits, target, cfg.lam, cfg.temperature, cfg.teacher_mean, cfg.detach_teacher
    )
    return loss_b, ce_b, kd_b, stats[:, 6].detach()
