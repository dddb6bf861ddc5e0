"""Surrogate gradients of the Heaviside spike, exactly as spikingjelly 2.0.0 defines them.

Each surrogate is a name, a default sharpness ``alpha`` and the derivative ``g'(x)`` used in the
backward pass at ``x = H - V_th``. The forward is always ``Θ(x) = (x >= 0)``.
"""
from __future__ import annotations

import math

import torch

# name -> (kernel id, spikingjelly 2.0.0 default alpha). The ids are compile-time constants
# of the Triton, CUDA and C++ kernels: keep them in sync with csrc/lif/surrogate.h.
SURROGATES: dict[str, tuple[int, float]] = {
    "sigmoid": (0, 4.0),
    "atan": (1, 2.0),
    "piecewise_quadratic": (2, 1.0),
    "erf": (3, 2.0),
    "piecewise_exp": (4, 1.0),
    "soft_sign": (5, 2.0),
    "super_spike": (6, 1.0),
    "rect": (7, 1.0),
}


def surrogate_id(name: str) -> int:
    return SURROGATES[name][0]


def default_alpha(name: str) -> float:
    return SURROGATES[name][1]


def surrogate_grad(x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
    """``g'(x)`` of surrogate ``name`` with sharpness ``alpha``, elementwise, in x's dtype."""
    if name == "sigmoid":
        s = torch.sigmoid(x * alpha)
        return (1.0 - s) * s * alpha
    if name == "atan":
        a = alpha / 2
        ax = math.pi * a * x
        return a / (1 + ax * ax)
    if name == "piecewise_quadratic":
        x_abs = x.abs()
        return (-(alpha**2) * x_abs + alpha).masked_fill(x_abs > (1 / alpha), 0.0)
    if name == "erf":
        return torch.exp(-(x * alpha).pow(2)) * (alpha / math.sqrt(math.pi))
    if name == "piecewise_exp":
        return alpha / 2 * torch.exp(-alpha * x.abs())
    if name == "soft_sign":
        return 1.0 / (2 * alpha * (1 / alpha + x.abs()).pow(2))
    if name == "super_spike":
        return alpha / (x.abs() + 1.0).pow(2)
    if name == "rect":
        return (x.abs() < 0.5 / alpha).to(x.dtype) * alpha
    raise ValueError(f"surrogate={name!r} is unknown; choose one of {sorted(SURROGATES)}")


class _HeavisideSurrogate(torch.autograd.Function):
    """Θ(x) forward, ``grad * g'(x)`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * surrogate_grad(x, ctx.name, ctx.alpha), None, None


def spike(x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
    """Heaviside spike of ``x`` whose backward is surrogate ``name``'s derivative."""
    return _HeavisideSurrogate.apply(x, name, alpha)
