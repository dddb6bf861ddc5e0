"""The shrinking SNN (SSNN): each stage of a zoo model runs with its own, smaller number of steps,
and a temporal transformer maps one stage's output onto the next stage's steps.

    x -> encode (T1 steps) -> stages[0] (T1) -> transformer 1 (T1 -> T2) -> stages[1] (T2) -> ...
      -> stages[n-1] (Tn) -> head -> classifier: logits [Tn, B, classes]

``ShrinkingSNN(model, stage_T)`` wraps any ``SpikingModel`` of the zoo (its stem, stages, head and
classifier, the same modules and parameter names) and adds ``transformers``; it is the deployed
network of an ``ssnn`` run (``tks.methods.ssnn``). The early classifiers of training are not
part of it. ``schedule_operations`` counts its dense synaptic operations per stage, at its
schedule and at T1 everywhere (the relative cost ``tks-eval`` reports).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .layers import SpikingModel

__all__ = ["TemporalTransformer", "ShrinkingSNN", "area_average_weights", "check_stage_T", "temporal_transform",
           "schedule_operations"]


def area_average_weights(T_in: int, T_out: int) -> torch.Tensor:
    """``W [T_out, T_in]`` (fp32) of area averaging: output step j is the mean of the input over
    ``[j * T_in / T_out, (j + 1) * T_in / T_out)``, input step k covering ``[k, k + 1)``, so an input
    step cut by an edge counts with the fraction inside. Every row sums to 1 (a constant sequence
    stays constant). Computed exactly in integers (lengths scaled by ``T_out``).

    Example: ``area_average_weights(3, 2) = [[2/3, 1/3, 0], [0, 1/3, 2/3]]``.
    """
    for name, v in (("T_in", T_in), ("T_out", T_out)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be an integer >= 1 (a number of steps)")
    j = torch.arange(T_out, dtype=torch.int64).unsqueeze(1)
    k = torch.arange(T_in, dtype=torch.int64).unsqueeze(0)
    overlap = (torch.minimum((j + 1) * T_in, (k + 1) * T_out) - torch.maximum(j * T_in, k * T_out)).clamp_min(0)
    return (overlap.double() / T_in).float()


def temporal_transform(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Y[j] = sum_k weight[j, k] * x[k]``: ``x [T_in, *rest]``, ``weight [T_out, T_in]`` ->
    ``[T_out, *rest]``, in x's dtype. One matrix product over the flattened ``[T_in, rest]`` view
    (no loop over T; no copy of a contiguous ``x``)."""
    if x.dim() < 1 or x.shape[0] != weight.shape[1]:
        raise ValueError(f"x must be [T_in={weight.shape[1]}, ...] (time first), got shape {tuple(x.shape)}")
    w = weight if weight.dtype == x.dtype else weight.to(x.dtype)
    return torch.mm(w, x.reshape(x.shape[0], -1)).view(weight.shape[0], *x.shape[1:])


class TemporalTransformer(nn.Module):
    """Maps a sequence of ``T_in`` steps onto ``T_out``: ``Y[j] = sum_k W[j, k] X[k]`` (SSNN's
    temporal transformer between two stages), ``W [T_out, T_in]`` initialised to area averaging
    (``area_average_weights``: fractional weights at the edges, rows summing to 1).

    ``learnable=True``: ``W`` is a Parameter, trained with the network (unconstrained: its rows
    need not keep summing to 1). ``learnable=False`` ("fixed"): ``W`` is a buffer, the averaging
    itself, never trained (no gradient; it is still saved in the state dict).

    The output is **not binary**: it is a weighted count of the input spikes, so the next stage's
    first layer sees real values (its synaptic operations are multiply-accumulates).

    Shapes: ``x [T_in, B, *]`` -> ``[T_out, B, *]``, any float dtype (``W`` is cast to it).

    Example::

        >>> tt = TemporalTransformer(8, 5)
        >>> tt(spikes).shape            # spikes [8, B, C, H, W]
        torch.Size([5, B, C, H, W])
    """

    def __init__(self, T_in: int, T_out: int, learnable: bool = True):
        super().__init__()
        self.T_in, self.T_out, self.learnable = T_in, T_out, bool(learnable)
        weight = area_average_weights(T_in, T_out)
        if self.learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_transform(x, self.weight)

    def extra_repr(self) -> str:
        return f"T_in={self.T_in}, T_out={self.T_out}, learnable={self.learnable}"


def check_stage_T(stage_T: Sequence[int], n_stages: Optional[int] = None, model_name: str = "the model") -> tuple:
    """``stage_T`` as a tuple of ints >= 1, strictly decreasing, one per stage (when ``n_stages`` is
    given); else ``ValueError`` saying what to pass."""
    values = tuple(stage_T)
    if not values or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in values):
        raise ValueError(f"stage_T={list(values)}: one integer number of steps >= 1 per stage")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"stage_T={list(values)} must be strictly decreasing (each stage fewer steps than the one "
                         f"before)")
    if n_stages is not None and len(values) != n_stages:
        raise ValueError(f"stage_T={list(values)} has {len(values)} values; {model_name} has {n_stages} stages: "
                         f"give one T per stage")
    return values


class ShrinkingSNN(SpikingModel):
    """A zoo model whose stage i runs ``stage_T[i]`` steps, with a ``TemporalTransformer`` between
    consecutive stages: ``forward(x, T=None)`` takes the model's input at ``T1 = stage_T[0]`` steps
    (a sequence ``[T1, B, C, *]`` or a static ``[B, C, *]`` with ``T=T1``) and returns
    ``logits [Tn, B, classes]`` (the last stage's steps).

    ``model``'s stem, stages, head and classifier are used as they are (shared, same names in the
    state dict), plus ``transformers.{i}.weight`` ``[T_{i+1}, T_i]``. ``learnable=False``: the
    transformers are the fixed area averaging. ``run(..., taps=...)`` returns each tapped stage's
    output at its own steps (before its transformer). The input cannot be shortened: T' other than
    T1 is an error (the transformers are T_{i+1} x T_i matrices).

    Example::

        >>> net = ShrinkingSNN(build_model("vggsnn", ...), stage_T=(8, 6, 4, 2))
        >>> net(frames).shape           # frames [8, B, 2, 48, 48]
        torch.Size([2, B, 10])
    """

    def __init__(self, model: SpikingModel, stage_T: Sequence[int], learnable: bool = True):
        super().__init__()
        if not isinstance(model, SpikingModel):
            raise TypeError(f"model must be a SpikingModel of the zoo (with stages), got {type(model).__name__}")
        self.stage_T = check_stage_T(stage_T, len(model.stages), type(model).__name__)
        self.base_name = type(model).__name__
        self.stem, self.stages, self.head, self.classifier = model.stem, model.stages, model.head, model.classifier
        self.stage_channels = tuple(model.stage_channels)
        self.spatial_dims = model.spatial_dims
        self.transformers = nn.ModuleList(
            TemporalTransformer(a, b, learnable) for a, b in zip(self.stage_T, self.stage_T[1:]))

    @property
    def average_timesteps(self) -> float:
        """Mean of the stage T's (the SSNN's "average timesteps")."""
        return sum(self.stage_T) / len(self.stage_T)

    def encode(self, x: torch.Tensor, T: Optional[int]) -> torch.Tensor:
        h = super().encode(x, T)
        if h.shape[0] != self.stage_T[0]:
            raise ValueError(f"this shrinking network runs its stages at T = {', '.join(map(str, self.stage_T))}: its "
                             f"input has T1 = {self.stage_T[0]} steps, got {h.shape[0]} (it cannot run on fewer "
                             f"input steps: its temporal transformers are fixed-size matrices)")
        return h

    def between_stages(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.transformers[i](h)

    def extra_repr(self) -> str:
        return f"base={self.base_name}, stage_T={self.stage_T}"


@torch.no_grad()
def schedule_operations(model: ShrinkingSNN, x: torch.Tensor, T: Optional[int] = None) -> dict:
    """Dense synaptic operations per sample (``tks.energy``'s ``dense_ops``: multiply-accumulates of a
    dense evaluation, summed over the steps each layer ran) of each part of ``model``, on input
    ``x`` (static ``[B, C, *]`` with ``T=T1``, or a sequence ``[T1, B, C, *]``):

    ``{"schedule": parts, "uniform": parts}`` with ``parts = {"stem": float, "stages": [n floats],
    "transformers": [n - 1 floats], "head": float}``: ``"schedule"`` at the model's stage T's (each
    layer's operations times its stage's T; the transformers' ``T_out * T_in`` MACs per neuron
    counted too), ``"uniform"`` the same layers at T1 everywhere, no transformers (the zoo model at
    T1). ``"head"`` holds the head and the classifier. A static input is encoded once (the stem
    runs one step in both). The counts depend on shapes only, not on the values of ``x``.
    """
    from ..energy import count_operations

    batch = x.shape[0] if x.dim() == 2 + model.spatial_dims else x.shape[1]
    n = len(model.stages)

    def parts(ops, transformer_ops):
        out = {"stem": 0.0, "stages": [0.0] * n, "transformers": list(transformer_ops), "head": 0.0}
        for rec in ops:
            top, _, rest = rec.name.partition(".")
            if top == "stem":
                out["stem"] += rec.dense_ops
            elif top == "stages":
                out["stages"][int(rest.split(".")[0])] += rec.dense_ops
            elif top in ("head", "classifier"):
                out["head"] += rec.dense_ops
            else:
                raise ValueError(f"layer {rec.name} is in no part of the model (stem, stages, head, classifier)")
        return out

    transformer_ops = [0.0] * (n - 1)

    def count_transformer(i):
        def hook(module, inputs):
            h = inputs[0]
            transformer_ops[i] += module.T_out * module.T_in * (h[0].numel() / batch)
        return hook

    handles = [t.register_forward_pre_hook(count_transformer(i)) for i, t in enumerate(model.transformers)]
    try:
        schedule = parts(count_operations(model, lambda: model(x, T), batch), transformer_ops)
    finally:
        for h in handles:
            h.remove()

    def uniform_forward():  # the same layers, every stage at T1 (SpikingModel.forward without transformers)
        h = model.encode(x, T)
        for stage in model.stages:
            h = stage(h)
        return model.classifier(model.head(h))

    uniform = parts(count_operations(model, uniform_forward, batch), [0.0] * (n - 1))
    return {"schedule": schedule, "uniform": uniform}
