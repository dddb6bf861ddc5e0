"""Spiking CNNs of the TKS experiments, multi-step over all T at once.

Every model takes either a sequence ``x [T, B, C, H, W]`` (time first: event frames) or a static
image batch ``x [B, C, H, W]`` with an integer ``T=`` (direct encoding: the image is the input
current at every step) and returns one output per step, ``logits [T, B, num_classes]``. No state
is carried between calls. Any float dtype: fp64 runs the neurons' fp64 eager reference (for
gradcheck-style checks; the fused kernels take fp32 / fp16 / bf16).

Conv, BatchNorm, pooling and linear layers run on ``T*B`` flattened samples (BatchNorm statistics
over time and batch together, as tdBN); the spiking neurons run over all T steps in one call of
``tks_kernels.lif_multistep``. For static input the stem conv+BN is computed once on ``[B, ...]`` and
repeated T times: identical to running it on the repeated input (same batch statistics).

Neuron defaults are the TKS authors' settings: LIF, threshold 0.5, tau 2, hard reset to 0, input
decay, piecewise-quadratic surrogate with alpha 2.

Models (``MODELS``): ``vggsnn`` (TET/TKS VGG-SNN for 48x48 DVS frames), ``resnet19`` (tdBN
ResNet-19), ``sew_resnet19`` (SEW ResNet-19, ADD connection), ``convsnn`` (a small 3-layer net for
the offline default). ``width`` scales every channel count (1.0 = the paper's size; tests use less).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn

import tks_kernels


@dataclass(frozen=True)
class NeuronConfig:
    """The spiking neuron of every layer (arguments of ``tks_kernels.lif_multistep``)."""

    tau: float = 2.0
    v_threshold: float = 0.5
    v_reset: Optional[float] = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: str = "piecewise_quadratic"
    alpha: float = 2.0
    backend: str = "auto"


class MultiStepLIF(nn.Module):
    """LIF over ``[T, B, ...]`` in one fused call; returns the spikes ``[T, B, ...]``.

    Starts from ``v = v_reset`` at every call: the whole sequence is one call (multi-step).
    """

    def __init__(self, neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        self.neuron = neuron

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        n = self.neuron
        kwargs = dict(tau=n.tau, v_threshold=n.v_threshold, v_reset=n.v_reset, decay_input=n.decay_input,
                      detach_reset=n.detach_reset, surrogate=n.surrogate, alpha=n.alpha)
        if x_seq.dtype == torch.float64 and n.backend in ("auto", "torch"):
            # the kernels take fp32 / fp16 / bf16: fp64 (gradcheck-style checks) runs the fp64
            # reference, as tks.LIFNode does
            spikes, _ = tks_kernels.lif_multistep_reference(x_seq, **kwargs)
        else:
            spikes, _ = tks_kernels.lif_multistep(x_seq, **kwargs, backend=n.backend)
        return spikes

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.neuron).items())


class PerStep(nn.Module):
    """Apply a stateless module to each of the T steps at once: ``[T, B, *] -> [T, B, *']``."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.module = modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        t, b = x_seq.shape[:2]
        y = self.module(x_seq.flatten(0, 1))
        return y.view(t, b, *y.shape[1:])


def conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = 3, bn_weight: float = 1.0) -> nn.Sequential:
    """3x3 (or ``kernel``) conv without bias, then BatchNorm with its weight initialised to ``bn_weight``
    (tdBN: alpha * V_threshold)."""
    bn = nn.BatchNorm2d(c_out)
    nn.init.constant_(bn.weight, bn_weight)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), bn)


class SpikingModel(nn.Module):
    """Base: ``forward(x, T=None)`` with ``x [T, B, C, H, W]`` (time first) or ``x [B, C, H, W]`` and an
    integer ``T``; returns ``[T, B, num_classes]``. A static input is encoded by ``stem`` once and
    repeated T times."""

    stem: nn.Module  # conv+BN applied to [N, C, H, W]
    input_channels: int

    def encode(self, x: torch.Tensor, T: Optional[int]) -> torch.Tensor:
        """Stem output as a sequence ``[T, B, C', H', W']``."""
        if T is not None:
            T = _check_steps(T)
        if x.dim() == 4:
            if T is None:
                raise ValueError(
                    "a static input [B, C, H, W] needs the number of steps: pass T >= 1 (got T=None), "
                    "or pass a sequence [T, B, C, H, W]"
                )
            y = self.stem(x)
            return y.unsqueeze(0).expand(T, *y.shape)
        if x.dim() == 5:
            if T is not None and T != x.shape[0]:
                raise ValueError(f"T={T} does not match the sequence length x.shape[0]={x.shape[0]}")
            t, b = x.shape[:2]
            y = self.stem(x.flatten(0, 1))
            return y.view(t, b, *y.shape[1:])
        raise ValueError(
            f"x must be [T, B, C, H, W] (a sequence) or [B, C, H, W] with T= (a static image), "
            f"got shape {tuple(x.shape)}"
        )


def _check_steps(T) -> int:
    """T as a Python int >= 1 (numpy integers too); 2.5 or True is an error, never truncated."""
    from tks_kernels._checks import check_int

    try:
        T = check_int("T", T)
    except TypeError as e:
        raise TypeError(f"{e} (the number of timesteps)") from None
    if T < 1:
        raise ValueError(f"T must be >= 1 (the number of timesteps), got {T}")
    return T


def _ch(width: float, c: int) -> int:
    return max(1, int(round(c * width)))


class VGGSNN(SpikingModel):
    """VGG-SNN of TET and TKS for 2x48x48 DVS frames: 64, 128, P, 256, 256, P, 512, 512, P, 512, 512, P, FC.

    ``P`` is a 2x2 average pool; every conv is 3x3 + BatchNorm + LIF.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 2, image_size: int = 48, width: float = 1.0,
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        plan = [64, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"]
        c_first = _ch(width, plan[0])
        self.stem = conv_bn(in_channels, c_first)
        layers: list[nn.Module] = [MultiStepLIF(neuron)]
        c = c_first
        for item in plan[1:]:
            if item == "P":
                layers.append(PerStep(nn.AvgPool2d(2)))
            else:
                c_out = _ch(width, item)
                layers += [PerStep(conv_bn(c, c_out)), MultiStepLIF(neuron)]
                c = c_out
        self.features = nn.Sequential(*layers)
        side = image_size // 16
        if side < 1:
            raise ValueError(f"VGGSNN needs image_size >= 16 (four 2x2 pools), got {image_size}")
        self.classifier = PerStep(nn.Flatten(), nn.Linear(c * side * side, num_classes))

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        return self.classifier(self.features(self.encode(x, T)))


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
    weights start at ``alpha * V_threshold`` (tdBN, alpha = 1).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, block: str = "basic",
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        if block not in ("basic", "sew"):
            raise ValueError(f"block={block!r} is unknown; choose 'basic' or 'sew'")
        block_cls = BasicBlock if block == "basic" else SEWBlock
        bn_weight = neuron.v_threshold
        c = _ch(width, 128)
        self.stem = conv_bn(in_channels, c, bn_weight=bn_weight)
        layers: list[nn.Module] = [MultiStepLIF(neuron)]
        for c_stage, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
            c_out = _ch(width, c_stage)
            for i in range(blocks):
                layers.append(block_cls(c, c_out, stride if i == 0 else 1, neuron, bn_weight))
                c = c_out
        self.features = nn.Sequential(*layers)
        hidden = _ch(width, 256)
        self.pool = PerStep(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc1 = PerStep(nn.Linear(c, hidden))
        self.sn_fc = MultiStepLIF(neuron)
        self.fc2 = PerStep(nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        h = self.pool(self.features(self.encode(x, T)))
        return self.fc2(self.sn_fc(self.fc1(h)))


class ConvSNN(SpikingModel):
    """Small CNN for small images (the offline default, 8x8 digits): conv c, conv 2c, pool, conv 2c,
    pool, FC. ``width`` scales c = 16."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: float = 1.0,
                 neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        c = _ch(width, 16)
        self.stem = conv_bn(in_channels, c)
        self.features = nn.Sequential(
            MultiStepLIF(neuron),
            PerStep(conv_bn(c, 2 * c)), MultiStepLIF(neuron), PerStep(nn.AvgPool2d(2)),
            PerStep(conv_bn(2 * c, 2 * c)), MultiStepLIF(neuron), PerStep(nn.AvgPool2d(2)),
        )
        side = image_size // 4
        if side < 1:
            raise ValueError(f"ConvSNN needs image_size >= 4 (two 2x2 pools), got {image_size}")
        self.classifier = PerStep(nn.Flatten(), nn.Linear(2 * c * side * side, num_classes))

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        return self.classifier(self.features(self.encode(x, T)))


def _vggsnn(num_classes, in_channels, image_size, width, neuron):
    return VGGSNN(num_classes, in_channels, image_size, width, neuron)


def _resnet19(num_classes, in_channels, image_size, width, neuron):
    return ResNet19(num_classes, in_channels, width, "basic", neuron)


def _sew_resnet19(num_classes, in_channels, image_size, width, neuron):
    return ResNet19(num_classes, in_channels, width, "sew", neuron)


def _convsnn(num_classes, in_channels, image_size, width, neuron):
    return ConvSNN(num_classes, in_channels, image_size, width, neuron)


MODELS: dict[str, Callable[..., SpikingModel]] = {
    "vggsnn": _vggsnn,
    "resnet19": _resnet19,
    "sew_resnet19": _sew_resnet19,
    "convsnn": _convsnn,
}


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: int, width: float = 1.0,
                neuron: NeuronConfig = NeuronConfig()) -> SpikingModel:
    """Model ``name`` (one of ``MODELS``) for inputs with ``in_channels`` x ``image_size``^2."""
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown; choose one of {sorted(MODELS)}")
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width={width!r} must be a positive number (1.0 = the paper's channel counts)")
    return MODELS[name](num_classes, in_channels, image_size, float(width), neuron)
