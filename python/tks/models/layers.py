"""What every spiking model of the zoo is made of: the neuron config, the fused multi-step LIF layer,
the per-step wrapper of stateless layers, and ``SpikingModel``, the base that defines a model as

    encode (stem conv + BN, once per static input) -> stages[0] (starts with the first spiking
    layer) -> stages[1] ... -> head -> classifier (the last linear layer, per step)

so that the training methods reach inside without duplicating model code: TRT reverses the first
spiking layer's output along T, TSSD taps a stage's output for a weak classifier, SSNN runs each
stage with its own number of steps, and every method can run the classifier on its own features.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple, Optional

import torch
from torch import nn

import tks_kernels


@dataclass(frozen=True)
class NeuronConfig:
    """The spiking neuron of every layer (arguments of ``tks_kernels.lif_multistep``).

    The default is the TKS authors' binary LIF. ``max_spike_count=D`` makes it the multi-level
    I-LIF (integer counts 0..D, soft reset, ``H = (1 - 1/tau) V + X``, a straight-through gradient
    in ``grad_window``, default ``[0, D]``): build it with :meth:`ilif`, which takes spikingjelly's
    I-LIF defaults (tau 4/3, threshold 1) instead of the LIF's."""

    tau: float = 2.0
    v_threshold: float = 0.5
    v_reset: Optional[float] = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: str = "piecewise_quadratic"
    alpha: Optional[float] = 2.0
    backend: str = "auto"
    max_spike_count: Optional[int] = None
    grad_window: Optional[tuple[float, float]] = None

    def __post_init__(self):
        if self.grad_window is not None:  # a list after a JSON round trip (config.json)
            object.__setattr__(self, "grad_window", tuple(float(v) for v in self.grad_window))

    @classmethod
    def ilif(cls, max_spike_count: int, *, tau: float = 4.0 / 3.0, v_threshold: float = 1.0,
             grad_window: Optional[tuple[float, float]] = None, detach_reset: bool = False,
             backend: str = "auto") -> "NeuronConfig":
        """The I-LIF neuron with ``D = max_spike_count`` (a b-bit spike: ``D = 2**b - 1``)."""
        return cls(tau=tau, v_threshold=v_threshold, v_reset=None, decay_input=False, detach_reset=detach_reset,
                   surrogate="sigmoid", alpha=None, backend=backend, max_spike_count=max_spike_count,
                   grad_window=grad_window)

    @property
    def kind(self) -> str:
        return "lif" if self.max_spike_count is None else "ilif"


class MultiStepLIF(nn.Module):
    """LIF (or I-LIF, see ``NeuronConfig``) over ``[T, B, ...]`` in one fused call; returns the spikes
    (integer counts for I-LIF) ``[T, B, ...]``.

    Starts from ``v = v_reset`` at every call: the whole sequence is one call (multi-step).
    """

    def __init__(self, neuron: NeuronConfig = NeuronConfig()):
        super().__init__()
        self.neuron = neuron

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        n = self.neuron
        kwargs = dict(tau=n.tau, v_threshold=n.v_threshold, v_reset=n.v_reset, decay_input=n.decay_input,
                      detach_reset=n.detach_reset)
        if n.max_spike_count is None:
            kwargs.update(surrogate=n.surrogate, alpha=n.alpha)
        else:  # integer counts: their straight-through gradient replaces the surrogate
            kwargs.update(max_spike_count=n.max_spike_count, grad_window=n.grad_window)
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


def conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = 3, bn_weight: float = 1.0,
            dims: int = 2) -> nn.Sequential:
    """3x3 (or ``kernel``) conv without bias, then BatchNorm with its weight initialised to ``bn_weight``
    (tdBN: alpha * V_threshold). ``dims=1``: ``Conv1d`` + ``BatchNorm1d`` for signals ``[N, C, L]``."""
    if dims not in (1, 2):
        raise ValueError(f"dims={dims!r} must be 1 (signals, Conv1d) or 2 (images, Conv2d)")
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    bn = norm(c_out)
    nn.init.constant_(bn.weight, bn_weight)
    return nn.Sequential(conv(c_in, c_out, kernel, stride, kernel // 2, bias=False), bn)


def check_steps(T) -> int:
    """T as a Python int >= 1 (numpy integers too); 2.5 or True is an error, never truncated."""
    from tks_kernels._checks import check_int

    try:
        T = check_int("T", T)
    except TypeError as e:
        raise TypeError(f"{e} (the number of timesteps)") from None
    if T < 1:
        raise ValueError(f"T must be >= 1 (the number of timesteps), got {T}")
    return T


class ModelRun(NamedTuple):
    """What ``SpikingModel.run`` returns: ``logits [T, B, classes]``; ``features`` the classifier's
    input ``[T, B, ...]`` (spikes, or pooled spikes); ``taps`` the outputs of the stages asked for,
    ``{stage index: [T, B, C, ...]}``."""

    logits: torch.Tensor
    features: torch.Tensor
    taps: dict


class SpikingModel(nn.Module):
    """Base of the zoo: ``forward(x, T=None)`` with ``x [T, B, C, *spatial]`` (time first) or a static
    ``x [B, C, *spatial]`` and an integer ``T``; returns ``logits [T, B, num_classes]``.

    A subclass sets ``stem`` (applied to ``[N, C, *spatial]``), ``stages`` (an ``nn.ModuleList`` of
    ``[T, B, ...] -> [T, B, ...]`` modules; ``stages[0]`` is an ``nn.Sequential`` that starts with the
    first spiking layer), ``stage_channels`` (the channel count of each stage's output), ``head``
    (after the last stage, up to the classifier's input) and ``classifier`` (the last layer, per
    step), and ``spatial_dims`` (2 for images, 1 for signals). A static input is encoded by ``stem``
    once and repeated T times: identical to running it on the repeated input.
    """

    stem: nn.Module
    stages: nn.ModuleList
    stage_channels: tuple[int, ...]
    head: nn.Module
    classifier: nn.Module
    spatial_dims: int = 2

    def encode(self, x: torch.Tensor, T: Optional[int]) -> torch.Tensor:
        """Stem output as a sequence ``[T, B, C', *spatial']``."""
        if T is not None:
            T = check_steps(T)
        static_dims = 2 + self.spatial_dims
        spatial = "H, W" if self.spatial_dims == 2 else "L"
        if x.dim() == static_dims:
            if T is None:
                raise ValueError(
                    f"a static input [B, C, {spatial}] needs the number of steps: pass T >= 1 (got T=None), "
                    f"or pass a sequence [T, B, C, {spatial}]"
                )
            y = self.stem(x)
            return y.unsqueeze(0).expand(T, *y.shape)
        if x.dim() == static_dims + 1:
            if T is not None and T != x.shape[0]:
                raise ValueError(f"T={T} does not match the sequence length x.shape[0]={x.shape[0]}")
            t, b = x.shape[:2]
            y = self.stem(x.flatten(0, 1))
            return y.view(t, b, *y.shape[1:])
        raise ValueError(
            f"x must be [T, B, C, {spatial}] (a sequence) or [B, C, {spatial}] with T= (a static input), "
            f"got shape {tuple(x.shape)}"
        )

    @property
    def first_spiking_layer(self) -> nn.Module:
        return self.stages[0][0]

    def between_stages(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """What the output of stage ``i`` becomes before stage ``i + 1`` sees it: itself here; the
        shrinking network (``shrinking.ShrinkingSNN``) maps it onto the next stage's steps."""
        return h

    def run(self, x: torch.Tensor, T: Optional[int] = None, *, reverse_first_spikes: bool = False,
            taps: tuple[int, ...] = ()) -> ModelRun:
        """The forward with its inside exposed: ``reverse_first_spikes`` flips the first spiking
        layer's output along T before the rest of the network runs on it (TRT on static data);
        ``taps`` lists stage indices whose outputs are returned too (TSSD's weak classifier, SSNN's
        early classifiers), each at its stage's own steps."""
        h = self.encode(x, T)
        outputs = {}
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            if i == 0 and reverse_first_spikes:
                h = self.first_spiking_layer(h).flip(0)
                for layer in list(stage)[1:]:
                    h = layer(h)
            else:
                h = stage(h)
            if i in taps:
                outputs[i] = h  # the stage's own output (before between_stages)
            if i < last:
                h = self.between_stages(i, h)
        features = self.head(h)
        return ModelRun(self.classifier(features), features, outputs)

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        h = self.encode(x, T)
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i < last:
                h = self.between_stages(i, h)
        return self.classifier(self.head(h))


def channels(width: float, c: int) -> int:
    """``c`` channels scaled by ``width`` (at least 1)."""
    return max(1, int(round(c * width)))
