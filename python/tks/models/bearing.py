"""1-D models for raw vibration windows ``[B, 1, L]`` (bearing-fault diagnosis, issue 15): MRA-SNN,
its ablation without attention, and a non-spiking CNN of the same layout.

Our formulation of the second abstract in ``shared/papers/related_abstracts.txt`` (the multi-scale
residual attention SNN; no code was published, every choice below is ours):

- **Multi-scale attention encoding** (the stem, run once per static window): parallel
  ``Conv1d`` branches of kernel sizes ``KERNELS`` = 5, 15, 45 samples (stride ``STEM_STRIDE`` = 4,
  zero padding k // 2, 16 channels each), BatchNorm each, concatenated along the channels, an
  ECA channel attention (``attention.ChannelAttention``), then the first LIF (``stages[0]``):
  its spikes are the encoding. The window is the input current of the convolutions at every
  step (direct encoding); no STFT or other preprocessing.
- **Spike residual attention blocks** (``SpikeResidualBlock``): ``conv-BN-LIF-conv-BN-LIF`` plus a
  **SEW ADD shortcut** (spikes added to spikes, as SEW ResNet; we chose it over a membrane
  shortcut so that every convolution after the stem is fed by spikes or spike counts, never by
  real values: each is spike-driven, see ``tks.energy``). The shortcut is the identity, or
  ``conv1x1-BN-LIF`` (stride 2) when the shape changes. Block outputs are spike counts in {0, 1, 2}.
  In MRA-SNN both neurons of a block (and the shortcut's) are attention neurons
  (``attention.AttentionLIF``, ``LIF(a(I) * I)``): the second one's attention is the channel
  attention on the block's output (BN2's output, the current of the block's output neuron).
- **Downsampling**: three blocks of 32, 64, 128 channels; the second and third start with stride 2
  (their first conv and the shortcut), so a 1024-sample window is 256, 256, 128, 64 samples long
  after the stem and each block. The receptive field of an output sample is about 130 input
  samples, longer than the interval between two fault impacts at 12 kHz (90-135 samples in
  ``bearing-sim`` at 1500 rpm); a stride-2 stem with kernels 3, 9, 27 (RF ~90) was slower (2x) and no
  more accurate in our short runs on ``bearing-sim``.
- **Head**: global average pool over the length (``[T, B, C]``, the mean spike count), then the
  linear classifier, per step: ``logits [T, B, classes]``.
- Stages (``SpikingModel``): ``stages[0]`` is the encoder's LIF, then one stage per residual block
  (4 stages: TSSD's weak classifier defaults to stage 2, the first block's output).

``snn1d`` is the same network without any attention (plain ``MultiStepLIF`` everywhere, no ECA in
the encoder): the ablation. ``cnn1d`` is the ``snn1d`` layout with ReLU for every LIF: a
non-spiking reference. It has no time axis: a static window is evaluated **once** and its logits
are repeated at every one of the T steps (``[T, B, classes]``, identical steps), so every
training method and ``tks-eval`` run on it unchanged, and ``tks.energy`` counts one evaluation
(T = 1). A sequence input ``[T, B, C, L]`` is evaluated step by step.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .attention import AttentionLIF, ChannelAttention
from .layers import ModelRun, MultiStepLIF, NeuronConfig, PerStep, SpikingModel, channels, conv_bn

KERNELS = (5, 15, 45)
STEM_STRIDE = 4
BRANCH_CHANNELS = 16  # per branch: 3 x 16 = 48 encoder channels
BLOCK_CHANNELS = (32, 64, 128)
BLOCK_STRIDES = (1, 2, 2)

NeuronFactory = Callable[[int], nn.Module]  # channels -> a [T, B, C, L] -> [T, B, C, L] module


class MultiScaleEncoder(nn.Module):
    """``x [N, C_in, L] -> [N, len(kernels) * branch_channels, L / stride]``: parallel
    ``Conv1d(k) + BatchNorm1d`` branches, concatenated, then ``attention`` (ECA, or identity).

    Example::

        >>> enc = MultiScaleEncoder(1, 16, (5, 15, 45), stride=4, attention=True)
        >>> enc(torch.randn(8, 1, 1024)).shape
        torch.Size([8, 48, 256])
    """

    def __init__(self, in_channels: int, branch_channels: int, kernels: tuple[int, ...] = KERNELS,
                 stride: int = STEM_STRIDE, attention: bool = True):
        super().__init__()
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels={kernels!r}: give odd kernel sizes (the branches must keep the same length)")
        self.branches = nn.ModuleList(conv_bn(in_channels, branch_channels, stride, k, dims=1) for k in kernels)
        self.out_channels = branch_channels * len(kernels)
        self.attention = ChannelAttention(self.out_channels) if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(torch.cat([branch(x) for branch in self.branches], 1))


class SpikeResidualBlock(nn.Module):
    """``sn2(BN(conv(sn1(BN(conv(s)))))) + shortcut(s)`` over ``[T, B, C, L]`` (SEW ADD).

    ``make_neuron(channels)`` builds each neuron (``AttentionLIF`` in MRA-SNN, ``MultiStepLIF`` in
    snn1d, ReLU in cnn1d); the shortcut is the identity, or ``conv1x1-BN`` and a neuron when the
    stride or the channel count changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, make_neuron: NeuronFactory):
        super().__init__()
        self.conv1 = PerStep(conv_bn(c_in, c_out, stride, dims=1))
        self.sn1 = make_neuron(c_out)
        self.conv2 = PerStep(conv_bn(c_out, c_out, dims=1))
        self.sn2 = make_neuron(c_out)
        self.shortcut = (
            nn.Sequential(PerStep(conv_bn(c_in, c_out, stride, kernel=1, dims=1)), make_neuron(c_out))
            if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.sn2(self.conv2(self.sn1(self.conv1(s)))) + self.shortcut(s)


class ResidualNet1d(SpikingModel):
    """The shared layout of ``MRASNN``, ``SNN1d`` and ``CNN1d`` (see the module docstring):
    ``forward(x, T=None)`` with ``x [B, C, L]`` and ``T``, or ``x [T, B, C, L]``; returns
    ``logits [T, B, num_classes]``. ``width`` scales every channel count."""

    spatial_dims = 1
    min_length = STEM_STRIDE * 4  # the stem and two stride-2 blocks leave at least one sample

    def __init__(self, num_classes: int, in_channels: int, signal_length: int, width: float,
                 make_neuron: NeuronFactory, attention: bool, make_encoder_neuron: Optional[NeuronFactory] = None):
        super().__init__()
        if signal_length is None or signal_length < self.min_length:
            raise ValueError(f"{type(self).__name__} takes 1-D signals of length >= {self.min_length} (a stride-"
                             f"{STEM_STRIDE} encoder and two stride-2 blocks), got signal_length={signal_length}")
        self.stem = MultiScaleEncoder(in_channels, channels(width, BRANCH_CHANNELS), KERNELS, STEM_STRIDE, attention)
        c = self.stem.out_channels
        stages: list[nn.Module] = [nn.Sequential((make_encoder_neuron or make_neuron)(c))]
        stage_channels = [c]
        for c_plan, stride in zip(BLOCK_CHANNELS, BLOCK_STRIDES):
            c_out = channels(width, c_plan)
            stages.append(nn.Sequential(SpikeResidualBlock(c, c_out, stride, make_neuron)))
            stage_channels.append(c_out)
            c = c_out
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(stage_channels)
        self.head = PerStep(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.classifier = PerStep(nn.Linear(c, num_classes))


class MRASNN(ResidualNet1d):
    """MRA-SNN: multi-scale attention encoding, spike residual attention blocks, attention neurons."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, signal_length: int = 1024, width: float = 1.0,
                 neuron: NeuronConfig = NeuronConfig()):
        # the encoder's ECA then its LIF: the attention neuron of the encoding, with the attention
        # computed once per static window in the stem (identical at every step for direct encoding)
        super().__init__(num_classes, in_channels, signal_length, width, lambda c: AttentionLIF(neuron, c),
                         attention=True, make_encoder_neuron=lambda c: MultiStepLIF(neuron))


class SNN1d(ResidualNet1d):
    """The MRA-SNN layout without attention (the ablation): plain LIF neurons, no ECA."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, signal_length: int = 1024, width: float = 1.0,
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__(num_classes, in_channels, signal_length, width, lambda c: MultiStepLIF(neuron),
                         attention=False)


class CNN1d(ResidualNet1d):
    """The snn1d layout with ReLU for every LIF: a non-spiking reference. A static window is
    evaluated once and its logits repeated over the T steps (identical steps); a sequence
    ``[T, B, C, L]`` is evaluated step by step. ``neuron`` is accepted (the registry passes it) and unused."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, signal_length: int = 1024, width: float = 1.0,
                 neuron: Optional[NeuronConfig] = None):
        super().__init__(num_classes, in_channels, signal_length, width, lambda c: nn.ReLU(), attention=False)

    def run(self, x: torch.Tensor, T: Optional[int] = None, *, reverse_first_spikes: bool = False,
            taps: tuple[int, ...] = ()) -> ModelRun:
        if x.dim() != 2 + self.spatial_dims or T is None:  # a sequence (or an error encode() words)
            return super().run(x, T, reverse_first_spikes=reverse_first_spikes, taps=taps)
        from .layers import check_steps

        T = check_steps(T)
        once = super().run(x, 1, taps=taps)  # one step: reversing it changes nothing

        def repeat(h: torch.Tensor) -> torch.Tensor:
            return h.expand(T, *h.shape[1:])

        return ModelRun(repeat(once.logits), repeat(once.features), {i: repeat(h) for i, h in once.taps.items()})

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        return self.run(x, T).logits


__all__ = ["MRASNN", "SNN1d", "CNN1d", "ResidualNet1d", "SpikeResidualBlock", "MultiScaleEncoder",
           "KERNELS", "BLOCK_CHANNELS"]
