"""Models: shapes, topology, direct encoding, causality over time, neuron settings."""
import pytest
import torch
from torch import nn

import tks_kernels
from tks.models import MODELS, MultiStepLIF, NeuronConfig, build_model

# name -> (in_channels, image size, static input, small width for CPU tests)
CASES = {
    "convsnn": (1, 8, True, 0.5),
    "vggsnn": (2, 48, False, 0.125),  # DVS frames [T, B, 2, 48, 48]
    "resnet19": (3, 32, True, 0.125),  # CIFAR images repeated over T
    "sew_resnet19": (3, 32, True, 0.125),
}


def _input(name, T, B):
    c, size, static, _ = CASES[name]
    return torch.rand(B, c, size, size) if static else torch.rand(T, B, c, size, size)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    c, size, static, width = CASES[name]
    T, B, classes = 2, 2, 7
    model = build_model(name, num_classes=classes, in_channels=c, image_size=size, width=width)
    x = _input(name, T, B).requires_grad_()
    out = model(x, T=T) if static else model(x)
    assert out.shape == (T, B, classes) and out.dtype == torch.float32
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient (unused layers?): {no_grad}"


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_vggsnn_topology_full_size():
    model = build_model("vggsnn", num_classes=10, in_channels=2, image_size=48)
    convs = _layers(model, nn.Conv2d)
    assert [m.out_channels for m in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert all(m.kernel_size == (3, 3) and m.stride == (1, 1) for m in convs)
    assert len(_layers(model, nn.AvgPool2d)) == 4
    (fc,) = _layers(model, nn.Linear)
    assert (fc.in_features, fc.out_features) == (512 * 3 * 3, 10)  # 48 / 2^4 = 3
    assert sum(p.numel() for p in model.parameters()) == 9_268_746


@pytest.mark.parametrize("name", ["resnet19", "sew_resnet19"])
def test_resnet19_topology_full_size(name):
    model = build_model(name, num_classes=100, in_channels=3, image_size=32)
    convs3 = [m for m in _layers(model, nn.Conv2d) if m.kernel_size == (3, 3)]
    # 19 weight layers: stem + 8 blocks x 2 convs + 2 FC (1x1 shortcut convs not counted)
    assert len(convs3) == 17 and len(_layers(model, nn.Linear)) == 2
    assert [m.out_channels for m in convs3] == [128] * 7 + [256] * 6 + [512] * 4
    assert [m.stride[0] for m in convs3 if m.stride != (1, 1)] == [2, 2]
    fc1, fc2 = _layers(model, nn.Linear)
    assert (fc1.in_features, fc1.out_features, fc2.out_features) == (512, 256, 100)
    # tdBN: BatchNorm weights start at alpha * V_threshold = 0.5
    assert all(torch.all(bn.weight == 0.5) for bn in _layers(model, nn.BatchNorm2d))


def test_sew_blocks_add_spikes():
    model = build_model("sew_resnet19", num_classes=10, in_channels=3, image_size=32, width=0.125).eval()
    block = model.stages[0][1]  # first SEW block, identity shortcut
    x = (torch.rand(2, 2, 16, 32, 32) > 0.5).float()
    out = block(x)
    residual = block.sn2(block.conv2(block.sn1(block.conv1(x))))
    assert torch.equal(out, residual + x)  # ADD: spikes + spikes, values in {0, 1, 2}
    assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0}


def test_neuron_defaults_are_the_authors():
    model = build_model("convsnn", num_classes=10, in_channels=1, image_size=8)
    neurons = _layers(model, MultiStepLIF)
    assert len(neurons) == 3
    for n in neurons:
        assert n.neuron == NeuronConfig(tau=2.0, v_threshold=0.5, v_reset=0.0, decay_input=True,
                                        surrogate="piecewise_quadratic", alpha=2.0)
    x = torch.randn(5, 3, 40, requires_grad=True)
    spikes = neurons[0](x)
    ref, _ = tks_kernels.lif_multistep_reference(x, tau=2.0, v_threshold=0.5, v_reset=0.0,
                                                 surrogate="piecewise_quadratic", alpha=2.0)
    assert torch.equal(spikes, ref)
    g, = torch.autograd.grad(spikes.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("train_mode", [False, True])
def test_static_input_equals_repeated_sequence(train_mode):
    torch.manual_seed(0)
    model = build_model("convsnn", num_classes=10, in_channels=1, image_size=8).train(train_mode)
    x = torch.rand(6, 1, 8, 8)
    direct = model(x, T=3)
    repeated = model(x.unsqueeze(0).expand(3, *x.shape).contiguous())
    torch.testing.assert_close(direct, repeated, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["convsnn", "vggsnn"])
def test_truncated_input_gives_the_first_steps(name):
    """Causal in time (eval mode): running T' steps = the first T' outputs of the T-step run."""
    torch.manual_seed(0)
    c, size, static, width = CASES[name]
    model = build_model(name, num_classes=10, in_channels=c, image_size=size, width=width).eval()
    T = 4
    x = _input(name, T, 3)
    with torch.no_grad():
        full = model(x, T=T) if static else model(x)
        for t in (1, 2, 3):
            part = model(x, T=t) if static else model(x[:t])
            torch.testing.assert_close(part, full[:t], rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="convsnn") as e:
        build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    assert all(name in str(e.value) for name in MODELS)
    model = build_model("convsnn", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="pass T >= 1"):
        model(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        model(torch.rand(8, 8))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.rand(3, 2, 1, 8, 8), T=2)
    with pytest.raises(ValueError, match="width"):
        build_model("convsnn", num_classes=10, in_channels=1, image_size=8, width=0)


@pytest.mark.parametrize("T, error, match", [
    (2.5, TypeError, "T must be an int"),
    (True, TypeError, "T must be an int"),
    (0, ValueError, "T must be >= 1"),
    (torch.tensor(2), TypeError, "T must be an int"),
])
def test_T_is_an_integer_never_truncated(T, error, match):
    model = build_model("convsnn", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(error, match=match):
        model(torch.rand(2, 1, 8, 8), T=T)


def test_numpy_T_and_fp64_models():
    """An fp64 model runs (the neurons' fp64 reference), as tks.LIFNode does, and agrees with
    its fp32 twin; numpy integers count as T."""
    import numpy as np

    torch.manual_seed(0)
    model = build_model("convsnn", num_classes=10, in_channels=1, image_size=8, width=0.5)
    twin = build_model("convsnn", num_classes=10, in_channels=1, image_size=8, width=0.5).double()
    twin.load_state_dict(model.state_dict())
    x = torch.rand(4, 1, 8, 8) * 2
    out = model(x, T=np.int64(3))
    x64 = x.double().requires_grad_()
    out64 = twin(x64, T=3)
    assert out64.dtype == torch.float64 and out64.shape == out.shape == (3, 4, 10)
    torch.testing.assert_close(out64.float(), out, rtol=1e-4, atol=1e-5)
    (grad,) = torch.autograd.grad(out64.square().sum(), x64)
    assert grad.dtype == torch.float64 and grad.abs().sum() > 0
