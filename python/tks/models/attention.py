"""Lightweight channel attention, and the attention neuron built on it (MRA-SNN, issue 15).

``ChannelAttention`` is ECA-style (Wang et al., ECA-Net, 2020): global average pool over every axis
after the channels, a 1-D convolution of odd size ``k`` across the channels (no bias, zero
padding), sigmoid, and the input rescaled channel by channel::

    a = sigmoid(conv1d_k(mean_spatial(x)))      # [N, C]
    y = a[:, :, None, ...] * x                  # [N, C, *spatial]

``AttentionLIF`` is the attention neuron ("dendritic filtering"): the neuron's input current is
rescaled by a channel attention computed from that current, ``I' = a(I) * I``, at every step
(from that step's current), and ``I'`` drives the fused ``tks_kernels.lif_multistep``. With the
attention fixed to 1 it is exactly ``MultiStepLIF``. Both work on any layout with the channels at
dim 1 of a sample (signals ``[C, L]``, images ``[C, H, W]``, features ``[C]``), so any model can use them.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .layers import MultiStepLIF, NeuronConfig


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest above ``|log2(C) + b| / gamma``
    (1 below 8 channels, 3 for 8..127, 5 for 128..2047)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ChannelAttention(nn.Module):
    """ECA channel attention: ``x [N, C, *spatial] -> a(x) * x``, ``a = sigmoid(conv1d_k(mean_spatial(x)))``.

    ``kernel_size``: odd, the channels each weight sees (default ``eca_kernel_size(channels)``).
    ``gate(x)`` returns ``a [N, C]``. One ``Conv1d(1, 1, k)`` of ``k`` weights: the parameter cost is
    ``k``, whatever the channel count.

    Example::

        >>> att = ChannelAttention(48)
        >>> att(torch.randn(8, 48, 256)).shape
        torch.Size([8, 48, 256])
    """

    def __init__(self, channels: int, kernel_size: Optional[int] = None):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels={channels!r} must be an integer >= 1")
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r} must be an odd integer >= 1 (the output keeps C channels)")
        self.channels = channels
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention ``a [N, C]`` in (0, 1) of ``x [N, C, *spatial]``."""
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"ChannelAttention({self.channels}) takes [N, {self.channels}, *spatial], "
                             f"got shape {tuple(x.shape)}")
        pooled = x.flatten(2).mean(2) if x.dim() > 2 else x  # [N, C]
        return torch.sigmoid(self.conv(pooled.unsqueeze(1)).squeeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gate(x)
        return x * a.view(*a.shape, *([1] * (x.dim() - 2)))

    def elementwise_operations(self, x: torch.Tensor) -> tuple[float, float]:
        """``(adds, multiplies)`` of one call on ``x`` beyond its convolution (which ``tks.energy``
        counts as a layer): the pool's sums (one add per input value) and the rescale (one
        multiply per input value); the sigmoid and the division by the length are not counted."""
        return float(x.numel()), float(x.numel())

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.conv.kernel_size[0]}"


class AttentionLIF(MultiStepLIF):
    """The attention neuron: ``spikes = LIF(a(I) * I)`` over ``I [T, B, C, *spatial]`` (``a`` from
    ``ChannelAttention``, computed from each step's current), the LIF being the fused
    ``tks_kernels.lif_multistep`` of ``MultiStepLIF`` with the same ``neuron`` settings.

    ``attention.gate`` fixed to ones makes it ``MultiStepLIF`` exactly (``tests/test_bearing_models.py``).

    Example::

        >>> sn = AttentionLIF(NeuronConfig(), channels=32)
        >>> sn(torch.randn(4, 8, 32, 256)).shape          # [T, B, C, L] -> spikes [T, B, C, L]
        torch.Size([4, 8, 32, 256])
    """

    def __init__(self, neuron: NeuronConfig = NeuronConfig(), channels: int = 1, kernel_size: Optional[int] = None):
        super().__init__(neuron)
        self.attention = ChannelAttention(channels, kernel_size)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 3:
            raise ValueError(f"AttentionLIF takes a sequence [T, B, C, *spatial], got shape {tuple(x_seq.shape)}")
        current = self.attention(x_seq.flatten(0, 1)).view(x_seq.shape)
        return super().forward(current)

    def extra_repr(self) -> str:
        return f"channels={self.attention.channels}, " + super().extra_repr()


__all__ = ["ChannelAttention", "AttentionLIF", "eca_kernel_size"]
