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
  MACs of a layer fed by real values. A layer has one or the other, decided over every call of
  the layer in the run (and every batch of ``count_dataset_operations``): one non-integer input
  value anywhere and all its inputs are real values, costing MACs (a step whose real-valued
  input happens to be all zeros, or integral, does not count as spikes on its own).
- ``firing_rate``: the mean input value of a layer fed by spikes (spikes per input per step).
- Modules with an ``elementwise_operations(x) -> (adds, multiplies)`` method (the channel
  attention, ``tks.models.attention.ChannelAttention``: its pool's adds and its rescale's
  multiplies) are counted too, as their own entry: the adds as accumulates, the multiplies as
  MACs (a multiply costs nearly a MAC), the same in a dense and a spike-driven evaluation.

Energy (45 nm CMOS, Horowitz 2014, as the SNN literature uses it): 0.9 pJ per accumulate,
4.6 pJ per multiply-accumulate; ``energy_pj = 0.9 * acs + 4.6 * macs`` per sample.
Biases are not counted (one add per output, the same for every evaluation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

AC_PJ = 0.9
MAC_PJ = 4.6
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass
class LayerOps:
    """The operations of one layer, per sample (summed over the steps it ran). ``acs`` and ``macs``
    follow from the sums and from ``fed_by_spikes`` (every input value seen a non-negative integer)."""

    name: str
    kind: str  # "Conv2d", "Conv1d", "Linear", or an elementwise module's class name
    fed_by_spikes: bool = True
    dense_ops: float = 0.0  # MACs of a dense evaluation (adds + multiplies of an elementwise module)
    fanout_sum: float = 0.0  # sum of input value x fan-out: the accumulates when the input is spikes
    steps: float = 0.0  # the steps the layer ran per sample (1 for a non-spiking model)
    input_sum: float = 0.0  # sum of the input values seen (spikes), per sample
    input_size: float = 0.0  # number of input values seen, per sample
    synaptic: bool = True  # a Conv / Linear layer; False: an elementwise module (its own adds, multiplies)
    adds: float = 0.0  # of an elementwise module
    multiplies: float = 0.0  # of an elementwise module

    @property
    def acs(self) -> float:
        """Accumulates per sample: spike-driven (a layer fed by spikes), or an elementwise module's adds."""
        if not self.synaptic:
            return self.adds
        return self.fanout_sum if self.fed_by_spikes else 0.0

    @property
    def macs(self) -> float:
        """Multiply-accumulates per sample: the dense ones of a layer fed by real values, or an
        elementwise module's multiplies."""
        if not self.synaptic:
            return self.multiplies
        return 0.0 if self.fed_by_spikes else self.dense_ops

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
        per_step = layer.in_features if isinstance(layer, nn.Linear) else x[0].numel()
        rec = records.setdefault(names[layer], LayerOps(names[layer], type(layer).__name__))
        rec.fed_by_spikes = rec.fed_by_spikes and _is_spikes(x)
        rec.dense_ops += _fanout_sum(layer, torch.ones_like(x)) / batch_size
        rec.fanout_sum += _fanout_sum(layer, x) / batch_size
        rec.steps += x.numel() / (per_step * batch_size)
        rec.input_sum += float(x.double().sum()) / batch_size
        rec.input_size += x.numel() / batch_size

    def elementwise_hook(module, inputs):
        x = inputs[0]
        adds, multiplies = module.elementwise_operations(x)
        rec = records.setdefault(names[module], LayerOps(names[module], type(module).__name__, fed_by_spikes=False,
                                                          synaptic=False))
        rec.adds += adds / batch_size
        rec.multiplies += multiplies / batch_size
        rec.dense_ops += (adds + multiplies) / batch_size
        rec.steps += x.numel() / (x[0].numel() * batch_size)

    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            handles.append(module.register_forward_pre_hook(hook))
        elif callable(getattr(module, "elementwise_operations", None)):
            handles.append(module.register_forward_pre_hook(elementwise_hook))
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


# ---------------------------------------------------------------------------------------------- over a dataset

@torch.no_grad()
def count_dataset_operations(model: nn.Module, batches: Iterable[tuple[Callable[[], object], int]]) -> list[LayerOps]:
    """``count_operations`` over several batches, ``batches`` yielding ``(run, batch_size)``: the
    per-sample figures averaged over all the samples (each batch weighted by its size); a layer is
    fed by spikes if it was in every batch."""
    totals: dict[str, LayerOps] = {}
    n = 0
    for run, batch_size in batches:
        for o in count_operations(model, run, batch_size):
            t = totals.setdefault(o.name, LayerOps(o.name, o.kind, synaptic=o.synaptic))
            t.fed_by_spikes = t.fed_by_spikes and o.fed_by_spikes
            for f in _PER_SAMPLE:
                setattr(t, f, getattr(t, f) + getattr(o, f) * batch_size)
        n += batch_size
    if n == 0:
        raise ValueError("count_dataset_operations: no batches (an empty test set?)")
    for t in totals.values():
        for f in _PER_SAMPLE:
            setattr(t, f, getattr(t, f) / n)
    return list(totals.values())


_PER_SAMPLE = ("dense_ops", "fanout_sum", "adds", "multiplies", "steps", "input_sum", "input_size")


def mean_firing_rate(ops: list[LayerOps]) -> float:
    """Spikes per input per step over every layer fed by spikes (their inputs pooled), NaN if none."""
    spiking = [o for o in ops if o.fed_by_spikes and o.input_size]
    size = sum(o.input_size for o in spiking)
    return sum(o.input_sum for o in spiking) / size if size else float("nan")


def format_energy_table(results: list[dict]) -> str:
    """One row per run (``results``: ``{"label", "ops": [LayerOps]}``): the steps it ran (its T, or 1
    for a model evaluated once), synaptic operations per sample (accumulates, MACs, in millions),
    the mean firing rate, the energy (uJ) and its ratio to the energy of each non-spiking run (a
    run none of whose layers is fed by spikes)."""
    dense = [r for r in results if not any(o.fed_by_spikes for o in r["ops"])]
    width = max(len(r["label"]) for r in results)
    ratio_heads = "".join(f"  x {r['label'][:14]:<14}" for r in dense)
    head = f"{'run':<{width}}  {'steps':>5}  {'ACs (M)':>9}  {'MACs (M)':>9}  {'rate':>6}  {'energy (uJ)':>11}" + ratio_heads
    lines = [head, "-" * len(head)]
    for r in results:
        s = summarize(r["ops"])
        rate = mean_firing_rate(r["ops"])
        ratios = "".join(f"  {s['energy_pj'] / summarize(d['ops'])['energy_pj']:>16.3f}" for d in dense)
        steps = max((o.steps for o in r["ops"]), default=0)  # T, or 1 for a model evaluated once (cnn1d)
        lines.append(f"{r['label']:<{width}}  {steps:5.0f}  {s['acs'] / 1e6:9.3f}  {s['macs'] / 1e6:9.3f}  "
                     f"{'-' if math.isnan(rate) else f'{rate:.3f}':>6}  {s['energy_uj']:11.4f}" + ratios)
    return "\n".join(lines)


def format_layer_table(label: str, ops: list[LayerOps]) -> str:
    """Per layer of one run: kind, input (spikes / real), firing rate, steps, ACs, MACs, energy (nJ)."""
    width = max([len(o.name) for o in ops] + [5])
    head = (f"{'layer':<{width}}  {'kind':<16}  {'input':<6}  {'rate':>6}  {'steps':>5}  {'ACs (k)':>10}  "
            f"{'MACs (k)':>10}  {'energy (nJ)':>11}")
    lines = [f"{label}:", head, "-" * len(head)]
    for o in ops:
        rate = o.firing_rate
        lines.append(f"{o.name:<{width}}  {o.kind:<16}  {'spikes' if o.fed_by_spikes else 'real':<6}  "
                     f"{'-' if math.isnan(rate) else f'{rate:.3f}':>6}  {o.steps:5.0f}  {o.acs / 1e3:10.1f}  "
                     f"{o.macs / 1e3:10.1f}  {o.energy_pj / 1e3:11.2f}")
    return "\n".join(lines)
