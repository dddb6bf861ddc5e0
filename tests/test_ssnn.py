"""SSNN (tks.methods.ssnn, tks.models.shrinking): the temporal transformer (area-averaging init, one
matmul, gradients), the stage boundaries of every zoo model at a shrinking schedule, the loss against
its parts, the early classifiers kept out of the deployed model, the cost and average-timestep
figures on hand-computed models, tks-train / tks-eval end to end with an exact resume, bad options."""
import contextlib
import csv
import json
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tks_kernels
from tks import eval as tks_eval
from tks import runs, train
from tks.data.common import DataInfo
from tks.methods import METHODS, MethodNet, build_method, resolve_hparams
from tks.methods.ssnn import SSNN, default_stage_T
from tks.models import MultiStepLIF, NeuronConfig, PerStep, SpikingModel, build_model
from tks.models.shrinking import (ShrinkingSNN, TemporalTransformer, area_average_weights, schedule_operations,
                                  temporal_transform)

from _utils import assert_equal, assert_rel_close
from test_train import _assert_same_run, _one_line_error

TOL = 1e-5
STATIC = DataInfo("digits", 10, 1, 8, True, "convsnn", lam=0.7, temperature=3.0)
EVENTS = DataInfo("events", 10, 2, 8, False, "convsnn", lam=0.3, temperature=5.0)
STAGES = {"convsnn": 3, "vggsnn": 4, "resnet19": 3, "sew_resnet19": 3}


# ---------------------------------------------------------------- the temporal transformer


def test_area_average_weights_hand_computed():
    third = 1 / 3
    torch.testing.assert_close(area_average_weights(3, 2), torch.tensor([[2 * third, third, 0], [0, third, 2 * third]]))
    # integer ratio: plain means of 2 adjacent steps
    torch.testing.assert_close(area_average_weights(6, 3), torch.tensor([[.5, .5, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0],
                                                                          [0, 0, 0, 0, .5, .5]]))
    # 8 -> 5: each output covers 1.6 input steps, the edges fractional
    w = area_average_weights(8, 5)
    torch.testing.assert_close(w[0], torch.tensor([1, .6, 0, 0, 0, 0, 0, 0]) / 1.6)
    torch.testing.assert_close(w[1], torch.tensor([0, .4, 1, .2, 0, 0, 0, 0]) / 1.6)
    torch.testing.assert_close(w[4], torch.tensor([0, 0, 0, 0, 0, 0, .6, 1]) / 1.6)
    assert torch.equal(area_average_weights(4, 4), torch.eye(4))
    with pytest.raises(ValueError, match="T_out=0 must be an integer >= 1"):
        area_average_weights(4, 0)


@pytest.mark.parametrize("T_in, T_out", [(8, 5), (10, 3), (6, 2), (7, 1), (3, 5)])
def test_rows_sum_to_one_and_a_constant_stays_constant(T_in, T_out):
    w = area_average_weights(T_in, T_out)
    assert w.shape == (T_out, T_in) and (w >= 0).all()
    torch.testing.assert_close(w.double().sum(1), torch.ones(T_out, dtype=torch.float64), rtol=0, atol=1e-6)
    # every input step counts alike: each column sums to T_out / T_in, so the mean over time is kept
    torch.testing.assert_close(w.double().sum(0) * T_in / T_out, torch.ones(T_in, dtype=torch.float64), rtol=0,
                               atol=1e-6)
    x = torch.full((T_in, 2, 3, 4), 0.75)
    torch.testing.assert_close(TemporalTransformer(T_in, T_out)(x), torch.full((T_out, 2, 3, 4), 0.75))


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_one_matmul_no_copy_of_a_contiguous_input():
    w = torch.rand(3, 5)
    x = torch.rand(5, 2, 4, 3, 3)
    with _Ops() as mode:
        y = temporal_transform(x, w)
    assert mode.ops.count("mm") == 1 and not {"clone", "copy_", "_to_copy", "contiguous", "bmm"} & set(mode.ops), \
        mode.ops
    assert_rel_close(y, torch.einsum("jk,k...->j...", w, x), TOL, "transform vs einsum")
    # a non-contiguous input (time not outermost in memory) is still right
    xt = torch.rand(2, 5, 4, 3, 3).transpose(0, 1)
    assert_rel_close(temporal_transform(xt, w), torch.einsum("jk,k...->j...", w, xt), TOL, "non-contiguous")
    # any float dtype: W is cast to the input's
    assert temporal_transform(x.double(), w).dtype == torch.float64
    with pytest.raises(ValueError, match="T_in=5"):
        temporal_transform(torch.rand(4, 2), w)


def test_fixed_gets_no_gradient_learned_does():
    x = torch.rand(6, 2, 3, requires_grad=True)
    g = torch.rand(4, 2, 3)
    fixed = TemporalTransformer(6, 4, learnable=False)
    assert not list(fixed.parameters()) and "weight" in dict(fixed.named_buffers())
    assert "weight" in fixed.state_dict() and not fixed.weight.requires_grad
    (fixed(x) * g).sum().backward()
    torch.testing.assert_close(x.grad, torch.einsum("jk,j...->k...", fixed.weight, g))  # the input still learns
    learned = TemporalTransformer(6, 4)
    assert [n for n, _ in learned.named_parameters()] == ["weight"]
    torch.testing.assert_close(learned.weight, fixed.weight)  # the same initial averaging
    (learned(x.detach()) * g).sum().backward()
    # dL/dW[j, k] = sum over the rest of g[j] * x[k]
    torch.testing.assert_close(learned.weight.grad, torch.einsum("j...,k...->jk", g, x.detach()))
    opt = torch.optim.AdamW(list(learned.parameters()) + list(fixed.parameters()), lr=0.1)
    before = fixed.weight.clone()
    opt.step()
    assert torch.equal(fixed.weight, before) and not torch.equal(learned.weight, before)


# ---------------------------------------------------------------- the shrinking network on every zoo model


def small_model(name="convsnn", info=STATIC, seed=0):
    torch.manual_seed(seed)
    size = 16 if name == "vggsnn" else info.image_size
    return build_model(name, num_classes=info.num_classes, in_channels=info.in_channels, image_size=size,
                       width=0.125 if name != "convsnn" else 0.5)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_boundaries_of_every_zoo_model(name):
    """Each stage's output at its own T, with the channels and the spatial size the model declares
    (VGG-SNN halves at each of its 4 pools, ResNet-19 at its 2nd and 3rd block groups, ConvSNN's
    first stage is the stem's spikes, then its two pooled conv blocks)."""
    info = {"vggsnn": DataInfo("e", 10, 2, 16, False, "vggsnn", 0.3, 5.0),
            "convsnn": STATIC}.get(name, DataInfo("c", 10, 3, 8, True, "resnet19", 0.7, 3.0))
    base = small_model(name, info).eval()
    n = STAGES[name]
    assert len(base.stages) == len(base.stage_channels) == n
    stage_T = default_stage_T(n + 1, n)  # 4,3,1 / 5,4,3,1
    net = ShrinkingSNN(base, stage_T).eval()
    size = {"vggsnn": [8, 4, 2, 1], "convsnn": [8, 4, 2]}.get(name, [8, 4, 2])
    B = 2
    x = torch.rand(B, info.in_channels, 8, 8) if info.static else torch.rand(stage_T[0], B, 2, 16, 16)
    args = (x, stage_T[0]) if info.static else (x, None)
    run = net.run(*args, taps=tuple(range(n)))
    for i in range(n):
        assert run.taps[i].shape == (stage_T[i], B, base.stage_channels[i], size[i], size[i]), (i, run.taps[i].shape)
    assert run.logits.shape == (stage_T[-1], B, 10)
    assert_equal(net(*args), run.logits, "forward vs run")
    # the same modules (and names) as the zoo model, plus one transformer per boundary
    keys = set(net.state_dict())
    assert keys - set(base.state_dict()) == {f"transformers.{i}.weight" for i in range(n - 1)}
    assert net.stages is base.stages and isinstance(net.first_spiking_layer, MultiStepLIF)


def test_shrinking_forward_by_hand_and_wrong_input_steps():
    base = small_model().eval()
    net = ShrinkingSNN(base, (3, 2, 1)).eval()
    with torch.no_grad():
        net.transformers[0].weight.copy_(torch.rand(2, 3))  # a learned-looking W, not the averaging
    x = torch.rand(2, 1, 8, 8) * 2
    h = base.stages[0](base.encode(x, 3))
    h = base.stages[1](torch.einsum("jk,k...->j...", net.transformers[0].weight, h))
    h = base.stages[2](torch.einsum("jk,k...->j...", net.transformers[1].weight, h))
    assert_rel_close(net(x, 3), base.classifier(base.head(h)), TOL, "shrinking forward")
    with pytest.raises(ValueError, match="input has T1 = 3 steps, got 2"):
        net(x, 2)
    with pytest.raises(ValueError, match="ConvSNN has 3 stages"):
        ShrinkingSNN(base, (3, 1))
    with pytest.raises(ValueError, match="strictly decreasing"):
        ShrinkingSNN(base, (3, 3, 1))


# ---------------------------------------------------------------- the method


def method(info=STATIC, T=3, **given):
    hparams = resolve_hparams("ssnn", given, info, T)
    return build_method("ssnn", hparams, epochs=4, T=T, static=info.static)


def config_for(m, info=STATIC, name="convsnn", width=0.5):
    return dict(model=name, num_classes=info.num_classes, in_channels=info.in_channels, image_size=info.image_size,
                width=width, T=m.T, neuron=asdict(NeuronConfig()), **m.hparams)


def by_hand(net, inputs, T):
    """The shrinking forward and the early classifiers written out: (final logits, [ec logits])."""
    model, ecs = net.model, net.extras
    h = model.encode(inputs, T)
    early = []
    for i, stage in enumerate(model.stages):
        h = stage(h)
        if i < len(model.stages) - 1:
            early.append(ecs[f"ec{i + 1}"].fc(h.flatten(3).mean(3)))
            h = torch.einsum("jk,k...->j...", model.transformers[i].weight, h)
    return model.classifier(model.head(h)), early


@pytest.mark.parametrize("info, final", [(STATIC, "ce"), (EVENTS, "tks")], ids=["static-ce", "events-tks"])
def test_ssnn_loss_is_its_parts(info, final):
    m = method(info, T=3, stage_T=[3, 2, 1], ec_weights=[0.5, 2.0], final_loss=final)
    m.set_epoch(2)
    torch.manual_seed(0)
    net = MethodNet(SSNN.build_model(config_for(m, info)), m, info)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2 if info.static else (torch.rand(4, 3, 2, 8, 8, generator=g) < .3).float()
    y = torch.randint(0, 10, (4,), generator=g)
    outputs = net(x)
    loss, parts = m.loss(outputs, y)
    z, (ec1, ec2) = by_hand(net, x if info.static else x.transpose(0, 1), 3 if info.static else None)
    assert_rel_close(outputs["logits"], z, TOL, "final logits")
    assert outputs["ec1_logits"].shape == (3, 4, 10) and outputs["ec2_logits"].shape == (2, 4, 10)
    assert_rel_close(outputs["ec1_logits"], ec1, TOL, "early classifier 1")
    assert_rel_close(outputs["ec2_logits"], ec2, TOL, "early classifier 2")
    ce = lambda logits: F.cross_entropy(logits.double().mean(0), y)  # noqa: E731
    if final == "ce":
        expected_final = ce(z)
        assert set(parts) == {"final", "ec1", "ec2"}
    else:
        assert m.lam == pytest.approx(0.3 * 2 / 4)  # DVS data: lam 0.3, ramped over the 4 epochs
        expected_final = tks_kernels.tks_loss_reference(z.double(), y, lam=m.lam, temperature=5.0)
        assert set(parts) == {"final", "final_ce", "final_kd", "final_selected", "ec1", "ec2"}
    assert_rel_close(parts["final"], expected_final, TOL, "final loss")
    assert_rel_close(loss, expected_final + 0.5 * ce(ec1) + 2.0 * ce(ec2), TOL, "ssnn loss")
    loss.backward()
    assert net.model.transformers[0].weight.grad.abs().sum() > 0 and net.extras["ec1"].fc.weight.grad.abs().sum() > 0


def test_defaults_and_the_recorded_options():
    m = method(T=8)
    assert m.hparams == {"stage_T": None, "temporal_transformer": "learned", "ec_weights": None, "final_loss": "ce"}
    net = MethodNet(SSNN.build_model(config_for(m)), m, STATIC)
    assert net.model.stage_T == (8, 5, 3) and net.model.average_timesteps == pytest.approx(16 / 3)
    assert m.hparams["stage_T"] == [8, 5, 3] and m.hparams["ec_weights"] == [1.0, 1.0]  # what the config records
    assert default_stage_T(10, 4) == [10, 8, 5, 3] and default_stage_T(3, 3) == [3, 2, 1]
    assert method(final_loss="tks").hparams["lam"] == 0.7  # --final-loss tks: tks's defaults for the data
    assert method(final_loss="ls", label_smoothing=0.2).hparams["label_smoothing"] == 0.2
    fixed = MethodNet(SSNN.build_model(config_for(method(temporal_transformer="fixed"))),
                      method(temporal_transformer="fixed"), STATIC)
    assert not [n for n, _ in fixed.named_parameters() if "transformers" in n]


def test_early_classifiers_are_not_called_in_eval():
    """The deployed model (and tks-train's test pass) never runs the early classifiers: they are in
    the method's extras, not in the model, and their forward hooks see nothing in evaluation."""
    m = method(T=3)
    net = MethodNet(SSNN.build_model(config_for(m)), m, STATIC)
    calls = []
    for ec in net.extras.values():
        ec.register_forward_hook(lambda *a: calls.append(1))
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    net(x)
    assert len(calls) == 2  # the hooks do fire: in the training forward
    calls.clear()
    loss, acc = train._evaluate(net.model, [(x, y)], 3, True, torch.device("cpu"), 1, contextlib.nullcontext)
    assert calls == [] and 0 <= acc <= 1
    assert not [k for k in net.model.state_dict() if k.startswith(("extras", "ec"))]
    assert set(net.extras) == {"ec1", "ec2"}


class _Tiny(SpikingModel):
    """A model whose operations are counted by hand: signals [B, 1, L=5], two stages."""

    spatial_dims = 1

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(1, 2, 1, bias=False)                                           # 2*5*1 = 10 per step
        self.stages = nn.ModuleList([
            nn.Sequential(MultiStepLIF(), PerStep(nn.Conv1d(2, 3, 3, padding=1, bias=False))),  # 3*2*(2+3+3+3+2) = 78
            nn.Sequential(MultiStepLIF(), PerStep(nn.Conv1d(3, 4, 1))),                       # 4*3*5 = 60
        ])
        self.stage_channels = (3, 4)
        self.head = PerStep(nn.Flatten())
        self.classifier = PerStep(nn.Linear(20, 5))                                          # 20*5 = 100


@pytest.mark.parametrize("static", [True, False], ids=["static", "sequence"])
def test_cost_and_average_timesteps_hand_computed(static):
    net = ShrinkingSNN(_Tiny(), (4, 2))
    x = torch.rand(3, 1, 5) if static else torch.rand(4, 3, 1, 5)
    ops = schedule_operations(net, x, 4 if static else None)
    stem = 10 if static else 40  # a static input is encoded once
    # schedule: stage 1 at 4 steps, the transformer 2*4 MACs per neuron of its 3*5, stage 2 and the head at 2
    assert ops["schedule"] == {"stem": stem, "stages": [78 * 4, 60 * 2], "transformers": [2 * 4 * 15], "head": 100 * 2}
    assert ops["uniform"] == {"stem": stem, "stages": [78 * 4, 60 * 4], "transformers": [0.0], "head": 100 * 4}
    assert net.average_timesteps == 3.0


# ---------------------------------------------------------------- tks-train / tks-eval end to end

TINY = ["--dataset", "digits", "--model", "convsnn", "--width", "0.25", "--T", "4", "--batch-size", "32",
        "--max-batches", "2", "--epochs", "2"]


@pytest.fixture(scope="module")
def ssnn_runs(tmp_path_factory):
    """digits: an ssnn run (learned transformers, final loss ce) and a ce run beside it."""
    root = tmp_path_factory.mktemp("ssnn")
    args = TINY + ["--method", "ssnn", "--stage-T", "4,3,1", "--ec-weights", "1,0.5"]
    assert train.main(args + ["--out", str(root / "ssnn")]) == 0
    assert train.main(TINY + ["--method", "ce", "--out", str(root / "ce")]) == 0
    return root


@pytest.fixture(scope="module")
def events_runs(tmp_path_factory):
    """digits-events (frames, 2x16x16): ssnn with fixed transformers and the tks final loss, straight
    and interrupted after epoch 1, then resumed."""
    root = tmp_path_factory.mktemp("ssnn-events")
    args = ["--dataset", "digits-events", "--data-dir", str(root / "data"), *TINY[2:], "--method", "ssnn",
            "--temporal-transformer", "fixed", "--final-loss", "tks"]
    assert train.main(args + ["--out", str(root / "straight")]) == 0
    assert train.main(args + ["--out", str(root / "resumed"), "--stop-after-epoch", "1"]) == 0
    torch.manual_seed(1234)  # the resumed process starts from another RNG state: the checkpoint's must win
    assert train.main(["--out", str(root / "resumed"), "--resume", "--max-batches", "2"]) == 0
    return root


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_run_folder(ssnn_runs):
    out = ssnn_runs / "ssnn"
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["stage_T"], config["ec_weights"]) == ("ssnn", [4, 3, 1], [1.0, 0.5])
    assert (config["temporal_transformer"], config["final_loss"]) == ("learned", "ce") and "lam" not in config
    rows = _rows(out / "metrics.csv")
    assert {"train_final", "train_ec1", "train_ec2"} <= set(rows[0])
    for r in rows:  # the logged loss is the weighted sum of the logged parts
        parts = float(r["train_final"]) + float(r["train_ec1"]) + 0.5 * float(r["train_ec2"])
        assert float(r["train_loss"]) == pytest.approx(parts, rel=1e-5)
    ckpt = runs.load_checkpoint(str(out / "checkpoint.pt"))
    assert set(ckpt["method"]) == {"ec1.fc.weight", "ec1.fc.bias", "ec2.fc.weight", "ec2.fc.bias"}
    assert not torch.equal(ckpt["model"]["transformers.0.weight"], area_average_weights(4, 3))  # trained
    model = runs.model_from_config(config)  # what tks-eval rebuilds from config.json
    model.load_state_dict(ckpt["model"])
    assert isinstance(model, ShrinkingSNN) and model.stage_T == (4, 3, 1)


def test_resume_equals_uninterrupted_run_on_digits_events(events_runs):
    straight, resumed = events_runs / "straight", events_runs / "resumed"
    config = json.loads((straight / "config.json").read_text())
    assert (config["static"], config["stage_T"], config["final_loss"]) == (False, [4, 3, 1], "tks")  # the default
    assert (config["lam"], config["temperature"]) == (0.3, 5.0)  # tks's defaults for event data
    assert {"train_final", "train_final_kd", "train_ec1", "train_ec2"} <= set(_rows(straight / "metrics.csv")[0])
    _assert_same_run(straight, resumed)
    a, b = (runs.load_checkpoint(str(d / "checkpoint.pt")) for d in (straight, resumed))
    assert a["method"] and all(torch.equal(v, b["method"][k]) for k, v in a["method"].items())
    assert torch.equal(a["model"]["transformers.0.weight"], area_average_weights(4, 3))  # fixed: never trained


def test_eval_on_digits_events(events_runs):
    result = tks_eval.evaluate_run(str(events_runs / "straight"))
    final = _rows(events_runs / "straight" / "metrics.csv")[-1]
    assert result["timesteps"][0][:2] == (4, pytest.approx(float(final["test_acc"]), abs=1e-6))
    (schedule,), exits = (t["rows"] for t in result["tables"])
    # 2x16x16 frames, c = 4: the stem 2->4 on 16x16 (46^2 = 2116 in-bounds taps) runs all 4 steps: 16928 each;
    # 4->8 on 16x16 67712, 8->8 on 8x8 30976, the classifier 1280; transformers 3*4*1024, 1*3*512
    uniform = 4 * (16928 + 67712 + 30976 + 1280)
    schedule_ops = 4 * 16928 + 3 * 4 * 1024 + 3 * 67712 + 1 * 3 * 512 + 30976 + 1280
    assert float(schedule[-1]) == pytest.approx(schedule_ops / uniform, abs=1e-6)
    assert [row[0] for row in exits] == ["ec1", "ec2", "final"]


def test_eval_beside_another_run(ssnn_runs, capsys):
    out = ssnn_runs / "compare"
    assert tks_eval.main([str(ssnn_runs / "ce"), str(ssnn_runs / "ssnn"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SSNN early exits" in printed and "ssnn (ssnn)" not in printed
    rows = _rows(out / tks_eval.TIMESTEPS_FILE)
    assert [(r["loss"], r["T_test"]) for r in rows] == [("ce", "1"), ("ce", "2"), ("ce", "3"), ("ce", "4"),
                                                         ("ssnn", "4")]
    final = _rows(ssnn_runs / "ssnn" / "metrics.csv")[-1]
    assert float(rows[-1]["top1"]) == pytest.approx(float(final["test_acc"]), abs=1e-6)  # the deployed forward
    assert len([r for r in _rows(out / tks_eval.STEPS_FILE) if r["loss"] == "ssnn"]) == 1  # the last stage's T
    (schedule,) = _rows(out / "ssnn_schedule.csv")
    # hand-computed dense operations of ConvSNN at width 0.25 (c = 4) on 8x8 digits: the stem 1936 once; stage 2's
    # conv 4->8 on 8x8 15488 per step, stage 3's 8->8 on 4x4 6400, the classifier 320; transformers 3*4*256, 1*3*128
    uniform = 1936 + 4 * (15488 + 6400 + 320)
    relative = (1936 + 3 * 4 * 256 + 3 * 15488 + 1 * 3 * 128 + 6400 + 320) / uniform
    assert schedule["stage_T"] == "4,3,1" and float(schedule["average_T"]) == pytest.approx(8 / 3, abs=1e-4)
    assert float(schedule["relative_cost"]) == pytest.approx(relative, abs=1e-6)
    exits = _rows(out / "early_exits.csv")
    assert [(r["exit"], r["stage_T"]) for r in exits] == [("ec1", "4"), ("ec2", "3"), ("final", "1")]
    assert float(exits[0]["relative_cost"]) == pytest.approx((1936 + 4 * 4 * 10) / uniform, abs=1e-6)  # + its linear
    assert float(exits[1]["relative_cost"]) == pytest.approx((1936 + 3072 + 3 * 15488 + 3 * 8 * 10) / uniform,
                                                             abs=1e-6)
    assert exits[2]["top1"] == schedule["top1"] and all(0 <= float(r["top1"]) <= 1 for r in exits)
    assert (out / tks_eval.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        tks_eval.main([str(ssnn_runs / "ssnn"), "--T-max", "2", "--out", str(out)])
    assert "tested at its schedule only" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needles", [
    (["--stage-T", "4,5,1"], ["--stage-T 4,5,1: must be", "strictly decreasing"]),
    (["--stage-T", "4,2"], ["--stage-T 4,2: convsnn has 3 stages", "e.g. --stage-T 4,3,1"]),
    (["--stage-T", "3,2,1"], ["--stage-T 3,2,1: the first stage runs on the input's --T 4 steps", "start it with 4"]),
    (["--T", "2"], ["--T 2: convsnn has 3 stages", "--T 3 or more"]),
    (["--ec-weights", "1"], ["--ec-weights 1.0: ConvSNN has 3 stages, so 2 early classifiers"]),
    (["--lam", "0.5"], ["--final-loss ce does not use --lam", "--lam is an option of --final-loss tks"]),
    (["--final-loss", "kd"], ["--final-loss kd: must be one of ce, ls, tet, tks"]),
    (["--temporal-transformer", "soft"], ["--temporal-transformer soft: must be learned or fixed"]),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, needles):
    _one_line_error(capsys, TINY + ["--method", "ssnn", *argv, "--out", str(tmp_path / "r")], *needles)
    assert not (tmp_path / "r").exists()


def test_stage_T_is_an_ssnn_option():
    with pytest.raises(Exception, match="--method ce does not use --stage-T .*option of ssnn"):
        resolve_hparams("ce", {"stage_T": [3, 2, 1]}, STATIC, 3)
    assert "ssnn" in METHODS
