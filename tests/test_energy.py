"""tks.energy: synaptic operations, firing rates and energy on a hand-computed two-layer model; the
channel attention's own operations; the 1-D models (the CNN counted as one evaluation)."""
import pytest
import torch
from torch import nn

from tks import energy
from tks.models import ChannelAttention, build_model


class TwoLayer(nn.Module):
    """conv1 (1 -> 2 channels, k=3, padding 1) reads the real-valued input once (a static input);
    step t's spikes are ``conv1 >= t + 1`` (T=2); conv2 (2 -> 3, k=3, padding 1) reads them at both
    steps, as ``[T*B, 2, 5]``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 2, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(2, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[[0.0, 1.0, 0.0]], [[0.0, 0.5, 0.0]]]))  # x and x / 2
            self.conv2.weight.fill_(0.1)

    def forward(self, x):
        h = self.conv1(x)  # [B, 2, 5]
        spikes = torch.stack([(h >= 1).float(), (h >= 2).float()])  # [T=2, B, 2, 5]
        return self.conv2(spikes.flatten(0, 1))


def test_two_layer_model_by_hand():
    # sample 0: h = [2.5,0,0,0,0] and [1.25,0,0,0,0]: 2 spikes at step 1, 1 at step 2, all at the
    # border position 0; sample 1: h = [0,0,3.5,0,0] and [0,0,1.75,0,0]: 2 + 1 spikes at the inner
    # position 2
    x = torch.tensor([[[2.5, 0, 0, 0, 0]], [[0, 0, 3.5, 0, 0]]])
    model = TwoLayer()
    conv1, conv2 = energy.count_operations(model, lambda: model(x), batch_size=2)
    # conv1: fed by real values, one evaluation; fan-in of the 5 outputs 2, 3, 3, 3, 2 (zero padding
    # excluded), 2 output channels: 26 MACs per sample, dense or not
    assert (conv1.name, conv1.kind, conv1.fed_by_spikes) == ("conv1", "Conv1d", False)
    assert (conv1.macs, conv1.acs, conv1.dense_ops, conv1.steps) == (26, 0, 26, 1)
    assert conv1.firing_rate != conv1.firing_rate  # NaN: not fed by spikes
    # conv2: fed by spikes at 2 steps. A spike at a border position reaches 2 output positions x 3
    # channels = 6 synapses, an inner one 3 x 3 = 9: sample 0 has 3 x 6 = 18 ACs, sample 1 3 x 9 = 27
    assert conv2.fed_by_spikes and conv2.macs == 0
    assert conv2.acs == pytest.approx((18 + 27) / 2)
    assert conv2.dense_ops == pytest.approx(2 * 3 * 2 * (2 + 3 + 3 + 3 + 2))  # 2 steps x 78 MACs
    assert conv2.steps == 2
    assert conv2.firing_rate == pytest.approx(6 / 40)  # 6 spikes in 2 samples x 2 steps x 10 inputs
    total = energy.summarize([conv1, conv2])
    assert total["energy_pj"] == pytest.approx(0.9 * 22.5 + 4.6 * 26)
    assert total["energy_uj"] == pytest.approx(total["energy_pj"] * 1e-6)
    assert energy.mean_firing_rate([conv1, conv2]) == pytest.approx(6 / 40)
    # the same over two batches of one sample each: per-sample means weighted by batch size
    merged = energy.count_dataset_operations(model, [(lambda: model(x[:1]), 1), (lambda: model(x[1:]), 1)])
    assert [(o.acs, o.macs, o.dense_ops, o.firing_rate) for o in merged] == \
        [pytest.approx((o.acs, o.macs, o.dense_ops, o.firing_rate), nan_ok=True) for o in (conv1, conv2)]


def test_spike_counts_cost_one_accumulate_each():
    fc = nn.Linear(3, 4)
    (ops,) = energy.count_operations(fc, lambda: fc(torch.tensor([[0.0, 2.0, 1.0]])), batch_size=1)
    assert ops.fed_by_spikes and ops.acs == 3 * 4 and ops.dense_ops == 12 and ops.firing_rate == 1.0
    (ops,) = energy.count_operations(fc, lambda: fc(torch.tensor([[0.0, 0.5, 1.0]])), batch_size=1)
    assert not ops.fed_by_spikes and ops.macs == 12 and ops.acs == 0


def test_real_valued_layer_with_one_all_zero_call_is_all_macs():
    """A layer called step by step, whose real-valued input is all zeros at one step (a pooled map
    before any spike): the whole layer is fed by real values, every call costs its MACs (it used
    to count that step as 0 accumulates and the others as MACs)."""
    fc = nn.Linear(3, 4)

    def run():
        fc(torch.zeros(1, 3))
        fc(torch.tensor([[0.25, 0.5, 0.0]]))

    (ops,) = energy.count_operations(fc, run, batch_size=1)
    assert not ops.fed_by_spikes and ops.steps == 2
    assert (ops.macs, ops.acs, ops.dense_ops) == (24, 0, 24)
    # the same split over two batches
    (merged,) = energy.count_dataset_operations(fc, [(lambda: fc(torch.zeros(1, 3)), 1),
                                                    (lambda: fc(torch.tensor([[0.25, 0.5, 0.0]])), 1)])
    assert not merged.fed_by_spikes and (merged.macs, merged.acs) == (12, 0)  # per sample: one call each


def test_channel_attention_counts_its_pool_and_rescale():
    eca = ChannelAttention(4, kernel_size=3)
    x = torch.randn(6, 4, 10)  # e.g. T=3 steps x B=2
    ops = {o.kind: o for o in energy.count_operations(eca, lambda: eca(x), batch_size=2)}
    att, conv = ops["ChannelAttention"], ops["Conv1d"]
    assert (att.acs, att.macs, att.steps) == (120, 120, 3)  # per sample: 3 steps x 40 adds and 40 multiplies
    assert conv.macs == 3 * (2 + 3 + 3 + 2) and not conv.fed_by_spikes  # the gate's conv over 4 channels


def test_1d_models_snn_steps_and_cnn_once():
    x = torch.randn(4, 1, 64)
    T = 3
    for name in ("mra_snn", "snn1d", "cnn1d"):
        torch.manual_seed(0)
        model = build_model(name, num_classes=4, in_channels=1, signal_length=64, width=0.25).train()  # batch BN: spikes
        ops = energy.count_operations(model, lambda model=model: model(x, T=T), batch_size=4)
        by_name = {o.name: o for o in ops}
        stem = [o for n, o in by_name.items() if n.startswith("stem.branches")]
        assert len(stem) == 3 and all(o.steps == 1 and not o.fed_by_spikes for o in stem)  # once per window
        rest = [o for n, o in by_name.items() if not n.startswith("stem.")]
        if name == "cnn1d":  # one evaluation: every layer once, all MACs
            assert all(o.steps == 1 and o.acs == 0 and o.macs > 0 for o in rest)
        else:  # every convolution after the stem is fed by spikes (SEW: counts) at each of the T steps
            convs = [o for o in rest if o.kind == "Conv1d" and ".attention." not in o.name]
            assert convs and all(o.fed_by_spikes and o.steps == T and o.macs == 0 for o in convs)
            assert by_name["classifier.module"].macs > 0  # the pooled spike counts are real values
        attention = [o for o in ops if o.kind == "ChannelAttention"]
        assert len(attention) == (10 if name == "mra_snn" else 0)  # the encoder's + 9 attention neurons'


@pytest.mark.parametrize("name,size,width", [("convsnn", 8, 0.5), ("sew_resnet19", 16, 0.0625)])
def test_image_models_stem_real_then_spikes(name, size, width):
    """Every model is counted the same way: the stem reads the image once (MACs); a convolution
    reading spikes (SEW: spike counts) costs accumulates at each step, one reading an average
    pool of spikes (ConvSNN's third conv) MACs."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3, image_size=size, width=width).train()
    ops = energy.count_operations(model, lambda: model(torch.rand(4, 3, size, size), T=2), batch_size=4)
    stem, *rest = ops
    assert stem.name == "stem.0" and not stem.fed_by_spikes and stem.steps == 1 and stem.macs > 0
    convs = [o for o in rest if o.kind == "Conv2d"]
    assert convs and all(o.steps == 2 for o in convs)
    pooled = {"stages.2.0.module.0"} if name == "convsnn" else set()  # after stage 1's 2x2 average pool
    for o in convs:
        if o.name in pooled:
            assert not o.fed_by_spikes and o.macs == o.dense_ops and o.acs == 0, o
        else:
            assert o.fed_by_spikes and o.acs > 0 and o.macs == 0, o
