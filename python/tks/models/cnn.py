"""The spiking CNNs of the TKS experiments: VGG-SNN, ResNet-19 / SEW ResNet-19 and the small ConvSNN.

Conv, BatchNorm, pooling and linear layers run on ``T*B`` flattened samples (BatchNorm statistics
over time and batch together, as tdBN); the spiking neurons run over all T steps in one call of
``tks_kernels.lif_multistep``. Stage boundaries (``stages``, see ``layers.SpikingModel``): VGG-SNN
at its four 2x2 pools, ResNet-19 at its downsampling block groups, ConvSNN at its conv blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import MultiStepLIF, NeuronConfig, PerStep, SpikingModel, channels, conv_bn


class VGGSNN(SpikingModel):
    """VGG-SNN of TET and TKS for 2x48x48 DVS frames: 64, 128, P, 256, 256, P, 512, 512, P, 512, 512, P, FC.

    ``P`` is a 2x2 average pool; every conv is 3x3 + BatchNorm + LIF. Four stages, one per pool
    (the first conv is the stem).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 2, image_size: int = 48, width: float = 1.0,
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        side = image_size // 16
        if side < 1:
            raise ValueError(f"VGGSNN needs image_size >= 16 (four 2x2 pools), got {image_size}")
        plan = [[64, 128], [256, 256], [512, 512], [512, 512]]
        c = channels(width, plan[0][0])
        self.stem = conv_bn(in_channels, c)
        stages, stage_channels = [], []
        for i, convs in enumerate(plan):
            layers: list[nn.Module] = [MultiStepLIF(neuron)] if i == 0 else []
            for j, c_plan in enumerate(convs):
                if i == 0 and j == 0:
                    continue  # the stem's conv, before the first spiking layer
                c_out = channels(width, c_plan)
                layers += [PerStep(conv_bn(c, c_out)), MultiStepLIF(neuron)]
                c = c_out
            layers.append(PerStep(nn.AvgPool2d(2)))
            stages.append(nn.Sequential(*layers))
            stage_channels.append(c)
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(stage_channels)
        self.head = nn.Identity()
        self.classifier = PerStep(nn.Flatten(), nn.Linear(c * side * side, num_classes))


class BasicBlock(nn.Module):
    """Spiking BasicBlock: ``LIF(BN(conv(LIF(BN(conv(x))))) + shortcut(x))`` (ResNet-19, tdBN)."""

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: NeuronConfig, bn_weight: float):
        super().__init__()
        self.conv1 = PerStep(conv_bn(c_in, c_out, stride, bn_weight=bn_weight))
        self.sn1 = MultiStepLIF(neuron)
        self.conv2 = PerStep(conv_bn(c_out, c_out, bn_weight=bn_weight))
        self.shortcut = (
            PerStep(conv_bn(c_in, c_out, stride, kernel=1, bn_weight=bn_weight))
            if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.sn2 = MultiStepLIF(neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn2(self.conv2(self.sn1(self.conv1(x))) + self.shortcut(x))


class SEWBlock(nn.Module):
    """Spike-element-wise block, ADD connection: ``LIF(BN(conv(LIF(BN(conv(s)))))) + shortcut(s)``.

    The shortcut is the identity on spikes, or conv+BN+LIF when the shape changes (SEW ResNet).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: NeuronConfig, bn_weight: float):
        super().__init__()
        self.conv1 = PerStep(conv_bn(c_in, c_out, stride, bn_weight=bn_weight))
        self.sn1 = MultiStepLIF(neuron)
        self.conv2 = PerStep(conv_bn(c_out, c_out, bn_weight=bn_weight))
        self.sn2 = MultiStepLIF(neuron)
        self.shortcut = (
            nn.Sequential(PerStep(conv_bn(c_in, c_out, stride, kernel=1, bn_weight=bn_weight)), MultiStepLIF(neuron))
            if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn2(self.conv2(self.sn1(self.conv1(x)))) + self.shortcut(x)


class ResNet19(SpikingModel):
    """ResNet-19 (tdBN / TET): stem 128, stages of [3, 3, 2] blocks at 128/256/512 (strides 1, 2, 2),
    global average pool, FC 256 + LIF, FC num_classes.

    ``block="basic"`` is the tdBN ResNet-19; ``block="sew"`` the SEW ResNet-19 (ADD). BatchNorm
    weights start at ``alpha * V_threshold`` (tdBN, alpha = 1). Three stages, one per block group
    (the second and third start with a downsampling block); the head is the pool, FC 256 and its
    LIF, the classifier the last FC.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, block: str = "basic",
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        if block not in ("basic", "sew"):
            raise ValueError(f"block={block!r} is unknown; choose 'basic' or 'sew'")
        block_cls = BasicBlock if block == "basic" else SEWBlock
        bn_weight = neuron.v_threshold
        c = channels(width, 128)
        self.stem = conv_bn(in_channels, c, bn_weight=bn_weight)
        stages, stage_channels = [], []
        for i, (c_stage, blocks, stride) in enumerate(((128, 3, 1), (256, 3, 2), (512, 2, 2))):
            layers: list[nn.Module] = [MultiStepLIF(neuron)] if i == 0 else []
            c_out = channels(width, c_stage)
            for b in range(blocks):
                layers.append(block_cls(c, c_out, stride if b == 0 else 1, neuron, bn_weight))
                c = c_out
            stages.append(nn.Sequential(*layers))
            stage_channels.append(c)
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(stage_channels)
        hidden = channels(width, 256)
        self.head = nn.Sequential(PerStep(nn.AdaptiveAvgPool2d(1), nn.Flatten()), PerStep(nn.Linear(c, hidden)),
                                  MultiStepLIF(neuron))
        self.classifier = PerStep(nn.Linear(hidden, num_classes))


class ConvSNN(SpikingModel):
    """Small CNN for small images (the offline default, 8x8 digits): conv c, conv 2c, pool, conv 2c,
    pool, FC. ``width`` scales c = 16. Three stages, one per conv block (the first conv is the stem,
    so the first stage is its spiking layer)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: float = 1.0,
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        side = image_size // 4
        if side < 1:
            raise ValueError(f"ConvSNN needs image_size >= 4 (two 2x2 pools), got {image_size}")
        c = channels(width, 16)
        self.stem = conv_bn(in_channels, c)
        self.stages = nn.ModuleList([
            nn.Sequential(MultiStepLIF(neuron)),
            nn.Sequential(PerStep(conv_bn(c, 2 * c)), MultiStepLIF(neuron), PerStep(nn.AvgPool2d(2))),
            nn.Sequential(PerStep(conv_bn(2 * c, 2 * c)), MultiStepLIF(neuron), PerStep(nn.AvgPool2d(2))),
        ])
        self.stage_channels = (c, 2 * c, 2 * c)
        self.head = nn.Identity()
        self.classifier = PerStep(nn.Flatten(), nn.Linear(2 * c * side * side, num_classes))
