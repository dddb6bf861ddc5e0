"""tks.ILIFNode / tks.MultiBitLIFNode against spikingjelly 2.0.0's ILIFNode (integer spike counts):
counts, v, v_seq and gradients across calls and after reset in both step modes; replace_neurons on
a model of ILIFNodes; the model layer's I-LIF neuron and tks-train --neuron ilif."""
import copy

import pytest
import torch
import torch.nn as nn

import tks
from tks.models import MultiStepLIF, NeuronConfig, build_model

from _utils import assert_equal
from test_neuron import check_against_spikingjelly, inputs

from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

CONFIGS = {
    "default": ({}, lambda: surrogate.MultiLevelSpikeCount(4)),
    "D1-detach-vseq": ({"detach_reset": True, "store_v_seq": True}, lambda: surrogate.MultiLevelSpikeCount(1)),
    "D15-tau2-th0.7-narrow": ({"tau": 2.0, "v_threshold": 0.7},
                              lambda: surrogate.MultiLevelSpikeCount(15, grad_window=(0.5, 10.0))),
    "D2-wide-vseq": ({"tau": 1.5, "store_v_seq": True}, lambda: surrogate.MultiLevelSpikeCount(2, grad_window=(-1.0, 4.0))),
}


@pytest.mark.parametrize("backend", ["auto", "triton"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_matches_spikingjelly_ilif(device, config, step_mode, backend):
    kwargs, make_surrogate = CONFIGS[config]
    fn = make_surrogate()
    ours = tks.ILIFNode(**kwargs, surrogate_function=fn, step_mode=step_mode, backend=backend).to(device)
    ref = neuron.ILIFNode(**kwargs, surrogate_function=fn, step_mode=step_mode)
    assert isinstance(ours, neuron.ILIFNode) and isinstance(ours, neuron.LIFNode)
    check_against_spikingjelly(ours, ref, step_mode, device=device)
    ours.reset()
    ref.reset()
    assert ours.v == ref.v == 0.0 and ours.v_seq is None
    check_against_spikingjelly(ours, ref, step_mode, shapes=((3, 2, 7), (5, 4, 2)), seed=7, device=device)


def test_counts_are_integers_up_to_D_and_window_changes_are_read():
    fn = surrogate.MultiLevelSpikeCount(3)
    node = tks.ILIFNode(surrogate_function=fn, step_mode="m")
    x = inputs((4, 3, 5), 0) * 3
    counts = node(x)
    assert counts.max() <= 3 and torch.equal(counts, counts.round()) and counts.max() > 1
    node.reset()
    fn.max_spike_count = 1  # read at the next call, as spikingjelly reads it
    assert node(x).max() <= 1


def test_multibit_neuron_levels():
    for bits in (1, 2, 3):
        node = tks.MultiBitLIFNode(bits=bits, step_mode="m")
        assert node.surrogate_function.max_spike_count == 2**bits - 1
        ref = neuron.ILIFNode(surrogate_function=surrogate.MultiLevelSpikeCount(2**bits - 1), step_mode="m")
        assert_equal(node(inputs((4, 3, 5), bits) * 4), ref(inputs((4, 3, 5), bits) * 4), f"{bits}-bit counts")
    with pytest.raises(ValueError, match="bits must be in 1..24"):
        tks.MultiBitLIFNode(bits=0)


@pytest.mark.parametrize("make, error, match", [
    (lambda: tks.ILIFNode(surrogate_function=surrogate.Sigmoid()), ValueError, "spiking MultiLevelSpikeCount"),
    (lambda: tks.ILIFNode(surrogate_function=surrogate.MultiLevelSpikeCount(2, spiking=False)), ValueError,
     "spiking MultiLevelSpikeCount"),
    (lambda: tks.ILIFNode(tau=1.0), ValueError, "tau must be > 1"),
    (lambda: tks.ILIFNode(v_threshold=0.0), ValueError, "v_threshold must be > 0"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_replace_neurons_maps_ilif():
    torch.manual_seed(0)
    before = nn.Sequential(layer.Linear(5, 6), neuron.ILIFNode(surrogate_function=surrogate.MultiLevelSpikeCount(3)),
                           layer.Linear(6, 4), neuron.ILIFNode(tau=2.0, detach_reset=True))
    functional.set_step_mode(before, "m")
    after = copy.deepcopy(before)
    assert tks.replace_neurons(after) == 2
    assert type(after[1]) is tks.ILIFNode and type(after[3]) is tks.ILIFNode
    assert after[1].surrogate_function.max_spike_count == 3 and after[3].tau == 2.0 and after[3].detach_reset
    x = inputs((4, 2, 5), 1) * 3
    assert_equal(after(x), before(x), "outputs after the swap")
    ga, gb = (torch.autograd.grad(net(x).sum(), x)[0] for net in (after, before))
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def test_model_layer_ilif_neuron():
    cfg = NeuronConfig.ilif(3)
    layer_ = MultiStepLIF(cfg)
    x = torch.randn(4, 3, 20) * 2
    ref = neuron.ILIFNode(surrogate_function=surrogate.MultiLevelSpikeCount(3), step_mode="m")
    assert_equal(layer_(x), ref(x), "MultiStepLIF(NeuronConfig.ilif(3))")
    model = build_model("convsnn", num_classes=10, in_channels=1, image_size=8, width=0.25, neuron=cfg)
    out = model(torch.rand(2, 1, 8, 8), T=3)
    assert out.shape == (3, 2, 10)
    assert NeuronConfig(**{**cfg.__dict__, "grad_window": [0.0, 3.0]}).grad_window == (0.0, 3.0)


def test_tks_train_two_bit_model(tmp_path, capsys):
    """The one command of the README: a 2-bit model on the offline default; the run folder records it
    so tks-eval rebuilds the model."""
    import json

    from tks import eval as tks_eval
    from tks import train

    out = tmp_path / "bits"
    args = ["--dataset", "digits", "--model", "convsnn", "--width", "0.25", "--T", "2", "--batch-size", "32",
            "--max-batches", "2", "--epochs", "1", "--method", "ce", "--neuron", "ilif", "--spike-bits", "2",
            "--out", str(out)]
    assert train.main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["neuron_type"] == "ilif" and config["max_spike_count"] == 3
    assert config["neuron"]["max_spike_count"] == 3 and config["neuron"]["v_reset"] is None
    assert tks_eval.main([str(out), "--out", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "x"), "--spike-bits", "2"])
    assert "add --neuron ilif" in capsys.readouterr().err
