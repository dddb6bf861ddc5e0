"""Synaptic operations and the usual energy estimate of a model, layer by layer.

For every ``Conv1d`` / ``Conv2d`` / ``Linear`` layer, on a batch run through the model:

- ``dense_ops``: multiply-accumulates per sample of a dense (non-spiking) evaluation, over all the
  steps the layer ran (a layer that runs T steps counts T times its per-step MACs): the sum over
  outputs of their fan-in, zero padding excluded (``conv(ones_input, ones_weight)``).
- the layer is **fed by spikes** when every input value is a non-negative integer (binary spikes,
  or the integer counts of a multi-level neuron), else by real values (the stem reading the
  analog input, a pooled average, a temporal transformer's weighted sum).
- ``acs``: accumulates of a spike-driven evaluation, per sample: each spike triggers one
  accumulate per synapse it reaches (``sum_i s_i * fanout_i``, exact at the borders: computed as
  ``conv(spikes, ones_weight)`` summed), and a count of k spikes k of them. ``macs``: the dense
  MACs of a layer fed by real values. A layer has one or the other.
- ``firing_rate``: the mean input value of a layer fed by spikes (spikes per input per step).

Energy (45 nm CMOS, Horowitz 2014, as the SNN literature uses it): 0.9 pJ per accumulate,
4.6 pJ per multiply-accumulate; ``energy_pj = 0.9 * acs + 4.6 * macs`` per sample.
Biases are not counted (one add per output, the same for every evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

AC_PJ = 0.9
MAC_PJ = 4.6
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass
class LayerOps:
    """The operations of one layer, per sample (summed over the steps it ran)."""

    name: str
    kind: str  # "Conv2d", "Conv1d", "Linear"
    fed_by_spikes: bool = True
    dense_ops: float = 0.0  # MACs of a dense evaluation
    acs: float = 0.0  # accumulates (spike-driven)
    macs: float = 0.0  # multiply-accumulates (real-valued input)
    steps: float = 0.0  # the steps the layer ran per sample (1 for a non-spiking model)
    input_sum: float = 0.0  # sum of the input values seen (spikes), per sample
    input_size: float = 0.0  # number of input values seen, per sample

    @property
    def firing_rate(self) -> float:
        """Mean input value (spikes per input per step) of a layer fed by spikes, else NaN."""
        return self.input_sum / self.input_size if self.fed_by_spikes and self.input_size else float("nan")

    @property
    def energy_pj(self) -> float:
        return AC_PJ * self.acs + MAC_PJ * self.macs


def _fanout_sum(layer: nn.Module, x: torch.Tensor) -> float:
    """``sum_out sum_in x_in * w_ones``: each input weighted by the number of outputs it reaches."""
    if isinstance(layer, nn.Linear):
        return float(x.double().sum()) * layer.out_features
    conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
    ones = torch.ones((layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size), dtype=torch.float64,
                      device=x.device)
    if layer.padding_mode != "zeros":
        raise ValueError(f"{layer}: only zero padding is counted (padding_mode={layer.padding_mode!r})")
    out = conv(x.double(), ones, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return float(out.sum())


def _is_spikes(x: torch.Tensor) -> bool:
    return bool(((x >= 0) & (x == x.round())).all())


@torch.no_grad()
def count_operations(model: nn.Module, run: Callable[[], object], batch_size: int) -> list[LayerOps]:
    """Run ``run()`` (a forward of ``model`` on a batch of ``batch_size`` samples) with hooks on every
    Conv1d / Conv2d / Linear of ``model``; return their operations per sample, in call order.

    Example::

        >>> ops = count_operations(model, lambda: model(x, T=4), batch_size=x.shape[0])
        >>> sum(o.energy_pj for o in ops)        # pJ per sample
    """
    records: dict[str, LayerOps] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def hook(layer, inputs):
        x = inputs[0]
        spikes = _is_spikes(x)
        dense = _fanout_sum(layer, torch.ones_like(x)) / batch_size
        per_step = layer.in_features if isinstance(layer, nn.Linear) else x[0].numel()
        rec = records.setdefault(names[layer], LayerOps(names[layer], type(layer).__name__))
        rec.fed_by_spikes = rec.fed_by_spikes and spikes
        rec.dense_ops += dense
        if spikes:
            rec.acs += _fanout_sum(layer, x) / batch_size
        else:
            rec.macs += dense
        rec.steps += x.numel() / (per_step * batch_size)
        rec.input_sum += float(x.double().sum()) / batch_size
        rec.input_size += x.numel() / batch_size

    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            handles.append(module.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return list(records.values())


def summarize(ops: list[LayerOps]) -> dict:
    """Totals per sample: ``acs``, ``macs``, ``dense_ops``, ``energy_pj`` (and ``energy_uj``)."""
    acs = sum(o.acs for o in ops)
    macs = sum(o.macs for o in ops)
    energy = AC_PJ * acs + MAC_PJ * macs
    return {"acs": acs, "macs": macs, "dense_ops": sum(o.dense_ops for o in ops), "energy_pj": energy,
            "energy_uj": energy * 1e-6}
