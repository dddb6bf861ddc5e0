"""Which backend can run where, and why not: explicit choices never fall back silently."""
from __future__ import annotations

import importlib
import os

import torch

INSTALL_HINT = "pip install --no-build-isolation -e ."


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(x: torch.Tensor, arg: str = "x_seq") -> str | None:
    """None when the Triton kernels can run on ``x``, else why not and how to fix it."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; it comes with CUDA builds of torch on Linux)"
    if x.device.type == "cuda":
        return None
    if x.device.type == "cpu":
        if triton_interpreter_enabled():
            return None
        return (
            f"{arg} is a CPU tensor and the Triton interpreter is off; move the tensors to CUDA, or set "
            "TRITON_INTERPRET=1 in the environment before importing tks_kernels (slow: for tests only)"
        )
    return f"Triton kernels run on CUDA tensors, got a tensor on {x.device}"


def resolve_backend(backend: str, x: torch.Tensor, op: str, extension_reason, arg: str = "x_seq") -> str:
    """Map ``backend`` to a concrete one for tensor ``x``.

    ``extension_reason(kind, x)`` returns None when the compiled ``kind`` ("cuda" or "cpp") can
    run on ``x``, else the reason. "auto" takes the fastest that can run: CUDA tensors ->
    cuda, triton, torch; CPU tensors -> cpp, torch.
    """
    if backend == "torch":
        return "torch"
    if backend == "triton":
        reason = triton_unavailable_reason(x, arg)
        if reason:
            raise RuntimeError(f"{op}: backend='triton' cannot run: {reason}")
        return "triton"
    if backend in ("cuda", "cpp"):
        reason = extension_reason(backend, x)
        if reason:
            raise RuntimeError(f"{op}: backend={backend!r} cannot run: {reason}")
        return backend
    # auto
    if x.device.type == "cuda":
        if extension_reason("cuda", x) is None:
            return "cuda"
        if triton_unavailable_reason(x) is None:
            return "triton"
        return "torch"
    if x.device.type == "cpu" and extension_reason("cpp", x) is None:
        return "cpp"
    return "torch"


def double_backward_error(op: str, backend: str) -> RuntimeError:
    """The error of a fused backend's backward asked for a graph of itself (higher-order gradients)."""
    return RuntimeError(
        f"{op}(backend={backend!r}) does not support double backward (torch.autograd.grad(..., create_graph=True) "
        f"through it, e.g. a gradient penalty or a Hessian-vector product): its backward is a fused kernel that is "
        f"not itself differentiable, so second-order terms would be silently missing; use backend='torch' (the "
        f"eager reference, differentiable to any order) for that computation"
    )


def refuse_create_graph(op: str, backend: str) -> None:
    """Called first in a fused backend's backward: with create_graph=True (the autograd engine runs
    the backward with grad mode on) raise now, naming the op, the backend and the fix, rather than
    return a first-order gradient whose own gradient would be zero or fail later with a generic
    message. A plain backward runs with grad mode off, so this costs one flag read."""
    if torch.is_grad_enabled():
        raise double_backward_error(op, backend)
