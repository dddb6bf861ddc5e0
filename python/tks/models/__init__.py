"""Spiking models of the experiments, multi-step over all T at once.

Every model takes either a sequence ``x [T, B, C, H, W]`` (time first: event frames) or a static
image batch ``x [B, C, H, W]`` with an integer ``T=`` (direct encoding: the image is the input
current at every step) and returns one output per step, ``logits [T, B, num_classes]``. No state
is carried between calls. Any float dtype: fp64 runs the neurons' fp64 eager reference (for
gradcheck-style checks; the fused kernels take fp32 / fp16 / bf16).

Neuron defaults are the TKS authors' settings: LIF, threshold 0.5, tau 2, hard reset to 0, input
decay, piecewise-quadratic surrogate with alpha 2.

Models (``MODELS``): ``vggsnn`` (TET/TKS VGG-SNN for 48x48 DVS frames), ``resnet19`` (tdBN
ResNet-19), ``sew_resnet19`` (SEW ResNet-19, ADD connection), ``convsnn`` (a small 3-layer net for
the offline default); for 1-D signals ``[B, C, L]`` (``SIGNAL_MODELS``, bearing vibration windows):
``mra_snn`` (MRA-SNN: multi-scale attention encoding, spike residual attention blocks, attention
neurons), ``snn1d`` (the same without attention) and ``cnn1d`` (its non-spiking counterpart, ReLU,
evaluated once and repeated over T). ``width`` scales every channel count (1.0 = the paper's size;
tests use less). Modules: ``layers`` (the neuron layer, ``SpikingModel`` and its stages), ``cnn``
(the CNNs), ``shrinking`` (SSNN's ``ShrinkingSNN``, any zoo model with a T per stage, and its
``TemporalTransformer``), ``attention`` (channel attention and the attention neuron, for any
model), ``bearing`` (the 1-D models).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from .attention import AttentionLIF, ChannelAttention
from .bearing import CNN1d, MRASNN, SNN1d
from .cnn import BasicBlock, ConvSNN, ResNet19, SEWBlock, VGGSNN
from .layers import ModelRun, MultiStepLIF, NeuronConfig, PerStep, SpikingModel, conv_bn
from .shrinking import ShrinkingSNN, TemporalTransformer

__all__ = [
    "MODELS", "build_model", "NeuronConfig", "MultiStepLIF", "PerStep", "SpikingModel", "ModelRun", "conv_bn",
    "VGGSNN", "ResNet19", "ConvSNN", "BasicBlock", "SEWBlock", "ShrinkingSNN", "TemporalTransformer",
    "SIGNAL_MODELS", "MRASNN", "SNN1d", "CNN1d", "ChannelAttention", "AttentionLIF",
]


def _vggsnn(num_classes, in_channels, image_size, width, neuron):
    return VGGSNN(num_classes, in_channels, image_size, width, neuron)


def _resnet19(num_classes, in_channels, image_size, width, neuron):
    return ResNet19(num_classes, in_channels, width, "basic", neuron)


def _sew_resnet19(num_classes, in_channels, image_size, width, neuron):
    return ResNet19(num_classes, in_channels, width, "sew", neuron)


def _convsnn(num_classes, in_channels, image_size, width, neuron):
    return ConvSNN(num_classes, in_channels, image_size, width, neuron)


# 1-D models: the third argument is the signal length L
def _mra_snn(num_classes, in_channels, signal_length, width, neuron):
    return MRASNN(num_classes, in_channels, signal_length, width, neuron)


def _snn1d(num_classes, in_channels, signal_length, width, neuron):
    return SNN1d(num_classes, in_channels, signal_length, width, neuron)


def _cnn1d(num_classes, in_channels, signal_length, width, neuron):
    return CNN1d(num_classes, in_channels, signal_length, width, neuron)


MODELS: dict[str, Callable[..., SpikingModel]] = {
    "vggsnn": _vggsnn,
    "resnet19": _resnet19,
    "sew_resnet19": _sew_resnet19,
    "convsnn": _convsnn,
    "mra_snn": _mra_snn,
    "snn1d": _snn1d,
    "cnn1d": _cnn1d,
}
# The models of 1-D signals [B, C, L] (built with signal_length); every other one takes images.
SIGNAL_MODELS = frozenset({"mra_snn", "snn1d", "cnn1d"})


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: int = 0,
                signal_length: Optional[int] = None, width: float = 1.0,
                neuron: NeuronConfig = NeuronConfig()) -> SpikingModel:
    """Model ``name`` (one of ``MODELS``) for images ``in_channels`` x ``image_size``^2, or, for the
    ``SIGNAL_MODELS``, 1-D signals ``in_channels`` x ``signal_length`` (a dataset's
    ``DataInfo.signal_length``; ``image_size`` is then 0)."""
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown; choose one of {sorted(MODELS)}")
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width={width!r} must be a positive number (1.0 = the paper's channel counts)")
    if name in SIGNAL_MODELS:
        if signal_length is None:
            raise ValueError(f"model {name!r} takes 1-D signals [C, L] (e.g. bearing vibration windows), and the "
                             f"input is not one (signal_length=None); choose an image model: "
                             f"{sorted(set(MODELS) - SIGNAL_MODELS)}")
        return MODELS[name](num_classes, in_channels, int(signal_length), float(width), neuron)
    if signal_length is not None:
        raise ValueError(f"model {name!r} takes images, and the input is a 1-D signal of length {signal_length}; "
                         f"choose a 1-D model: {sorted(SIGNAL_MODELS)}")
    return MODELS[name](num_classes, in_channels, image_size, float(width), neuron)
