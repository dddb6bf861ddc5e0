"""The training methods (tks.methods): each loss against a plain eager composition of its parts, the
models' stage / reversal / tap points, TSSD's weak classifier and Tt/T framing, TRT's reversal."""
import pytest
import torch
import torch.nn.functional as F

import tks_kernels
from tks.data.common import DataInfo
from tks.methods import METHODS, MethodNet, MethodOptionError, build_method, resolve_hparams
from tks.data import sum_adjacent_bins
from tks.models import MultiStepLIF, build_model

from _utils import assert_equal, assert_rel_close

TOL = 1e-5
STATIC = DataInfo("digits", 10, 1, 8, True, "convsnn", lam=0.7, temperature=3.0)
EVENTS = DataInfo("events", 10, 2, 8, False, "convsnn", lam=0.3, temperature=5.0)
STAGES = {"convsnn": 3, "vggsnn": 4, "resnet19": 3, "sew_resnet19": 3}


def small_model(name="convsnn", info=STATIC, seed=0):
    torch.manual_seed(seed)
    size = 16 if name == "vggsnn" else info.image_size
    return build_model(name, num_classes=info.num_classes, in_channels=info.in_channels, image_size=size,
                       width=0.125 if name != "convsnn" else 0.5)


def method(name, info=STATIC, T=3, **given):
    hparams = resolve_hparams(name, given, info, T)
    return build_method(name, hparams, epochs=4, T=T, static=info.static)


def eager_kd(student, teacher, tau):
    """tau^2 KL(softmax(mean teacher / tau) || softmax(mean student / tau)), batch mean: F.kl_div."""
    s = student.double().mean(0) if student.dim() == 3 else student.double()
    t = teacher.detach().double().mean(0) if teacher.dim() == 3 else teacher.detach().double()
    return F.kl_div(F.log_softmax(s / tau, -1), F.softmax(t / tau, -1), reduction="batchmean") * tau * tau


def eager_ce(z, y):
    return F.cross_entropy((z.double().mean(0) if z.dim() == 3 else z.double()), y)


# ---------------------------------------------------------------- the models' points


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stages_taps_and_run_match_forward(name):
    static = name != "vggsnn"
    info = STATIC if static else DataInfo("e", 10, 2, 16, False, "vggsnn", 0.3, 5.0)
    if name.startswith(("resnet", "sew")):
        info = DataInfo("c", 10, 3, 8, True, "resnet19", 0.7, 3.0)
    model = small_model(name, info).eval()
    assert len(model.stages) == STAGES[name] and len(model.stage_channels) == STAGES[name]
    assert isinstance(model.first_spiking_layer, MultiStepLIF)
    T, B = 3, 2
    size = 16 if name == "vggsnn" else info.image_size
    x = torch.rand(B, info.in_channels, size, size) if static else torch.rand(T, B, info.in_channels, size, size)
    args = (x, T) if static else (x, None)
    run = model.run(*args, taps=tuple(range(STAGES[name])))
    assert_equal(run.logits, model(*args), "run() logits vs forward")
    assert_equal(model.classifier(run.features), run.logits, "classifier(features)")
    for i, c in enumerate(model.stage_channels):
        assert run.taps[i].shape[:3] == (T, B, c), (i, run.taps[i].shape)


def test_reversing_the_first_spikes_by_hand():
    """A hand-made 3-step case: reverse_first_spikes flips the first spiking layer's output along T
    (static images: reversing the input would change nothing), then the rest runs on it."""
    model = small_model().eval()
    x = torch.rand(2, 1, 8, 8) * 3
    spikes = model.first_spiking_layer(model.encode(x, 3))
    assert not torch.equal(spikes, spikes.flip(0)), "pick an input whose spikes differ over time"
    h = spikes.flip(0)
    for stage in model.stages[1:]:
        h = stage(h)
    expected = model.classifier(model.head(h))
    assert_equal(model.run(x, 3, reverse_first_spikes=True).logits, expected, "reversed first spikes")
    assert_equal(model(x.unsqueeze(0).expand(3, *x.shape).flip(0)), model(x, 3), "a reversed static input")


# ---------------------------------------------------------------- each loss vs its parts


def batch(info=STATIC, T=3, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    if info.static:
        x = torch.rand(B, info.in_channels, 8, 8, generator=g) * 2
    else:
        x = (torch.rand(B, T, info.in_channels, 8, 8, generator=g) < 0.3).float()  # loader layout [B, T, ...]
    return x, torch.randint(0, info.num_classes, (B,), generator=g)


def run_method(m, model, x, y, info=STATIC):
    net = MethodNet(model, m, info)
    outputs = net(x)
    loss, parts = m.loss(outputs, y)
    return net, outputs, loss, parts


@pytest.mark.parametrize("name", ["ce", "ls", "tet", "tks"])
def test_single_pass_losses(name):
    m = method(name)
    m.set_epoch(2)
    x, y = batch()
    model = small_model()
    _, outputs, loss, parts = run_method(m, model, x, y)
    z = outputs["logits"]
    assert_equal(z, model(x, 3), "logits")
    expected = {
        "ce": lambda: eager_ce(z, y),
        "ls": lambda: F.cross_entropy(z.double().mean(0), y, label_smoothing=0.1),
        "tet": lambda: tks_kernels.tet_loss(z.double(), y),
        "tks": lambda: tks_kernels.tks_loss_reference(z.double(), y, lam=0.35, temperature=3.0),
    }[name]()
    assert_rel_close(loss, expected, TOL, f"{name} loss")
    if name == "tks":
        assert m.lam == pytest.approx(0.35) and set(parts) == {"ce", "kd", "selected"}


@pytest.mark.parametrize("info", [STATIC, EVENTS], ids=["static", "events"])
def test_tssd_loss_is_its_parts(info):
    T, Tt = 2, 4
    m = method("tssd", info, T=T, teacher_T=Tt, alpha=0.7, beta=1.3, temperature=2.5)
    model = small_model(info=info)
    x, y = batch(info, T=Tt)  # event batches hold the teacher's Tt frames
    net, outputs, loss, parts = run_method(m, model, x, y, info)
    assert m.hparams["weak_stage"] == 2  # the middle of convsnn's 3 stages
    if info.static:
        student_in, teacher_in = (x, T), (x, Tt)
    else:
        seq = x.transpose(0, 1)
        student_in, teacher_in = (seq.unflatten(0, (T, 2)).sum(1), None), (seq, None)
    z_s, z_t = model(*student_in), model(*teacher_in)
    assert_equal(outputs["logits"], z_s, "student logits")
    assert_equal(outputs["teacher_logits"], z_t, "teacher logits")
    tap = model.run(*student_in, taps=(1,)).taps[1]
    w = net.extras["weak"].fc(tap.flatten(3).mean(3))
    assert_rel_close(outputs["weak_logits"], w, TOL, "weak classifier")
    expected = eager_ce(z_s, y) + eager_ce(z_t, y) + 0.7 * eager_kd(z_s, z_t, 2.5) + 1.3 * eager_kd(w, z_s, 2.5)
    assert_rel_close(loss, expected, TOL, "tssd loss")
    assert set(parts) == {"ce", "ce_teacher", "kd_temporal", "kd_spatial"}
    # the teachers are detached in their KD terms: the temporal KD's gradient reaches the student only
    (g_teacher,) = torch.autograd.grad(parts["kd_temporal"], outputs["teacher_logits"], allow_unused=True)
    assert g_teacher is None or not g_teacher.any()


@pytest.mark.parametrize("info", [STATIC, EVENTS], ids=["static", "events"])
def test_trt_loss_is_its_parts(info):
    T = 3
    m = method("trt", info, T=T, lam=0.6, lam_star=1.7, temperature=1.5)
    model = small_model(info=info)
    x, y = batch(info, T=T)
    _, outputs, loss, parts = run_method(m, model, x, y, info)
    if info.static:
        original, reversed_ = model.run(x, T), model.run(x, T, reverse_first_spikes=True)
    else:
        seq = x.transpose(0, 1)
        original, reversed_ = model.run(seq), model.run(seq.flip(0))  # event data: the frames reversed
    assert_equal(outputs["logits"], original.logits, "original logits")
    assert_equal(outputs["reversed_logits"], reversed_.logits, "reversed logits")
    star = model.classifier((original.features.mean(0) * reversed_.features.mean(0)).unsqueeze(0))[0]
    assert_rel_close(outputs["star_logits"], star, TOL, "star logits")
    z, z_rev = original.logits, reversed_.logits
    expected = eager_ce(z, y) + eager_ce(z_rev, y) + 1.7 * eager_ce(star, y) + 0.6 * eager_kd(z_rev, z, 1.5)
    assert_rel_close(loss, expected, TOL, "trt loss")
    assert set(parts) == {"ce", "ce_reversed", "ce_star", "kd"}


def test_tssd_framing_sums_adjacent_frames():
    frames = torch.rand(2, 12, 2, 4, 4)  # [B, Tt, C, H, W]
    for T in (1, 2, 3, 4, 6, 12):
        student = sum_adjacent_bins(frames, T, dim=1)
        assert student.shape == (2, T, 2, 4, 4)
        torch.testing.assert_close(student.sum(1), frames.sum(1))
        torch.testing.assert_close(student[:, 0], frames[:, : 12 // T].sum(1))
    with pytest.raises(ValueError, match="not a multiple"):
        sum_adjacent_bins(frames, 5, dim=1)
    m = method("tssd", EVENTS, T=2, teacher_T=4)
    assert m.data_T() == 4 and m.eval_input(frames[:, :4]).shape == (2, 2, 2, 4, 4)
    assert method("tssd", STATIC, T=2).data_T() == 2


def test_weak_classifier_is_training_only():
    m = method("tssd", STATIC, T=2)
    model = small_model()
    net = MethodNet(model, m, STATIC)
    assert set(net.extras) == {"weak"}
    assert not any(k.startswith("extras") for k in model.state_dict())
    assert set(model.state_dict()) == set(small_model().state_dict())  # the deployed model is unchanged


@pytest.mark.parametrize("name, given, info, match", [
    ("tssd", {"teacher_T": 3}, STATIC, "--teacher-T 3: .* more than --T 3"),
    ("tssd", {"teacher_T": 8}, EVENTS, "--teacher-T 8 is not a multiple of --T 3"),
    ("tssd", {"alpha": -1.0}, STATIC, "--alpha -1.0: must be a finite number >= 0"),
    ("tssd", {"beta": float("nan")}, STATIC, "--beta nan: must be"),
    ("trt", {"lam_star": -0.5}, STATIC, "--lam-star -0.5: must be"),
    ("tks", {"lam": 1.5}, STATIC, r"--lam 1.5: .*in \[0, 1\]"),
    ("ce", {"teacher_T": 6}, STATIC, "--method ce does not use --teacher-T .*option of tssd"),
    ("trt", {"label_smoothing": 0.1}, STATIC, "--method trt does not use --label-smoothing .*option of ls"),
])
def test_bad_options(name, given, info, match):
    with pytest.raises(MethodOptionError, match=match):
        resolve_hparams(name, given, info, 3)


def test_weak_stage_range():
    with pytest.raises(MethodOptionError, match="--weak-stage 3: ConvSNN has 3 stages"):
        MethodNet(small_model(), method("tssd", STATIC, T=2, weak_stage=3), STATIC)


def test_every_method_is_registered():
    assert set(METHODS) >= {"ce", "ls", "tet", "tks", "tssd", "trt"}
