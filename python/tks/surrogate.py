"""A surrogate-gradient object of our own, for when spikingjelly is not installed.

``Surrogate(name, alpha)`` behaves like spikingjelly's surrogate objects where the neurons use
them: a module with a mutable ``alpha`` (read at every call, so annealing code such as
``node.surrogate_function.alpha = 6.0`` works), called on ``x = H - v_threshold`` to give the
Heaviside spike whose backward is the surrogate's derivative.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from tks_kernels._checks import check_real
from tks_kernels.lif.surrogate import SURROGATES, default_alpha, spike

__all__ = ["Surrogate", "MultiLevelSpikeCount"]


class Surrogate(nn.Module):
    """The surrogate ``name`` (one of ``tks_kernels.SURROGATES``) with sharpness ``alpha``
    (None: spikingjelly 2.0.0's default for it). ``surrogate(x)``: spikes ``(x >= 0)`` in x's dtype,
    backward ``grad * g'(x)``.

    Example::

        >>> node = tks.LIFNode(surrogate_function=tks.surrogate.Surrogate("atan", 2.0))
        >>> node.surrogate_function.alpha = 4.0      # used from the next call on
    """

    spiking = True  # spikingjelly's flag: the forward returns spikes

    def __init__(self, name: str = "sigmoid", alpha: Optional[float] = None):
        super().__init__()
        if not isinstance(name, str) or name not in SURROGATES:
            raise ValueError(f"surrogate name={name!r} is unknown; choose one of {', '.join(SURROGATES)}")
        self.name = name
        self.alpha = default_alpha(name) if alpha is None else alpha

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        value = check_real("alpha", value)
        if not value > 0:
            raise ValueError(f"alpha must be > 0, got {value}")
        self._alpha = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spike(x, self.name, self.alpha)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, alpha={self.alpha}, spiking=True"


class MultiLevelSpikeCount(nn.Module):
    """Integer spike counts ``round(clamp(x, 0, max_spike_count))`` with a rectangular straight-through
    gradient in ``[grad_min, grad_max]`` (default ``[0, max_spike_count]``): spikingjelly 2.0.0's
    ``surrogate.MultiLevelSpikeCount``, with the same mutable attributes, for when spikingjelly is
    not installed. The I-LIF neurons read ``max_spike_count`` and the window from it at every call.
    """

    spiking = True

    def __init__(self, max_spike_count: int, spiking: bool = True, grad_window=None):
        super().__init__()
        from tks_kernels._checks import check_int

        if not spiking:
            raise ValueError("tks.surrogate.MultiLevelSpikeCount has no spiking=False mode; use spikingjelly's")
        self.max_spike_count = check_int("max_spike_count", max_spike_count)
        if self.max_spike_count < 1:
            raise ValueError(f"max_spike_count must be >= 1, got {self.max_spike_count}")
        lo, hi = (0.0, float(self.max_spike_count)) if grad_window is None else grad_window
        self.grad_min, self.grad_max = check_real("grad_min", lo), check_real("grad_max", hi)
        if self.grad_min > self.grad_max:
            raise ValueError(f"grad_window must satisfy grad_min <= grad_max, got {grad_window}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hard = x.clamp(0, self.max_spike_count).round()
        window = ((x >= self.grad_min) & (x <= self.grad_max)).to(x.dtype)
        return hard + window * (x - x.detach())  # straight through inside the window

    def extra_repr(self) -> str:
        return f"max_spike_count={self.max_spike_count}, grad_min={self.grad_min}, grad_max={self.grad_max}, spiking=True"
