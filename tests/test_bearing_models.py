"""1-D models (MRA-SNN, snn1d, cnn1d), the channel attention and the attention neuron: shapes and
gradients on every LIF backend, the attention neuron against the plain LIF, topology, every
training method on the 1-D models."""
from dataclasses import replace

import pytest
import torch
from torch import nn

import tks_kernels
from tks.data.common import DataInfo
from tks.methods import MethodNet, build_method, resolve_hparams
from tks.models import (SIGNAL_MODELS, AttentionLIF, ChannelAttention, MultiStepLIF, NeuronConfig, build_model)
from tks.models.attention import eca_kernel_size

from _utils import assert_equal, assert_rel_close

SIGNAL = DataInfo("bearing-sim", 4, 1, 0, True, "mra_snn", lam=0.7, temperature=3.0, signal_length=64)


def small(name, seed=0, length=64, width=0.125, backend="auto"):
    torch.manual_seed(seed)
    model = build_model(name, num_classes=4, in_channels=1, signal_length=length, width=width)
    set_backend(model, backend)
    return model


def set_backend(model, backend):
    for m in model.modules():
        if isinstance(m, MultiStepLIF):
            m.neuron = replace(m.neuron, backend=backend)


def signals(B=2, length=64, seed=0):
    return torch.randn(B, 1, length, generator=torch.Generator().manual_seed(seed)) * 2


# ---------------------------------------------------------------- shapes and gradients, every backend


def _forward_backward(model, x, T):
    x = x.clone().requires_grad_()
    out = model(x, T=T)
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("name", ["mra_snn", "snn1d"])
def test_shapes_and_gradients_on_every_backend(name):
    """The same weights on cpp, torch (the reference) and triton (the interpreter here): identical
    logits (the spikes are exact), gradients within 1e-5, every parameter reached."""
    T, B = 2, 2
    x = signals(B)
    results = {}
    for backend in ("torch", "cpp", "triton"):
        model = small(name, backend=backend).train()
        out, x_grad, grads = _forward_backward(model, x, T)
        assert out.shape == (T, B, 4) and out.dtype == torch.float32
        assert x_grad.abs().sum() > 0 and torch.isfinite(x_grad).all()
        missing = [n for n, p in model.named_parameters() if n not in grads]
        assert not missing, f"{backend}: parameters without gradient: {missing}"
        results[backend] = (out, x_grad, grads)
    ref_out, ref_x_grad, ref_grads = results["torch"]
    for backend in ("cpp", "triton"):
        out, x_grad, grads = results[backend]
        assert_equal(out, ref_out, f"{name} logits {backend} vs torch")
        assert_rel_close(x_grad, ref_x_grad, 1e-5, f"{name} input grad {backend}")
        for n, g in grads.items():
            assert_rel_close(g, ref_grads[n], 1e-5, f"{name} grad {n} {backend}", floor=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the cuda and triton LIF kernels on GPU")
@pytest.mark.parametrize("name", ["mra_snn", "snn1d"])
def test_cuda_and_triton_backends_on_gpu(name):
    """On a GPU: cuda and triton against the torch reference on CUDA tensors (fp32: identical
    logits, gradients within 1e-5), and a bf16 autocast step that stays finite."""
    T, B = 4, 8
    x = signals(B, length=1024).cuda()
    results = {}
    for backend in ("torch", "cuda", "triton"):
        model = small(name, length=1024, width=0.5, backend=backend).cuda().train()
        results[backend] = _forward_backward(model, x, T)
    ref_out, ref_x_grad, ref_grads = results["torch"]
    for backend in ("cuda", "triton"):
        out, x_grad, grads = results[backend]
        assert_equal(out, ref_out, f"{name} logits {backend} vs torch (CUDA)")
        assert_rel_close(x_grad, ref_x_grad, 1e-5, f"{name} input grad {backend}")
        for n, g in grads.items():
            assert_rel_close(g, ref_grads[n], 1e-5, f"{name} grad {n} {backend}", floor=1e-6)
    model = small(name, length=1024, width=0.5).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, T=T)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cnn1d_shapes_gradients_and_one_evaluation():
    model = small("cnn1d").train()
    out, x_grad, grads = _forward_backward(model, signals(3), T=4)
    assert out.shape == (4, 3, 4) and x_grad.abs().sum() > 0
    assert len(grads) == len(list(model.parameters()))
    assert all(torch.equal(out[t], out[0]) for t in range(4)), "a static window: identical logits at every step"
    model.eval()
    x = signals(3)
    assert_equal(model(x, T=3)[0], model(x, T=1)[0], "T does not change the evaluation")
    # a sequence is evaluated step by step
    seq = torch.stack([signals(3, seed=s) for s in range(2)])
    out = model(seq)
    assert_equal(out[1], model(seq[1], T=1)[0], "step 2 of a sequence")


@pytest.mark.parametrize("name", ["mra_snn", "snn1d"])
def test_static_window_equals_the_repeated_sequence(name):
    model = small(name).eval()
    x = signals(2)
    assert_equal(model(x, T=3), model(x.unsqueeze(0).expand(3, *x.shape)), "static vs repeated")


def test_fp64_runs_the_reference():
    model = small("mra_snn").double().eval()
    out = model(signals(2).double(), T=2)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


# ---------------------------------------------------------------- attention neuron and channel attention


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_attention_neuron_with_attention_one_is_the_plain_lif(backend, monkeypatch):
    neuron = NeuronConfig(backend=backend)
    x = torch.randn(3, 2, 8, 16, generator=torch.Generator().manual_seed(0)) + 0.3
    att = AttentionLIF(neuron, channels=8)
    plain = MultiStepLIF(neuron)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    monkeypatch.setattr(att.attention, "gate", lambda current: torch.ones(current.shape[:2]))
    s_att, s_plain = att(x1), plain(x2)
    assert_equal(s_att, s_plain, "spikes with a = 1")
    assert s_plain.sum() > 0 and (s_plain == 0).sum() > 0, "pick an input with some spikes"
    g = torch.randn_like(s_att)
    s_att.backward(g)
    s_plain.backward(g)
    assert_equal(x1.grad, x2.grad, "input gradient with a = 1")


def test_attention_neuron_rescales_the_current_by_its_attention():
    """Unfixed: LIF(a(I) * I), with a(I) = sigmoid(conv(mean over L of I)) computed per step."""
    torch.manual_seed(0)
    att = AttentionLIF(NeuronConfig(backend="torch"), channels=6, kernel_size=3)
    x = torch.randn(4, 2, 6, 10) + 0.5
    w = att.attention.conv.weight.detach().view(3)
    pooled = x.mean(-1)  # [T, B, C]
    padded = nn.functional.pad(pooled, (1, 1))
    a = torch.sigmoid(w[0] * padded[..., :-2] + w[1] * padded[..., 1:-1] + w[2] * padded[..., 2:])
    expected = MultiStepLIF(NeuronConfig(backend="torch"))(a.unsqueeze(-1) * x)
    assert_equal(att(x), expected, "LIF(a(I) I) by hand")
    assert not torch.equal(att(x), MultiStepLIF(NeuronConfig(backend="torch"))(x)), "the attention changes the spikes"


def test_channel_attention_by_hand_and_shapes():
    torch.manual_seed(0)
    eca = ChannelAttention(5, kernel_size=3)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([[[0.5, -1.0, 2.0]]]))
    x = torch.randn(2, 5, 7)
    m = x.mean(-1)
    for c in range(5):
        left = m[:, c - 1] if c > 0 else 0.0
        right = m[:, c + 1] if c < 4 else 0.0
        a = torch.sigmoid(0.5 * left - 1.0 * m[:, c] + 2.0 * right)
        assert_rel_close(eca(x)[:, c], a[:, None] * x[:, c], 1e-6, f"channel {c}")
    assert eca(torch.randn(2, 5)).shape == (2, 5)  # features without a length
    assert eca(torch.randn(2, 5, 3, 4)).shape == (2, 5, 3, 4)  # images
    assert [eca_kernel_size(c) for c in (4, 8, 32, 64, 127, 128, 512)] == [1, 3, 3, 3, 3, 5, 5]
    with pytest.raises(ValueError, match="odd"):
        ChannelAttention(8, kernel_size=2)
    with pytest.raises(ValueError, match=r"\[N, 5, \*spatial\]"):
        eca(torch.randn(2, 4, 7))


# ---------------------------------------------------------------- topology


def test_mra_snn_topology_full_size():
    model = build_model("mra_snn", num_classes=15, in_channels=1, signal_length=1024)
    assert model.spatial_dims == 1 and len(model.stages) == 4
    assert model.stage_channels == (48, 32, 64, 128)
    assert [b[0].kernel_size[0] for b in model.stem.branches] == [5, 15, 45]
    assert isinstance(model.stem.attention, ChannelAttention)
    assert type(model.first_spiking_layer) is MultiStepLIF  # the encoder's ECA is in the stem
    # both neurons of every block and the three shortcuts' neurons are attention neurons
    assert sum(isinstance(m, AttentionLIF) for m in model.modules()) == 9
    run = model.eval().run(torch.randn(2, 1, 1024), 2, taps=(0, 1, 2, 3))
    assert [tuple(h.shape[2:]) for h in run.taps.values()] == [(48, 256), (32, 256), (64, 128), (128, 64)]
    assert run.features.shape == (2, 2, 128) and run.logits.shape == (2, 2, 15)
    # SEW ADD: block outputs are spike counts in {0, 1, 2}
    assert set(run.taps[2].unique().tolist()) <= {0.0, 1.0, 2.0}


def test_ablation_and_cnn_have_no_attention():
    for name in ("snn1d", "cnn1d"):
        model = build_model(name, num_classes=4, in_channels=1, signal_length=1024)
        assert not any(isinstance(m, ChannelAttention) for m in model.modules()), name
    assert not any(isinstance(m, MultiStepLIF) for m in build_model("cnn1d", num_classes=4, in_channels=1,
                                                                       signal_length=1024).modules())
    sizes = {n: sum(p.numel() for p in build_model(n, num_classes=4, in_channels=1, signal_length=1024).parameters())
             for n in SIGNAL_MODELS}
    # the attention costs k weights per neuron: 3 (encoder, 48 channels), then three neurons per block
    # (two and the shortcut's) of k = 3, 3, 5 (32, 64, 128 channels)
    assert sizes["mra_snn"] - sizes["snn1d"] == 3 + 3 * (3 + 3 + 5) and sizes["snn1d"] == sizes["cnn1d"]


def test_build_model_checks_the_input_kind():
    with pytest.raises(ValueError, match="takes 1-D signals"):
        build_model("mra_snn", num_classes=4, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="takes images"):
        build_model("convsnn", num_classes=4, in_channels=1, signal_length=1024)
    with pytest.raises(ValueError, match="length >= 16"):
        build_model("snn1d", num_classes=4, in_channels=1, signal_length=8)
    with pytest.raises(ValueError, match=r"\[T, B, C, L\]"):
        small("mra_snn")(torch.randn(2, 2, 1, 8, 8), T=2)


# ---------------------------------------------------------------- every training method on the 1-D models


@pytest.mark.parametrize("name,method", [("mra_snn", "ce"), ("mra_snn", "tks"), ("mra_snn", "tssd"),
                                         ("mra_snn", "trt"), ("cnn1d", "tssd"), ("cnn1d", "trt")])
def test_methods_train_the_1d_models(name, method):
    T = 2
    hparams = resolve_hparams(method, {}, SIGNAL, T)
    m = build_method(method, hparams, epochs=2, T=T, static=True)
    m.set_epoch(1)
    model = small(name)
    net = MethodNet(model, m, SIGNAL)
    x, y = signals(4), torch.tensor([0, 1, 2, 3])
    loss, parts = m.loss(net(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    unreached = [n for n, p in net.named_parameters() if p.grad is None]
    assert not unreached, f"{method} on {name}: parameters without gradient: {unreached}"
    if method == "tssd":  # the default weak stage is the first block's output
        assert m.hparams["weak_stage"] == 2 and net.extras["weak"].fc.in_features == model.stage_channels[1]


def test_lif_kernel_sees_1d_layout():
    """The neurons of a 1-D model get ``[T, B, C, L]`` currents (the fused kernel flattens them)."""
    seen = []
    model = small("snn1d")
    for m in model.modules():
        if isinstance(m, MultiStepLIF):
            m.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].dim()))
    model(signals(2), T=3)
    assert seen and set(seen) == {4}
    assert tks_kernels.lif_multistep(torch.randn(3, 2, 4, 5))[0].shape == (3, 2, 4, 5)
