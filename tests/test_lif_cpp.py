"""The C++ CPU kernels of the fused LIF (backend="cpp", ops torch.ops.tks.lif_forward/backward)
against the eager reference and spikingjelly 2.0.0, their torch.library registration
(torch.compile, opcheck), and the errors when they cannot run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tks_kernels import _ext
from tks_kernels._backends import resolve_backend
from tks_kernels.lif import SURROGATES, lif_multistep, lif_multistep_reference
from tks_kernels.lif import config as lif_config

from _utils import assert_equal, assert_rel_close
from test_lif import (COUNT_GRID, COUNT_IDS, GRID, LAYOUTS, LEAKS, RESETS, SJ_COUNT_CASES, SJ_GRID, TOL,
                      check_backward_op_not_differentiable, check_compiled_double_backward_refused, check_count_case,
                      check_count_compile, check_counts_lif_charge, check_count_opcheck, check_count_saved_bytes, check_count_ties_and_saturation,
                      check_counts_against_spikingjelly, check_counts_non_contiguous, check_double_backward_refused,
                      check_low_precision, check_memory_format, check_reads_x_in_place, check_spikingjelly_agreement,
                      compare, count_options, leak_grad_scale, make_case, run)

ROOT = Path(__file__).resolve().parents[1]
CPP_REASON = _ext.load_reason("cpp")


@pytest.fixture(autouse=True)
def _cpp_built():
    """Every install builds the C++ extension: when it does not load, each test here fails with the
    reason (a skip would hide a broken install)."""
    if CPP_REASON is not None:
        pytest.fail(f"backend='cpp' unavailable: {CPP_REASON}")
CPU = "cpu"


# ---------------------------------------------------------------- against the reference

@pytest.mark.parametrize("leak,decay_input,reset,detach_reset,store_v_seq", GRID,
                         ids=[f"{l}-di{int(d)}-{r}-det{int(dr)}-seq{int(sv)}" for l, d, r, dr, sv in GRID])
@pytest.mark.parametrize("surrogate", list(SURROGATES))
def test_cpp_matches_reference_option_grid(leak, decay_input, reset, detach_reset, store_v_seq, surrogate):
    x, v_init, leak_kw = make_case((6, 3, 211), torch.float32, CPU, leak)
    spikes = compare(x, v_init, leak_kw, backend="cpp", decay_input=decay_input, v_reset=RESETS[reset],
                     detach_reset=detach_reset, surrogate=surrogate, alpha=None, store_v_seq=store_v_seq,
                     v_threshold=0.7)
    rate = spikes.float().mean().item()
    assert 0.02 < rate < 0.98, f"the case must exercise both branches, firing rate {rate}"


@pytest.mark.parametrize("T", [1, 2, 37, 300])
@pytest.mark.parametrize("leak", LEAKS)
def test_cpp_lengths(T, leak):
    x, v_init, leak_kw = make_case((T, 1531 if T < 100 else 67), torch.float32, CPU, leak)
    compare(x, v_init, leak_kw, backend="cpp", v_threshold=0.5, surrogate="piecewise_quadratic", alpha=2.0)


# 4097: one neuron past the kernel's 4096-neuron chunk; 2 * 40000: many chunks, a partial one, both threads
@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 9), (2, 3, 4, 5), (3, 2, 3, 5, 7), (5, 1), (7,), (3, 4097),
                                   (3, 2, 40000)])
def test_cpp_shapes(shape):
    # (compare() takes a 0-dim gradient for the leak's: no v_init for a 1-D x_seq)
    x, v_init, leak_kw = make_case(shape, torch.float32, CPU, "lif", with_v_init=len(shape) > 1)
    compare(x, v_init, leak_kw, backend="cpp", v_threshold=0.6)
    x, _, leak_kw = make_case(shape, torch.float32, CPU, "tau_tensor")
    compare(x, None, leak_kw, backend="cpp", v_threshold=0.6, store_v_seq=True)


def test_cpp_empty_neurons():
    x = torch.zeros(3, 0, requires_grad=True)
    tau = torch.tensor(2.0, requires_grad=True)
    s, v = lif_multistep(x, tau=tau, backend="cpp")
    assert s.shape == (3, 0) and v.shape == (0,)
    gx, gtau = torch.autograd.grad(s.sum() + v.sum(), [x, tau], allow_unused=True)
    assert gx.shape == (3, 0) and gtau.item() == 0.0


@pytest.mark.parametrize("layout", ["time_strided", "permuted", "sliced", "expanded"])
def test_cpp_non_contiguous(layout):
    base = torch.randn(40, 6, 30) * 1.5
    if layout == "time_strided":
        x = base[::2]  # time stride 2*N, each step contiguous: read in place
    elif layout == "permuted":
        x = base.permute(1, 0, 2)
    elif layout == "sliced":
        x = base[:, :, 3:17]
    else:
        x = base[0].expand(5, 6, 30)  # time stride 0: the same input at every step
    assert not x.is_contiguous()
    for leak in ["lif", "decay_tensor"]:
        for decay_input in [True, False]:
            _, _, leak_kw = make_case(tuple(x.shape), torch.float32, CPU, leak)
            kw = dict(v_threshold=0.8, decay_input=decay_input)
            s_ref, v_ref, g_ref = run("reference", x.contiguous().requires_grad_(), None, leak_kw, **kw)
            view = x.detach().requires_grad_()
            s, v, g = run("cpp", view, None, leak_kw, **kw)
            assert_equal(s, s_ref, "spikes")
            assert_rel_close(v, v_ref, TOL, "v")
            for i, (p, q) in enumerate(zip(g, g_ref)):
                floor = leak_grad_scale(x.contiguous(), None, leak_kw, **kw) if p.dim() == 0 else 0.0
                assert_rel_close(p, q, TOL, f"grad[{i}]", floor=floor)


@pytest.mark.parametrize("name", LAYOUTS)
def test_cpp_memory_format_kept(name):
    check_memory_format("cpp", CPU, name)


def test_cpp_reads_x_in_place():
    check_reads_x_in_place("cpp")


def test_cpp_double_backward_refused():
    check_double_backward_refused("cpp", CPU)


def test_cpp_backward_op_not_differentiable():
    check_backward_op_not_differentiable(torch.ops.tks.lif_backward.default, "cpp", CPU)


def test_cpp_compiled_double_backward_refused():
    check_compiled_double_backward_refused("cpp", CPU)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_cpp_low_precision(dtype, leak, store_v_seq):
    check_low_precision("cpp", (7, 2, 333), dtype, CPU, leak, store_v_seq)


@pytest.mark.parametrize("which", ["spikes", "v"])
def test_cpp_gradient_from_one_output(which):
    """Only one output used: the other's gradient is None and must count as zero."""
    x, v_init, leak_kw = make_case((5, 400), torch.float32, CPU, "tau_tensor")
    out = {}
    for backend in ["reference", "cpp"]:
        fn = lif_multistep_reference if backend == "reference" else lambda *a, **k: lif_multistep(*a, backend="cpp", **k)
        s, v = fn(x, v_init, **leak_kw, v_threshold=0.5)
        loss = (s * torch.linspace(-1, 1, s.shape[-1])).sum() if which == "spikes" else (v * v).sum()
        out[backend] = torch.autograd.grad(loss, [x, v_init, leak_kw["tau"]])
    for a, b in zip(out["cpp"], out["reference"]):
        assert_rel_close(a, b, TOL, "grad")


def test_cpp_no_grad_path():
    x = torch.randn(4, 100)
    with torch.no_grad():
        s, v = lif_multistep(x, backend="cpp")
    s_ref, v_ref = lif_multistep(x, backend="torch")
    assert_equal(s, s_ref, "spikes")
    assert_equal(v, v_ref, "v")
    assert not s.requires_grad


def test_cpp_fire_at_threshold_exactly():
    """Θ(0) = 1: H equal to the threshold fires."""
    s, _ = lif_multistep(torch.tensor([[1.0, 0.999999]]), tau=None, v_threshold=1.0, backend="cpp")
    assert s.tolist() == [[1.0, 0.0]]


def test_cpp_forward_is_bitwise_the_reference():
    """fp32 v equals the reference bit for bit (same operations, same rounding, no FMA)."""
    for leak in LEAKS:
        for decay_input in [True, False]:
            x, v_init, leak_kw = make_case((9, 4099), torch.float32, CPU, leak, scale=0.7)
            kw = dict(v_threshold=0.4, decay_input=decay_input, store_v_seq=True, v_reset=-0.1)
            with torch.no_grad():
                s_ref, v_ref = lif_multistep_reference(x, v_init, **leak_kw, **kw)
                s, v = lif_multistep(x, v_init, **leak_kw, **kw, backend="cpp")
            assert_equal(s, s_ref, f"{leak} spikes")
            assert_equal(v, v_ref, f"{leak} decay_input={decay_input} v")


@pytest.mark.parametrize("tau", [2.0, 4.0, 3.0])
def test_cpp_power_of_two_tau(tau):
    """A power-of-two tau runs as the multiplicative leak (decay = 1/tau, no division per element):
    spikes and v bit for bit the reference's, gradients as close as any tau's."""
    for decay_input in [True, False]:
        x, v_init, _ = make_case((9, 4099), torch.float32, CPU, "lif", scale=0.7)
        kw = dict(tau=tau, v_threshold=0.4, decay_input=decay_input, store_v_seq=True, v_reset=-0.1)
        with torch.no_grad():
            s_ref, v_ref = lif_multistep_reference(x, v_init, **kw)
            s, v = lif_multistep(x, v_init, **kw, backend="cpp")
        assert_equal(s, s_ref, f"tau={tau} spikes")
        assert_equal(v, v_ref, f"tau={tau} decay_input={decay_input} v")
        compare(x, v_init, {"tau": tau}, backend="cpp", decay_input=decay_input, v_threshold=0.4, v_reset=None)


@pytest.mark.parametrize("counts", [False, True], ids=["binary", "counts"])
def test_cpp_leak_gradient_is_deterministic_across_thread_counts(counts):
    """The learnable leak's gradient is summed per chunk, then over chunks in order."""
    x, v_init, leak_kw = make_case((4, 3, 50000), torch.float32, CPU, "decay_tensor")
    kw = count_options(4) if counts else dict(v_threshold=0.6)
    threads = torch.get_num_threads()
    grads = []
    try:
        for n in [1, 2, 1]:
            torch.set_num_threads(n)
            grads.append(run("cpp", x, v_init, leak_kw, **kw)[2][2])
    finally:
        torch.set_num_threads(threads)
    assert grads[0].item() == grads[1].item() == grads[2].item()


_ISA_SCRIPT = """
import sys, torch
from tks_kernels import _ext
from tks_kernels.lif import lif_multistep
_ext.load("cpp")
out = {"isa": torch.ops.tks.lif_cpu_isa()}
for dtype in [torch.float32, torch.bfloat16, torch.float16]:
    for surrogate in ["sigmoid", "erf", "atan"]:
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(5, 3, 3001, generator=g) * 2).to(dtype).requires_grad_()
        decay = torch.tensor(0.4, requires_grad=True)
        s, v = lif_multistep(x, decay=decay, v_threshold=0.5, surrogate=surrogate, store_v_seq=True, backend="cpp")
        gx, gd = torch.autograd.grad((s.float() * torch.randn(s.shape, generator=g)).sum() + v.sum(), [x, decay])
        out[(str(dtype), surrogate)] = (s, v, gx, gd)
    # spike counts: V_th a power of two (H * 1/V_th) and not (H / V_th); both charges
    for th, charge in [(1.0, "ilif"), (0.3, "ilif"), (0.3, "lif")]:
        g = torch.Generator().manual_seed(1)
        x = (torch.randn(5, 3, 3001, generator=g) * 3).to(dtype).requires_grad_()
        decay = torch.tensor(0.4, requires_grad=True)
        s, v = lif_multistep(x, decay=decay, v_threshold=th, v_reset=None, decay_input=False, max_spike_count=7,
                             grad_window=(0.5, 6.0), store_v_seq=True, count_charge=charge, backend="cpp")
        gx, gd = torch.autograd.grad((s.float() * torch.randn(s.shape, generator=g)).sum() + v.sum(), [x, decay])
        out[(str(dtype), f"count th={th} {charge}")] = (s, v, gx, gd)
torch.save(out, sys.argv[1])
"""


def test_cpp_isa_builds_agree_bit_for_bit(tmp_path):
    """The baseline, AVX2 and AVX-512 builds of the CPU kernels give the same bits (same operations
    per element, no reassociation); TKS_CPU_ISA=generic|avx2 caps the one that runs."""
    import os
    import subprocess
    import sys

    results = {}
    for cap in ["generic", "avx2", "default"]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        env.pop("TKS_CPU_ISA", None)
        if cap != "default":
            env["TKS_CPU_ISA"] = cap
        out = tmp_path / f"{cap}.pt"
        subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(out)], env=env, check=True, timeout=300)
        result = torch.load(out)
        results[result.pop("isa")] = result
    assert "generic" in results
    if len(results) == 1:
        pytest.skip("this CPU (or compiler) has no AVX2 / AVX-512 build of the kernels: nothing to compare")
    base = results.pop("generic")
    for isa, result in results.items():
        for key, tensors in base.items():
            for name, a, b in zip(["spikes", "v", "grad_x", "grad_decay"], tensors, result[key]):
                assert_equal(b, a, f"{key} {name}: {isa} vs generic")


@pytest.mark.parametrize("kind,decay_input,v_reset,detach_reset,surrogate", SJ_GRID,
                         ids=[f"{k}-di{int(d)}-{'soft' if r is None else 'hard'}-det{int(dr)}-{s}" for k, d, r, dr, s in SJ_GRID])
def test_cpp_matches_spikingjelly(kind, decay_input, v_reset, detach_reset, surrogate):
    check_spikingjelly_agreement(kind, decay_input, v_reset, detach_reset, surrogate, ["cpp"])


# ---------------------------------------------------------------- integer spike counts (I-LIF)

@pytest.mark.parametrize("D,leak,detach,window,store_v_seq", COUNT_GRID, ids=COUNT_IDS)
def test_cpp_counts_match_reference(D, leak, detach, window, store_v_seq):
    check_count_case("cpp", CPU, D, leak, detach, window, store_v_seq)


@pytest.mark.parametrize("T", [1, 2, 37, 300])
def test_cpp_counts_lengths(T):
    for leak in ["lif", "decay_tensor"]:
        x, v_init, leak_kw = make_case((T, 1531 if T < 100 else 67), torch.float32, CPU, leak, scale=2.0)
        compare(x, v_init, leak_kw, backend="cpp", **count_options(4))


# 4097: one neuron past the 4096-neuron chunk; 40000: many chunks, both threads
@pytest.mark.parametrize("shape", [(4, 7), (3, 2, 3, 5, 7), (5, 1), (7,), (3, 4097), (3, 40000)])
def test_cpp_counts_shapes(shape):
    x, v_init, leak_kw = make_case(shape, torch.float32, CPU, "lif", with_v_init=len(shape) > 1, scale=2.0)
    compare(x, v_init, leak_kw, backend="cpp", **count_options(3))
    x, _, leak_kw = make_case(shape, torch.float32, CPU, "tau_tensor", scale=2.0)
    compare(x, None, leak_kw, backend="cpp", store_v_seq=True, **count_options(2, "narrower"))


def test_cpp_counts_non_contiguous():
    check_counts_non_contiguous("cpp", CPU)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
def test_cpp_counts_low_precision(dtype, leak):
    check_low_precision("cpp", (7, 2, 333), dtype, CPU, leak, leak == "lif", **count_options(15))


def test_cpp_count_ties_and_saturation():
    check_count_ties_and_saturation("cpp", CPU)


def test_cpp_counts_forward_is_bitwise_the_reference():
    """fp32 counts and v equal the reference bit for bit, with V_th a power of two (the kernel
    multiplies by its exact reciprocal) and not (it divides), with either charge."""
    for leak in LEAKS:
        for th, charge in [(0.5, "ilif"), (1.0, "lif"), (0.3, "ilif"), (1.7, "lif")]:
            x, v_init, leak_kw = make_case((9, 4099), torch.float32, CPU, leak, scale=3.0)
            kw = dict(count_options(5, v_threshold=th), store_v_seq=True, count_charge=charge)
            with torch.no_grad():
                s_ref, v_ref = lif_multistep_reference(x, v_init, **leak_kw, **kw)
                s, v = lif_multistep(x, v_init, **leak_kw, **kw, backend="cpp")
            assert_equal(s, s_ref, f"{leak} counts, v_threshold={th}")
            assert_equal(v, v_ref, f"{leak} v, v_threshold={th}")


@pytest.mark.parametrize("leak", LEAKS)
def test_cpp_counts_lif_charge(leak):
    check_counts_lif_charge("cpp", CPU, leak)


@pytest.mark.parametrize("case", range(len(SJ_COUNT_CASES)))
def test_cpp_counts_match_spikingjelly(case):
    check_counts_against_spikingjelly(SJ_COUNT_CASES[case], ["cpp"])


def test_cpp_count_saved_bytes():
    check_count_saved_bytes("cpp", CPU)


def test_cpp_count_opcheck():
    check_count_opcheck(torch.ops.tks, CPU)


def test_cpp_count_compile():
    check_count_compile("cpp", CPU)


def test_cpp_count_memory_format():
    check_memory_format("cpp", CPU, "channels_last_5d", **{k: v for k, v in count_options(3).items()
                                                             if k != "v_threshold"})


# ---------------------------------------------------------------- backend choice

def test_auto_backend_picks_cpp_on_cpu():
    assert resolve_backend("auto", torch.ones(2, 3), "lif_multistep", lambda kind, x: _ext.unavailable_reason(kind, x, "lif")) == "cpp"


def test_auto_falls_back_to_reference_when_cpp_missing(monkeypatch):
    monkeypatch.setitem(_ext._op_reasons, ("cpp", "lif"), _ext._not_built("cpp"))
    x = torch.randn(3, 10)
    s, v = lif_multistep(x)  # auto: the reference
    assert_equal(v, lif_multistep_reference(x)[1], "v")
    with pytest.raises(RuntimeError, match=r"not built; build it with: pip install --no-build-isolation -e \."):
        lif_multistep(x, backend="cpp")


def test_import_error_messages(monkeypatch):
    missing = ModuleNotFoundError("No module named 'tks_kernels._C_cuda'", name="tks_kernels._C_cuda")
    # without a build report (the message must not depend on how this checkout was built)
    monkeypatch.setattr(_ext, "_build_info", lambda: None)
    assert "pip install --no-build-isolation -e ." in _ext._import_error("cuda", missing)
    assert "no CUDA toolkit" in _ext._import_error("cuda", missing)
    # with the report of an install that skipped the CUDA build
    monkeypatch.setattr(_ext, "_build_info", lambda: {"cuda": {"built": False, "why": "TKS_SKIP_CUDA_BUILD=1"}})
    msg = _ext._import_error("cuda", missing)
    assert "the install skipped it (TKS_SKIP_CUDA_BUILD=1)" in msg and "pip install" in msg
    monkeypatch.undo()
    stale = ImportError("/x/_C.so: undefined symbol: _ZN3c104impl3cow11cow_deleterEPv")
    msg = _ext._import_error("cpp", stale)
    assert "built for another torch" in msg and "undefined symbol" in msg and "pip install" in msg


def test_cpp_backend_on_other_device_says_why():
    reason = _ext.unavailable_reason("cpp", torch.ones(2, device="meta"), "lif")
    assert "backend='cpp' runs on CPU tensors" in reason


def test_cuda_backend_on_cpu_tensor_says_why():
    with pytest.raises(RuntimeError, match="backend='cuda' runs on CUDA tensors and x_seq is on cpu"):
        lif_multistep(torch.ones(3, 4), backend="cuda")


# ---------------------------------------------------------------- the torch ops

def _forward_args(x, v_init=None, decay=None, leak=1, store_v_seq=False, save_h=True, surrogate=0, max_spike_count=0):
    # x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset,
    # surrogate, alpha, store_v_seq, save_h, max_spike_count, grad_min, grad_max
    return (x, v_init, decay, leak, 2.0, True, 0.5, 0.0, False, False, surrogate, 4.0, store_v_seq, save_h,
            max_spike_count, 0.0, float(max(max_spike_count, 0)))


def test_surrogate_and_leak_ids_match_the_header():
    """csrc/lif/surrogate.h and lif_kernel.h repeat the ids of surrogate.py and config.py."""
    header = (ROOT / "csrc/lif/surrogate.h").read_text()
    ids = {re.sub(r"(?<!^)([A-Z])", r"_\1", m.group(1)).lower(): int(m.group(2))
           for m in re.finditer(r"\bk(\w+) = (\d+),", header) if m.group(1) != "NumSurrogates"}
    assert ids == {name: sid for name, (sid, _) in SURROGATES.items()}
    kernel_h = (ROOT / "csrc/lif/lif_kernel.h").read_text()
    leaks = dict(re.findall(r"kLeak(\w+) = (\d)", kernel_h))
    assert (int(leaks["IF"]), int(leaks["Div"]), int(leaks["Mul"])) == (
        lif_config.LEAK_IF, lif_config.LEAK_DIV, lif_config.LEAK_MUL)


def test_opcheck_lif_ops():
    """Schema, fake implementation, autograd registration and AOT dispatch of the ops."""
    x = torch.randn(5, 3, 17, requires_grad=True)
    v_init = torch.randn(3, 17, requires_grad=True)
    decay = torch.tensor(0.4, requires_grad=True)
    torch.library.opcheck(torch.ops.tks.lif_forward.default, _forward_args(x, v_init))
    torch.library.opcheck(torch.ops.tks.lif_forward.default, _forward_args(x, v_init, decay, leak=2, store_v_seq=True))
    h = torch.randn(5, 3, 17)
    torch.library.opcheck(torch.ops.tks.lif_backward.default, (
        torch.randn(5, 3, 17), torch.randn(3, 17), h, x.detach(), v_init.detach(), decay.detach(),
        2, 2.0, True, 0.5, 0.0, False, False, 1, 2.0, False, torch.float32, True))


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph_matches_eager(dynamic):
    """Linear -> LIF (cpp op) -> Linear compiles without a graph break (static and dynamic shapes);
    values and gradients equal eager."""
    torch.manual_seed(0)
    T, B, D = 6, 4, 32
    lin1, lin2 = torch.nn.Linear(D, 48), torch.nn.Linear(48, 5)
    tau = torch.tensor(2.5, requires_grad=True)

    def model(x):
        spikes, v = lif_multistep(lin1(x), tau=tau, v_threshold=0.3, surrogate="atan", backend="cpp")
        return lin2(spikes).mean(0), v

    x = torch.randn(T, B, D)
    params = [*lin1.parameters(), *lin2.parameters(), tau]
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    outs = {}
    for name, fn in [("eager", model), ("compiled", compiled)]:
        out, v = fn(x)
        grads = torch.autograd.grad((out * out).sum() + v.sum(), params)
        outs[name] = (out, v, grads)
    (o1, v1, g1), (o2, v2, g2) = outs["eager"], outs["compiled"]
    assert_equal(o2, o1, "output")
    assert_equal(v2, v1, "v")
    for i, (a, b) in enumerate(zip(g2, g1)):
        assert_rel_close(a, b, 1e-6, f"grad[{i}]")


def test_torch_compile_inductor():
    torch.manual_seed(1)
    lin = torch.nn.Linear(16, 24)

    def model(x):
        s, v = lif_multistep(lin(x), decay=torch.sigmoid(w), store_v_seq=True, backend="cpp")
        return s.sum(0), v

    w = torch.tensor(0.3, requires_grad=True)
    x = torch.randn(5, 3, 16)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    (s1, v1), (s2, v2) = model(x), compiled(x)
    assert_equal(s2, s1, "spikes")
    assert_rel_close(v2, v1, 1e-6, "v")
    g1 = torch.autograd.grad(s1.sum() + v1.sum(), [w, *lin.parameters()])
    g2 = torch.autograd.grad(compiled(x)[0].sum() + compiled(x)[1].sum(), [w, *lin.parameters()])
    for i, (a, b) in enumerate(zip(g2, g1)):
        assert_rel_close(a, b, 1e-5, f"grad[{i}]")


# ---------------------------------------------------------------- bad input to the ops

@pytest.mark.parametrize("change,match", [
    (dict(x=torch.ones(3, 4, dtype=torch.int32)), "x_seq has dtype Int"),
    (dict(x=torch.ones(3, 4, dtype=torch.float64)), "x_seq has dtype Double"),
    (dict(x=torch.ones(0, 4)), "T >= 1"),
    (dict(v_init=torch.zeros(5)), "v_init has shape"),
    (dict(v_init=torch.zeros(4, dtype=torch.int64)), "v_init has dtype Long"),
    (dict(leak=2), "needs decay"),
    (dict(leak=7), "leak must be 0"),
    (dict(decay=torch.ones(2), leak=2), "one element"),
    (dict(surrogate=9), "surrogate id 9"),
    (dict(v_init=torch.zeros(4, device="meta")), "v_init is on meta"),
    (dict(max_spike_count=-1), "max_spike_count must be 0"),
    (dict(max_spike_count=4), "need soft_reset=True and decay_input=False"),
])
def test_op_bad_input_raises_clear_error(change, match):
    kw = dict(x=torch.ones(3, 4))
    kw.update(change)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.tks.lif_forward(*_forward_args(**kw))


def test_op_backward_without_saved_h_raises():
    x = torch.randn(3, 4, requires_grad=True)
    s, v, _ = torch.ops.tks.lif_forward(*_forward_args(x, save_h=False))
    with pytest.raises(RuntimeError, match="save_h=False"):
        v.sum().backward()


@pytest.mark.parametrize("store_v_seq", [False, True])
def test_cpp_large_outputs_reused_across_calls(store_v_seq):
    """Outputs of 32 MiB and more come from the binding's huge-page block cache: three calls in a
    row (the later ones reuse freed blocks, whose old contents must all be overwritten) match the
    reference, with a size that is not a multiple of the 2 MiB block."""
    T, N = 8, 2**20 + 37
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(T, N, generator=g) * 1.5 + 0.3).requires_grad_()
    w_s = torch.randn(T, N, generator=g)
    kw = dict(tau=2.0, v_threshold=0.5, surrogate="piecewise_quadratic", alpha=2.0, store_v_seq=store_v_seq)
    s_ref, v_ref = lif_multistep_reference(x, **kw)
    (g_ref,) = torch.autograd.grad((s_ref * w_s).sum() + v_ref.sum(), x)
    for call in range(3):
        s, v = lif_multistep(x, backend="cpp", **kw)
        (gx,) = torch.autograd.grad((s * w_s).sum() + v.sum(), x)
        assert_equal(s, s_ref, f"spikes, call {call}")
        assert_rel_close(v, v_ref, TOL, f"v, call {call}")
        assert_rel_close(gx, g_ref, TOL, f"grad_x, call {call}")
        del s, v, gx


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (the extension reads its environment once per process)."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600)


LARGE_OUTPUT_CALLS = """
import torch
from tks_kernels import lif_multistep, lif_multistep_reference
x = torch.randn(8, 2**20 + 37, generator=torch.Generator().manual_seed(3)) * 1.5 + 0.3
s_ref, v_ref = lif_multistep_reference(x, tau=2.0, v_threshold=0.5)
for call in range(3):
    s, v = lif_multistep(x, tau=2.0, v_threshold=0.5, backend="cpp")
    assert torch.equal(s, s_ref), call
    assert torch.allclose(v, v_ref, rtol=1e-5, atol=1e-6), call
    del s, v
print("ok")
"""


@pytest.mark.parametrize("value", ["0", "64"])
def test_cpp_output_cache_size_from_the_environment(value):
    """TKS_CPU_OUTPUT_CACHE_MB=0 keeps no freed output (every call maps fresh blocks), 64 fewer
    than one call frees: the outputs are right either way."""
    proc = _run_python(LARGE_OUTPUT_CALLS, TKS_CPU_OUTPUT_CACHE_MB=value)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("value", ["lots", "-1", "1.5", "99999999999"])
def test_cpp_output_cache_bad_environment_value_raises(value):
    code = ("import torch, tks_kernels\n"
            "try:\n"
            "    tks_kernels.lif_multistep(torch.randn(2, 3), backend='cpp')\n"
            "except ValueError as e:\n"
            "    print(e)\n")
    proc = _run_python(code, TKS_CPU_OUTPUT_CACHE_MB=value)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"TKS_CPU_OUTPUT_CACHE_MB={value!r} is not a size in MiB" in proc.stdout, proc.stdout + proc.stderr[-2000:]
