"""tks.replace_neurons on spikingjelly 2.0.0 models: same outputs and gradients before and after,
no spikingjelly neuron left, PLIF's w still trained by an optimizer built before."""
import copy
import sys
import types
import warnings

import pytest
import torch
import torch.nn as nn

import tks

from _utils import assert_equal, assert_rel_close
from test_neuron import run_without_spikingjelly

# spikingjelly 2.0.0 is a test dependency: imported, never skipped
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402
from spikingjelly.activation_based.model import parametric_lif_net, spiking_vgg  # noqa: E402

TOL = 1e-5
SJ_NEURONS = (neuron.LIFNode, neuron.IFNode, neuron.ParametricLIFNode)
TKS_NEURONS = (tks.LIFNode, tks.IFNode, tks.ParametricLIFNode)


def mixed_net():
    """IF, soft-reset LIF and PLIF between spikingjelly conv / BN / linear layers."""
    return nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1),
        layer.BatchNorm2d(4),
        neuron.IFNode(),
        layer.Conv2d(4, 4, 3, padding=1),
        neuron.LIFNode(tau=3.0, v_reset=None, decay_input=False),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(4 * 3 * 3, 10),
        neuron.ParametricLIFNode(
            init_tau=2.5, detach_reset=True, surrogate_function=surrogate.PiecewiseQuadratic(alpha=0.5)
        ),
    )


def vgg_net():
    """spikingjelly's SpikingVGG (its make_layers and forward) with a small classifier: its
    constructor hard-codes a 120M-parameter one, too big for a CPU test."""
    net = spiking_vgg.SpikingVGG.__new__(spiking_vgg.SpikingVGG)
    nn.Module.__init__(net)
    net.features = spiking_vgg.SpikingVGG.make_layers(
        cfg=[4, "M", 8], batch_norm=True, neuron=neuron.LIFNode, tau=2.0, surrogate_function=surrogate.ATan()
    )
    net.avgpool = layer.AdaptiveAvgPool2d((2, 2))
    net.classifier = nn.Sequential(layer.Linear(8 * 2 * 2, 16), neuron.LIFNode(), layer.Dropout(), layer.Linear(16, 10))
    return net


NETS = {
    # (constructor, input shape of one step [N, *])
    "plif-mnist": (
        lambda: parametric_lif_net.MNISTNet(
            channels=4, spiking_neuron=neuron.ParametricLIFNode, surrogate_function=surrogate.ATan(), detach_reset=True
        ),
        (2, 1, 28, 28),
    ),
    "lif-cifar10": (
        lambda: parametric_lif_net.CIFAR10Net(channels=4, spiking_neuron=neuron.LIFNode, tau=2.0, v_reset=None),
        (2, 3, 32, 32),
    ),
    "vgg": (vgg_net, (2, 3, 8, 8)),
    "mixed": (mixed_net, (2, 2, 6, 6)),
}


def run(net, x_seq, step_mode, seed=0):
    """Output over the sequence (dropout masks drawn from the same seed), reset afterwards."""
    torch.manual_seed(seed)
    if step_mode == "m":
        out = net(x_seq)
    else:
        out = torch.stack([net(x) for x in x_seq])
    functional.reset_net(net)
    return out


def compare_before_after(make, step_shape, step_mode, backend="auto", T=3, device="cpu"):
    torch.manual_seed(0)
    before = make().to(device)
    functional.set_step_mode(before, step_mode)
    after = copy.deepcopy(before)
    n = tks.replace_neurons(after, backend=backend)
    n_sj = sum(isinstance(m, SJ_NEURONS) for m in before.modules())
    assert n == n_sj > 0
    # ours are subclasses of spikingjelly's (isinstance checks find them): no module of spikingjelly's own class is left
    assert not any(type(m) in SJ_NEURONS for m in after.modules())
    assert sum(isinstance(m, TKS_NEURONS) for m in after.modules()) == n
    assert all(m.step_mode == step_mode for m in after.modules() if isinstance(m, TKS_NEURONS))
    x_seq = (torch.randn(T, *step_shape, generator=torch.Generator().manual_seed(1)) * 2.0).to(device)
    for net in (before, after):
        net.train()
    out_before, out_after = run(before, x_seq, step_mode), run(after, x_seq, step_mode)
    assert_equal(out_after, out_before, "outputs")
    weight = torch.randn(out_before.shape, generator=torch.Generator().manual_seed(2)).to(device)
    grads = []
    for net in (before, after):
        net.zero_grad()
        (run(net, x_seq, step_mode) * weight).sum().backward()
        grads.append({name: p.grad for name, p in net.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert any(g is not None and g.abs().sum() > 0 for g in grads[0].values()), "no gradient reached the parameters"
    # A conv bias before BatchNorm has a gradient of zero up to rounding noise, whose relative
    # error means nothing: measure each gradient against at least 1e-3 of the whole gradient.
    total = sum(g.double().norm() ** 2 for g in grads[0].values() if g is not None).sqrt().item()
    for name in grads[0]:
        if grads[0][name] is None:
            assert grads[1][name] is None, name
        else:
            assert_rel_close(grads[1][name], grads[0][name], TOL, f"grad {name}", floor=1e-3 * total)
    return before, after


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("net", list(NETS))
def test_same_outputs_and_gradients(net, step_mode):
    make, step_shape = NETS[net]
    compare_before_after(make, step_shape, step_mode)


def test_ms_resnet_with_rect_surrogate_runs_fused():
    """spikingjelly 2.0.0's MS-ResNet-18 (its own multi-step LIF neurons with the Rect surrogate):
    every neuron replaced, no eager fallback warning, same logits and parameter gradients."""
    from spikingjelly.activation_based.model import ms_resnet

    torch.manual_seed(0)
    before = ms_resnet.ms_resnet18(T=2, num_classes=10)
    after = copy.deepcopy(before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a surrogate without a kernel would warn
        n = tks.replace_neurons(after)
        assert n == sum(isinstance(m, SJ_NEURONS) for m in before.modules()) > 0
        assert {type(m.surrogate_function).__name__ for m in after.modules() if isinstance(m, TKS_NEURONS)} == {"Rect"}
        x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2.0
        weight = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
        outs, grads = [], []
        for net in (before, after):
            net.train()
            out = net(x)
            (out * weight).sum().backward()
            functional.reset_net(net)
            outs.append(out.detach())
            grads.append({name: p.grad for name, p in net.named_parameters() if p.grad is not None})
    assert_equal(outs[1], outs[0], "logits")
    assert grads[0].keys() == grads[1].keys() and grads[0]
    total = sum(g.double().norm() ** 2 for g in grads[0].values()).sqrt().item()
    assert total > 0
    for name in grads[0]:
        assert_rel_close(grads[1][name], grads[0][name], TOL, f"grad {name}", floor=1e-3 * total)


def test_triton_backend(device):
    """On a GPU both models run there (spikingjelly on its own CUDA kernels, ours on Triton)."""
    _, after = compare_before_after(mixed_net, NETS["mixed"][1], "m", backend="triton", device=device)
    assert all(m.backend == "triton" for m in after.modules() if isinstance(m, TKS_NEURONS))


def test_optimizer_built_before_keeps_training_plif_w():
    net = mixed_net()
    functional.set_step_mode(net, "m")
    old_plif = net[8]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    assert tks.replace_neurons(net) == 3
    assert isinstance(net[8], tks.ParametricLIFNode) and net[8].w is old_plif.w
    assert any(p is net[8].w for group in opt.param_groups for p in group["params"])
    w0 = net[8].w.detach().clone()
    x = torch.randn(4, 3, 2, 6, 6) * 3
    for _ in range(2):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
        functional.reset_net(net)
    assert net[8].w.grad is not None and net[8].w.grad.abs() > 0
    assert not torch.equal(net[8].w.detach(), w0)
    assert list(net.state_dict()) == list(mixed_net().state_dict())


def test_carries_settings_state_and_hooks():
    old = neuron.LIFNode(tau=4.0, decay_input=False, v_threshold=0.7, v_reset=-0.1, detach_reset=True,
                         surrogate_function=surrogate.Erf(alpha=1.5), step_mode="m", store_v_seq=True)
    net = nn.Sequential(old)
    net.eval()
    x = torch.randn(3, 2, 5)
    net(x)  # mid-sequence state
    twin = copy.deepcopy(net)
    calls = []
    handle = old.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    with torch.no_grad():
        expected = twin(x)
    assert tks.replace_neurons(net) == 1
    new = net[0]
    assert (new.tau, new.decay_input, new.v_threshold, new.v_reset, new.detach_reset) == (4.0, False, 0.7, -0.1, True)
    assert new.surrogate_function is old.surrogate_function and new.step_mode == "m" and new.store_v_seq
    assert not new.training
    assert torch.equal(new.v, old.v) and torch.equal(new.v_seq, old.v_seq)
    with torch.no_grad():
        assert_equal(net(x), expected, "spikes after the state carried over")
    assert_rel_close(new.v, twin[0].v, TOL, "v")
    assert calls == ["LIFNode"]  # the hook moved with it
    handle.remove()
    net(x)
    assert len(calls) == 1
    new.reset()
    assert new.v == -0.1


def test_shared_neuron_becomes_one_module():
    shared = neuron.IFNode(step_mode="m")
    net = nn.Sequential(nn.Linear(3, 3), shared, nn.Linear(3, 3), shared)
    assert tks.replace_neurons(net) == 1
    assert net[1] is net[3] and isinstance(net[1], tks.IFNode)


def test_subclasses_and_unsupported_layers_are_left_with_a_warning():
    class MyLIF(neuron.LIFNode):
        pass

    odd = neuron.IFNode()
    odd.v_threshold = torch.tensor(1.0)
    net = nn.Sequential(MyLIF(), neuron.IFNode(), odd, nn.ModuleList([neuron.ParametricLIFNode()]))
    with pytest.warns(UserWarning, match=r"left 2 .*0 \(.*MyLIF: a subclass.*2 \(IFNode: v_threshold is a Tensor"):
        assert tks.replace_neurons(net) == 2
    assert type(net[0]) is MyLIF and type(net[2]) is neuron.IFNode
    assert isinstance(net[1], tks.IFNode) and isinstance(net[3][0], tks.ParametricLIFNode)


def test_no_warning_when_everything_is_replaced():
    net = mixed_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tks.replace_neurons(net) == 3
        assert tks.replace_neurons(net) == 0  # idempotent


def test_bad_arguments():
    with pytest.raises(ValueError, match="model is itself a LIFNode"):
        tks.replace_neurons(neuron.LIFNode())
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        tks.replace_neurons([neuron.LIFNode()])
    with pytest.raises(ValueError, match="backend='gpu' is not supported"):
        tks.replace_neurons(mixed_net(), backend="gpu")


@pytest.fixture
def legacy_spikingjelly(monkeypatch):
    """A stand-in for spikingjelly 0.0.0.0.14's clock_driven.neuron (not installable beside 2.0.0):
    single-step classes with its attributes, MultiStep* subclasses with ``backend``."""
    import spikingjelly

    mod = types.ModuleType("spikingjelly.clock_driven.neuron")
    sur = types.ModuleType("spikingjelly.clock_driven.surrogate")

    class Sigmoid(surrogate.Sigmoid):
        pass

    Sigmoid.__module__ = sur.__name__
    sur.Sigmoid = Sigmoid

    class _Legacy(nn.Module):
        def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate_function=Sigmoid(), detach_reset=False):
            super().__init__()
            self.v_threshold, self.v_reset, self.detach_reset = v_threshold, v_reset, detach_reset
            self.surrogate_function = surrogate_function
            self.v = 0.0 if v_reset is None else v_reset
            self._memories_rv = {"v": self.v}

    class LIFNode(_Legacy):
        def __init__(self, tau=2.0, decay_input=True, **kw):
            super().__init__(**kw)
            self.tau, self.decay_input = tau, decay_input

    class IFNode(_Legacy):
        pass

    class ParametricLIFNode(_Legacy):
        def __init__(self, init_tau=2.0, decay_input=True, **kw):
            super().__init__(**kw)
            self.decay_input = decay_input
            self.w = nn.Parameter(torch.tensor(0.3))

    class MultiStepLIFNode(LIFNode):
        def __init__(self, *a, backend="torch", **kw):
            super().__init__(*a, **kw)
            self.backend = backend
            self.v_seq = None

    for cls in (LIFNode, IFNode, ParametricLIFNode, MultiStepLIFNode):
        cls.__module__ = mod.__name__
        setattr(mod, cls.__name__, cls)
    pkg = types.ModuleType("spikingjelly.clock_driven")
    pkg.__path__ = []
    pkg.neuron, pkg.surrogate = mod, sur
    monkeypatch.setitem(sys.modules, "spikingjelly.clock_driven", pkg)
    monkeypatch.setitem(sys.modules, "spikingjelly.clock_driven.neuron", mod)
    monkeypatch.setitem(sys.modules, "spikingjelly.clock_driven.surrogate", sur)
    monkeypatch.setattr(spikingjelly, "clock_driven", pkg, raising=False)
    return mod


def test_legacy_clock_driven_classes(legacy_spikingjelly):
    mod = legacy_spikingjelly
    net = nn.Sequential(mod.LIFNode(tau=3.0, v_reset=None), mod.MultiStepLIFNode(backend="cupy"), mod.IFNode(),
                        mod.ParametricLIFNode(decay_input=False))
    w = net[3].w
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tks.replace_neurons(net) == 4
    assert isinstance(net[0], tks.LIFNode) and net[0].step_mode == "s" and net[0].tau == 3.0 and net[0].v_reset is None
    assert isinstance(net[1], tks.LIFNode) and net[1].step_mode == "m" and net[1].store_v_seq
    assert net[1].backend == "auto"
    assert isinstance(net[2], tks.IFNode) and isinstance(net[3], tks.ParametricLIFNode) and net[3].w is w
    assert not net[3].decay_input
    from tks.neuron import kernel_surrogate

    assert kernel_surrogate(net[0].surrogate_function) == (("sigmoid", 4.0), "")


def test_without_spikingjelly_raises_an_install_hint():
    run_without_spikingjelly(
        """
        import torch, tks
        try:
            tks.replace_neurons(torch.nn.Linear(2, 2))
        except ImportError as e:
            assert "pip install spikingjelly==2.0.0" in str(e) and "tks-kernels[test]" in str(e), str(e)
        else:
            raise AssertionError("no ImportError")
        """
    )


def test_every_kind_of_hook_is_carried_and_fires():
    """Forward (pre, kwargs, always-called), full and legacy backward, backward-pre, state-dict and
    load-state-dict hooks registered on spikingjelly neurons fire on ours after the swap, and
    their handles still remove them; spikingjelly's gradient monitors keep recording."""
    from spikingjelly.activation_based import monitor

    full, legacy = neuron.LIFNode(step_mode="m"), neuron.IFNode(step_mode="m")
    net = nn.Sequential(nn.Linear(4, 5), full, nn.Linear(5, 5), legacy)
    fired = []

    def note(name):
        return lambda *args, **kwargs: fired.append(name)

    handles = [
        full.register_forward_pre_hook(note("forward_pre")),
        full.register_forward_pre_hook(note("forward_pre_kwargs"), with_kwargs=True),
        full.register_forward_hook(note("forward")),
        full.register_forward_hook(note("forward_kwargs"), with_kwargs=True),
        full.register_forward_hook(note("forward_always"), always_call=True),
        full.register_full_backward_pre_hook(note("backward_pre")),
        full.register_full_backward_hook(note("full_backward")),
        legacy.register_backward_hook(note("legacy_backward")),
        full.register_state_dict_post_hook(note("state_dict_post")),
        full.register_state_dict_pre_hook(note("state_dict_pre")),
        full.register_load_state_dict_pre_hook(note("load_state_dict_pre")),
        full.register_load_state_dict_post_hook(note("load_state_dict_post")),
    ]
    grad_in = monitor.GradInputMonitor(net, neuron.LIFNode)
    grad_out = monitor.GradOutputMonitor(net, neuron.LIFNode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on legacy backward hooks
        assert tks.replace_neurons(net) == 2
        assert type(net[1]) is tks.LIFNode and type(net[3]) is tks.IFNode
        x = torch.randn(3, 2, 4, requires_grad=True)
        (net(x) * torch.randn(3, 2, 5)).sum().backward()
        net.load_state_dict(net.state_dict())
    expected = ["forward_pre", "forward_pre_kwargs", "forward", "forward_kwargs", "forward_always", "backward_pre",
                "full_backward", "legacy_backward", "state_dict_pre", "state_dict_post", "load_state_dict_pre",
                "load_state_dict_post"]
    assert sorted(fired) == sorted(expected), fired
    assert len(grad_in.records) == 1 and len(grad_out.records) == 1
    assert grad_out.records[0].shape == (3, 2, 5)
    for h in handles:
        h.remove()
    grad_in.remove_hooks()
    grad_out.remove_hooks()
    fired.clear()
    functional.reset_net(net)
    net(x).sum().backward()
    assert fired == []


def test_an_invalid_layer_leaves_the_model_untouched_and_is_named():
    bad = neuron.LIFNode()
    bad.tau = 1.0  # set after construction, which spikingjelly does not check
    net = nn.Sequential(neuron.IFNode(), nn.Sequential(nn.Linear(3, 3), bad), neuron.ParametricLIFNode())
    with pytest.raises(ValueError, match=r"layer '1\.1' \(spikingjelly.*LIFNode\).*no layer of the model was replaced.*tau must be > 1"):
        tks.replace_neurons(net)
    assert type(net[0]) is neuron.IFNode and net[1][1] is bad and type(net[2]) is neuron.ParametricLIFNode
