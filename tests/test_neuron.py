"""tks.LIFNode / IFNode / ParametricLIFNode against spikingjelly 2.0.0's neurons: spikes, v, v_seq
and gradients, across calls, after reset and after a change of input shape, in both step modes.

spikingjelly always runs on the CPU (its own GPU kernels are not the oracle); ours run on
``device`` (CUDA when there is a GPU, else the CPU, where backend="triton" is the interpreter)."""
import copy
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import tks
from tks.neuron import SPIKINGJELLY_SURROGATES

from _utils import assert_equal, assert_rel_close

# the oracle, spikingjelly 2.0.0, is a test dependency: imported, never skipped
from spikingjelly.activation_based import base, functional, neuron, surrogate  # noqa: E402

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]

KINDS = {
    "lif": (tks.LIFNode, neuron.LIFNode, {"tau": 3.0}),
    "if": (tks.IFNode, neuron.IFNode, {}),
    "plif": (tks.ParametricLIFNode, neuron.ParametricLIFNode, {"init_tau": 2.5}),
}
# option combos: (kwargs, surrogate factory)
OPTIONS = {
    "default": ({}, None),
    "soft-nodecayin-detach-atan3-vseq": (
        {"v_reset": None, "decay_input": False, "detach_reset": True, "store_v_seq": True},
        lambda: surrogate.ATan(alpha=3.0),
    ),
    "hard-0.3-th0.5-pq2": ({"v_reset": -0.3, "v_threshold": 0.5}, lambda: surrogate.PiecewiseQuadratic(alpha=2.0)),
    "soft-erf1.5-vseq": ({"v_reset": None, "store_v_seq": True}, lambda: surrogate.Erf(alpha=1.5)),
}
BACKENDS = ["auto", "triton"]


def make_pair(kind, options, step_mode, backend="auto", surrogate_fn=None, device="cpu"):
    ours_cls, sj_cls, leak = KINDS[kind]
    kwargs = {**leak, **options}
    if kind == "if":
        kwargs.pop("decay_input", None)
    if surrogate_fn is not None:
        kwargs["surrogate_function"] = surrogate_fn
    ours = ours_cls(**kwargs, step_mode=step_mode, backend=backend)
    ref = sj_cls(**kwargs, step_mode=step_mode)
    if kind == "plif":
        ours.w.data.copy_(ref.w.data)
    return ours.to(device), ref


def inputs(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 1.5 + 0.3).to(dtype).requires_grad_()


def feed(node, x_seq, step_mode, device="cpu"):
    """Run a [T, N, *] sequence through ``node`` (on ``device``) in its step mode; spikes on the CPU."""
    x_seq = x_seq.to(device)
    if step_mode == "m":
        return node(x_seq).cpu()
    return torch.stack([node(x) for x in x_seq]).cpu()


def check_state(ours, ref, what):
    assert isinstance(ours.v, torch.Tensor) and ours.v.dtype == torch.float32, f"{what}: v must be an fp32 tensor"
    assert_rel_close(ours.v.cpu(), ref.v, TOL, f"{what}: v")
    if ref.store_v_seq:
        assert_rel_close(ours.v_seq.cpu(), ref.v_seq, TOL, f"{what}: v_seq")
    else:
        assert ours.v_seq is None and ref.v_seq is None


def check_against_spikingjelly(ours, ref, step_mode, shapes=((4, 3, 5), (4, 3, 5)), seed=0, device="cpu"):
    """Feed the same sequences to both neurons (state carried from one to the next), compare the
    spikes and the state after each, then the gradients of a random weighting of all spikes, the
    final v and v_seq with respect to every input and the parameters."""
    xs = [inputs(shape, seed + i) for i, shape in enumerate(shapes)]
    g = torch.Generator().manual_seed(seed + 100)
    loss_ours = loss_ref = 0.0
    for i, x in enumerate(xs):
        s_ours, s_ref = feed(ours, x, step_mode, device), feed(ref, x, step_mode)
        assert_equal(s_ours, s_ref, f"call {i}: spikes")
        check_state(ours, ref, f"call {i}")
        weight = torch.randn(s_ref.shape, generator=g)
        loss_ours, loss_ref = loss_ours + (s_ours * weight).sum(), loss_ref + (s_ref * weight).sum()
    weight = torch.randn(ref.v.shape, generator=g)
    loss_ours, loss_ref = loss_ours + (ours.v.cpu() * weight).sum(), loss_ref + (ref.v * weight).sum()
    if ref.store_v_seq:
        weight = torch.randn(ref.v_seq.shape, generator=g)
        loss_ours, loss_ref = loss_ours + (ours.v_seq.cpu() * weight).sum(), loss_ref + (ref.v_seq * weight).sum()
    grads_ours = torch.autograd.grad(loss_ours, xs + list(ours.parameters()))
    grads_ref = torch.autograd.grad(loss_ref, xs + list(ref.parameters()))
    names = [f"grad x{i}" for i in range(len(xs))] + [f"grad {n}" for n, _ in ours.named_parameters()]
    assert len(grads_ours) == len(grads_ref)
    for name, a, b in zip(names, grads_ours, grads_ref):
        assert_rel_close(a.cpu(), b, TOL, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_spikingjelly(device, kind, step_mode, options, backend):
    kwargs, surrogate_factory = OPTIONS[options]
    ours, ref = make_pair(kind, kwargs, step_mode, backend, surrogate_factory and surrogate_factory(), device)
    # two calls carrying the state, then after reset, then a new input shape without reset
    check_against_spikingjelly(ours, ref, step_mode, device=device)
    ours.reset()
    ref.reset()
    assert ours.v == ref.v and isinstance(ours.v, float) and ours.v_seq is None
    check_against_spikingjelly(ours, ref, step_mode, shapes=((3, 2, 7), (5, 4, 2)), seed=7, device=device)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SPIKINGJELLY_SURROGATES))
def test_every_spikingjelly_surrogate(device, name, backend):
    default = getattr(surrogate, name)().alpha
    make = lambda: getattr(surrogate, name)(alpha=default * 1.5)  # noqa: E731
    ours, ref = make_pair("lif", {"v_reset": None}, "m", backend, make(), device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a supported surrogate must not fall back
        check_against_spikingjelly(ours, ref, "m", device=device)


@pytest.mark.parametrize("backend", BACKENDS)
def test_our_surrogate_names(device, backend):
    ours = tks.LIFNode(surrogate_function=("atan", 3.0), step_mode="m", backend=backend)
    ref = neuron.LIFNode(surrogate_function=surrogate.ATan(alpha=3.0), step_mode="m")
    check_against_spikingjelly(ours, ref, "m", device=device)
    ours = tks.IFNode(surrogate_function="piecewise_exp", step_mode="m", backend=backend)
    ref = neuron.IFNode(surrogate_function=surrogate.PiecewiseExp(), step_mode="m")
    check_against_spikingjelly(ours, ref, "m", device=device)


def _unsupported_surrogates():
    class ScaledSigmoid(surrogate.Sigmoid):  # a subclass may change the gradient: not mapped
        pass

    return {
        "other-class": surrogate.PiecewiseLeakyReLU(),
        "subclass": ScaledSigmoid(alpha=3.0),
        "spiking-false": surrogate.Sigmoid(spiking=False),
        "tensor-alpha": surrogate.ATan(alpha=torch.tensor(3.0)),
        "callable": lambda x: surrogate.Erf(alpha=1.2)(x) * 1.0,
    }


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("case", list(_unsupported_surrogates()))
def test_unsupported_surrogate_runs_eagerly_with_one_warning(device, case, step_mode):
    fn = _unsupported_surrogates()[case]
    ours, ref = make_pair("plif", {"v_reset": None, "store_v_seq": True}, step_mode, "auto", fn, device)
    with pytest.warns(UserWarning, match="eager") as record:
        check_against_spikingjelly(ours, ref, step_mode, device=device)
    assert len([w for w in record if "eager" in str(w.message)]) == 1, [str(w.message) for w in record]


def test_unsupported_surrogate_with_a_named_fused_backend_raises():
    node = tks.LIFNode(surrogate_function=surrogate.PiecewiseLeakyReLU(), step_mode="m", backend="triton")
    with pytest.raises(ValueError, match="PiecewiseLeakyReLU.*backend='auto' or 'torch'"):
        node(torch.randn(2, 3))


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_fp64_runs_on_the_reference(step_mode):
    ours, ref = make_pair("lif", {}, step_mode)
    x = inputs((4, 3, 5), 0, torch.float64)
    assert_equal(feed(ours, x, step_mode), feed(ref, x, step_mode), "spikes")
    assert ours.v.dtype == torch.float64
    assert_rel_close(ours.v, ref.v, 1e-12, "v")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_keeps_fp32_state(device, dtype):
    """spikingjelly keeps v in x's dtype; ours keeps it in fp32 (the project standard): compare
    with spikingjelly on the same input upcast to fp32."""
    ours, ref = make_pair("lif", {}, "m", device=device)
    x = inputs((4, 3, 5), 0, dtype)
    s = ours(x.to(device))
    assert s.dtype == dtype and ours.v.dtype == torch.float32
    s_ref = ref(x.detach().float())
    assert_equal(s.float().cpu(), s_ref, "spikes")
    assert_rel_close(ours.v.cpu(), ref.v, TOL, "v")


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_a_float_v_set_by_hand_is_the_initial_state(step_mode):
    ours, ref = make_pair("lif", {"v_reset": -0.2}, step_mode)
    ours.v = 0.4
    ref.v = 0.4
    check_against_spikingjelly(ours, ref, step_mode)


def test_single_step_v_seq_appends_and_restarts_on_a_new_shape():
    ours, ref = make_pair("if", {"store_v_seq": True}, "s")
    for shape in [(3, 5), (3, 5), (2, 5), (2, 5), (2, 5)]:
        x = inputs(shape, len(shape))
        assert_equal(ours(x), ref(x), "spikes")
        assert ours.v_seq.shape == ref.v_seq.shape
        assert_rel_close(ours.v_seq, ref.v_seq, TOL, "v_seq")
    assert ours.v_seq.shape[0] == 3


def test_state_follows_the_memory_module_contract():
    """reset_net, set_step_mode and detach_net treat the neurons as spikingjelly's own, without
    the warnings spikingjelly logs for other modules."""
    from spikingjelly.logger import logger

    net = nn.Sequential(nn.Linear(5, 6), tks.LIFNode(), nn.Linear(6, 4), tks.ParametricLIFNode(), tks.IFNode())
    for m in (net[1], net[3], net[4]):
        assert isinstance(m, base.MemoryModule) and isinstance(m, base.StepModule)
    messages = []
    logger.enable("spikingjelly")
    sink = logger.add(messages.append, level="WARNING")
    try:
        functional.set_step_mode(net, "m")
        assert all(m.step_mode == "m" for m in (net[1], net[3], net[4]))
        x = torch.randn(3, 2, 5)
        net(x).sum().backward()
        assert net[1].v.requires_grad
        functional.detach_net(net)
        assert not net[1].v.requires_grad and not net[3].v.requires_grad
        assert dict(base.named_memories(net)).keys() == {"1.v", "3.v", "4.v"}
        functional.reset_net(net)
        assert net[1].v == 0.0 and net[3].v == 0.0
    finally:
        logger.remove(sink)
        logger.disable("spikingjelly")
    assert messages == []


def test_deepcopy_and_state_dict():
    node = tks.ParametricLIFNode(init_tau=3.0, step_mode="m")
    with torch.no_grad():  # a non-leaf v cannot be deep-copied (spikingjelly's neither)
        node(torch.randn(2, 4))
    twin = copy.deepcopy(node)
    assert torch.equal(twin.v, node.v) and twin.w is not node.w
    assert list(node.state_dict()) == ["w"] == list(neuron.ParametricLIFNode().state_dict())


def test_legacy_backend_keyword():
    assert tks.LIFNode(backend="cupy").backend == "auto"
    node = tks.IFNode(backend="torch")
    assert node.backend == "torch"
    node.backend = "triton"
    assert node.backend == "triton"
    with pytest.raises(ValueError, match="backend='lava' is not supported"):
        node.backend = "lava"


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: tks.LIFNode(surrogate_function=3.0), TypeError, "surrogate_function must be .* got float 3.0"),
        (lambda: tks.LIFNode(surrogate_function="relu"), ValueError, "surrogate_function='relu' is unknown"),
        (lambda: tks.LIFNode(surrogate_function=("atan", -1.0)), ValueError, "alpha must be > 0"),
        (lambda: tks.LIFNode(step_mode="multi"), ValueError, "step_mode='multi' is not supported"),
        (lambda: tks.IFNode(step_mode=1), ValueError, "step_mode=1 is not supported"),
        (lambda: tks.LIFNode(tau=1.0), ValueError, "tau must be > 1.*got 1.0"),
        (lambda: tks.LIFNode(tau=0.5), ValueError, "tau must be > 1.*got 0.5"),
        (lambda: tks.LIFNode(tau="2"), TypeError, "tau must be a float"),
        (lambda: tks.ParametricLIFNode(init_tau=1.0), ValueError, "init_tau must be > 1.*got 1.0"),
        (lambda: tks.LIFNode(v_threshold=None), TypeError, "v_threshold must be a float"),
        (lambda: tks.LIFNode(detach_reset=1), TypeError, "detach_reset must be a bool"),
        (lambda: tks.LIFNode(backend="cuda2"), ValueError, "backend='cuda2' is not supported"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_step_mode_setter_checks():
    node = tks.LIFNode()
    with pytest.raises(ValueError, match="step_mode='x' is not supported"):
        node.step_mode = "x"
    with pytest.raises(ValueError, match="step_mode='m' takes x_seq of shape"):
        tks.LIFNode(step_mode="m")(torch.tensor(1.0))


HIDE_SPIKINGJELLY = """
import sys
sys.modules["spikingjelly"] = None  # any import of it raises ImportError
"""


def run_without_spikingjelly(code: str) -> None:
    env_path = f"{ROOT}:{ROOT / 'python'}"
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_SPIKINGJELLY + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_works_without_spikingjelly():
    run_without_spikingjelly(
        """
        import torch, tks
        from tks._memory import MemoryModuleFallback
        assert "spikingjelly" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        node = tks.ParametricLIFNode(step_mode="m", store_v_seq=True)
        assert isinstance(node, MemoryModuleFallback)
        x = torch.randn(4, 3, 5, requires_grad=True)
        s = node(x)
        s2 = node(x)
        assert node.v.shape == (3, 5) and node.v_seq.shape == (4, 3, 5)
        (s2.sum() + node.v.sum()).backward()
        assert node.w.grad is not None and x.grad is not None
        node.detach()
        assert not node.v.requires_grad
        node.reset()
        assert node.v == 0.0 and node.v_seq is None
        node.step_mode = "s"
        assert node(x[0]).shape == (3, 5)
        try:
            node.step_mode = "q"
        except ValueError as e:
            assert "step_mode='q'" in str(e)
        else:
            raise AssertionError("no error")
        """
    )


# ---------------------------------------------------------------- what a new user hit (issue 11)

def test_default_surrogate_is_spikingjellys_object_and_alpha_changes_are_honoured():
    """The default is spikingjelly's own shared Sigmoid object; annealing code that sets
    ``node.surrogate_function.alpha`` changes the gradient from the next call on, as in spikingjelly."""
    ours, ref = tks.LIFNode(step_mode="m"), neuron.LIFNode(step_mode="m")
    assert isinstance(ours.surrogate_function, surrogate.Sigmoid)
    assert ours.surrogate_function is ref.surrogate_function  # spikingjelly's default argument, shared
    own = surrogate.Sigmoid()
    ours, ref = tks.LIFNode(step_mode="m", surrogate_function=own), neuron.LIFNode(step_mode="m", surrogate_function=own)
    x = inputs((4, 3, 5), 5)
    g_before = torch.autograd.grad(ours(x).sum(), x)[0]
    functional.reset_net(ours)
    own.alpha = 6.0
    check_against_spikingjelly(ours, ref, "m", seed=3)  # both read the new alpha
    functional.reset_net(ours)
    g_after = torch.autograd.grad(ours(x).sum(), x)[0]
    assert not torch.equal(g_after, g_before), "alpha set after construction was ignored"


def test_repr_shows_surrogate_alpha_decay_input_and_store_v_seq():
    text = repr(tks.LIFNode(decay_input=False, store_v_seq=True, surrogate_function=surrogate.ATan(alpha=3.0)))
    assert "decay_input=False" in text and "store_v_seq=True" in text
    assert "(surrogate_function): ATan(alpha=3.0, spiking=True)" in text
    text = repr(tks.ParametricLIFNode(surrogate_function=("erf", 1.5)))
    assert "surrogate_function=erf, alpha=1.5" in text and "decay_input=True" in text


def test_neurons_pass_spikingjellys_isinstance_checks_and_monitors():
    from spikingjelly.activation_based import monitor

    for ours, theirs in ((tks.LIFNode(), neuron.LIFNode), (tks.IFNode(), neuron.IFNode),
                         (tks.ParametricLIFNode(), neuron.ParametricLIFNode)):
        assert isinstance(ours, theirs) and isinstance(ours, neuron.BaseNode) and isinstance(ours, base.MemoryModule)
    net = nn.Sequential(nn.Linear(5, 6), tks.LIFNode(step_mode="m"), nn.Linear(6, 4), tks.IFNode(step_mode="m"))
    x = inputs((3, 2, 5), 0) * 3
    with torch.no_grad():
        spikes_lif = net[:2](x)
        functional.reset_net(net)
    assert spikes_lif.any()
    for cls in (neuron.LIFNode, neuron.BaseNode):
        mon = monitor.OutputMonitor(net, cls)
        with torch.no_grad():
            out = net(x)
        functional.reset_net(net)
        assert len(mon.records) == (1 if cls is neuron.LIFNode else 2)
        assert torch.equal(mon.records[0], spikes_lif)
        assert cls is neuron.LIFNode or torch.equal(mon.records[1], out)
        mon.remove_hooks()


def test_surrogate_class_instead_of_instance_is_refused():
    with pytest.raises(TypeError, match=r"pass an instance, e.g. ATan\(\)"):
        tks.LIFNode(surrogate_function=surrogate.ATan)
    with pytest.raises(TypeError, match=r"instance"):
        tks.ParametricLIFNode(surrogate_function=tks.surrogate.Surrogate)


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_state_follows_the_input_dtype_across_calls(step_mode):
    """fp64 then fp32 without a reset: the carried state is cast, as spikingjelly casts it."""
    ours, ref = make_pair("lif", {}, step_mode)
    x64 = inputs((3, 2, 4), 0, torch.float64)
    assert_equal(feed(ours, x64, step_mode), feed(ref, x64, step_mode), "spikes fp64")
    x32 = inputs((3, 2, 4), 1)
    assert_equal(feed(ours, x32, step_mode), feed(ref, x32, step_mode), "spikes fp32 after fp64")
    assert ours.v.dtype == torch.float32
    assert_rel_close(ours.v, ref.v, TOL, "v")


def test_numpy_scalars_are_accepted_and_bools_refused():
    import numpy as np

    ours = tks.LIFNode(tau=np.float32(3.0), v_threshold=np.float64(0.5), v_reset=np.int64(0), step_mode="m")
    ref = neuron.LIFNode(tau=3.0, v_threshold=0.5, v_reset=0.0, step_mode="m")
    assert type(ours.tau) is float and type(ours.v_threshold) is float and type(ours.v_reset) is float
    check_against_spikingjelly(ours, ref, "m")
    assert tks.ParametricLIFNode(init_tau=np.array(2.5)).w.item() == pytest.approx(-np.log(1.5))
    with pytest.raises(TypeError, match="tau must be a float"):
        tks.LIFNode(tau=np.bool_(True))
    with pytest.raises(TypeError, match="v_threshold must be a float"):
        tks.LIFNode(v_threshold=True)


def test_compile_dynamic_with_a_spikingjelly_surrogate_object():
    """torch.compile(fullgraph=True, dynamic=True) of a neuron whose surrogate is a spikingjelly
    object (the README's example), and an alpha changed afterwards is honoured under compile."""
    fn = surrogate.ATan()
    node = tks.LIFNode(step_mode="m", surrogate_function=fn)
    lin = nn.Linear(5, 5)

    def run(x):
        out = node(lin(x))
        functional.reset_net(node)
        return out

    compiled = torch.compile(run, fullgraph=True, dynamic=True, backend="aot_eager")
    x = inputs((4, 3, 5), 0)
    for alpha in (2.0, 3.5):
        fn.alpha = alpha
        out_c, out_e = compiled(x), run(x)
        assert_equal(out_c, out_e, f"spikes alpha={alpha}")
        g_c, g_e = (torch.autograd.grad(o.sum(), x)[0] for o in (compiled(x), run(x)))
        assert_rel_close(g_c, g_e, TOL, f"grad alpha={alpha}")
