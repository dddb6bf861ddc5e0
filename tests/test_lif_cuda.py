"""The CUDA kernels of the fused LIF (backend="cuda", ops torch.ops.tks.lif_forward/backward).

Without a GPU (CI): the extension is built whenever a CUDA toolkit is present, imports, registers
its CUDA kernels, carries sm_90 code, and rejects CPU tensors with a clear error. With a GPU: the
kernels against the eager reference over the option grid, against the Triton kernels, and on
tensors past 2^31 elements."""
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch

from tks_kernels import _ext
from tks_kernels.lif import SURROGATES, lif_multistep

from _utils import assert_equal, assert_rel_close
from test_lif import (COUNT_GRID, COUNT_IDS, GRID, LAYOUTS, LEAKS, RESETS, SJ_COUNT_CASES, TOL, check_64bit_offsets,
                      check_backward_op_not_differentiable, check_compiled_double_backward_refused, check_count_case,
                      check_count_compile, check_counts_lif_charge, check_count_opcheck, check_count_saved_bytes, check_count_ties_and_saturation,
                      check_counts_against_spikingjelly, check_counts_non_contiguous, check_double_backward_refused,
                      check_low_precision, check_memory_format, compare, count_options, leak_grad_scale, make_case, run)

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (this machine has none): run on a GPU machine")


def _nvcc():
    """The CUDA toolkit's nvcc that setup.py would find, or None."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for candidate in ([home] if home else []) + ["/usr/local/cuda"]:
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return os.path.join(candidate, "bin", "nvcc")
    return shutil.which("nvcc")


def _why_no_cuda_build():
    if os.environ.get("TKS_SKIP_CUDA_BUILD", "0") == "1":
        return "TKS_SKIP_CUDA_BUILD=1: the CUDA extension is not built on purpose"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: no CUDA extension"
    if _nvcc() is None:
        return "no CUDA toolkit (nvcc) here: no CUDA extension"
    return None


NO_BUILD = _why_no_cuda_build()
needs_build = pytest.mark.skipif(NO_BUILD is not None, reason=str(NO_BUILD))


# ---------------------------------------------------------------- the build (no GPU needed)

@needs_build
def test_cuda_extension_is_built_and_imports():
    """A toolkit is here, so the install built tks_kernels._C_cuda; it imports without a GPU
    (only libcudart has to load)."""
    reason = _ext.load_reason("cuda")
    assert reason is None, f"a CUDA toolkit ({_nvcc()}) is present but: {reason}"
    for op in ["tks::lif_forward", "tks::lif_backward"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), f"{op} has no CUDA kernel"


def fatbin_entries(path):
    """(kind, sm) of the device code in a shared library's fat binaries: kind "elf" (SASS for
    sm_<sm>) or "ptx". Read from the fatbin headers (magic 0xBA55ED50, 16-byte header, then entries
    of kind u16 @0, header size u32 @4, payload size u64 @8, arch u32 @28) where cuobjdump is missing."""
    data = Path(path).read_bytes()
    entries, start = [], 0
    while (off := data.find(b"\x50\xed\x55\xba", start)) >= 0:
        start = off + 4
        version, header_size, fat_size = struct.unpack_from("<HHQ", data, off + 4)
        if version != 1 or header_size != 16:
            continue
        entry, end = off + 16, min(off + 16 + fat_size, len(data))
        while entry + 64 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            if not 64 <= entry_header <= 4096:
                break
            entries.append(({1: "ptx", 2: "elf", 16: "elf"}.get(kind, f"kind{kind}"), arch))
            entry += entry_header + payload
    return entries


@needs_build
def test_cuda_binary_carries_sm90_code():
    import importlib

    _ext.load("cuda")
    so = importlib.import_module("tks_kernels._C_cuda").__file__
    cuobjdump = shutil.which("cuobjdump") or (
        os.path.join(os.path.dirname(_nvcc()), "cuobjdump") if _nvcc() else None)
    if cuobjdump and os.path.exists(cuobjdump):
        listing = subprocess.run([cuobjdump, "--list-elf", so], capture_output=True, text=True, check=True).stdout
        assert "sm_90" in listing, f"no sm_90 ELF in {so}:\n{listing}"
    entries = fatbin_entries(so)
    assert ("elf", 90) in entries, f"no sm_90 SASS in {so}; its device code: {entries}"


@needs_build
def test_cuda_kernel_rejects_cpu_tensors():
    """The CUDA kernel called with CPU tensors (here by redispatching to it) raises, never crashes."""
    _ext.load("cuda")
    x = torch.randn(3, 4)
    args = (x, None, None, 1, 2.0, True, 0.5, 0.0, False, False, 0, 4.0, False, True)
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError, match="CUDA kernel takes CUDA tensors"):
        torch.ops.tks.lif_forward.default.redispatch(keys, *args)
    h = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="CUDA kernel takes CUDA tensors"):
        torch.ops.tks.lif_backward.default.redispatch(
            keys, None, torch.ones(4), h, None, None, None, 1, 2.0, True, 0.5, 0.0, False, False, 0, 4.0, False,
            torch.float32, False)


def test_cuda_backend_on_cpu_tensor_says_why():
    with pytest.raises(RuntimeError, match="backend='cuda' runs on CUDA tensors and x_seq is on cpu"):
        lif_multistep(torch.ones(3, 4), backend="cuda")


# ---------------------------------------------------------------- on a GPU

@needs_gpu
@pytest.mark.parametrize("leak,decay_input,reset,detach_reset,store_v_seq", GRID,
                         ids=[f"{l}-di{int(d)}-{r}-det{int(dr)}-seq{int(sv)}" for l, d, r, dr, sv in GRID])
@pytest.mark.parametrize("surrogate", list(SURROGATES))
def test_cuda_matches_reference_option_grid(leak, decay_input, reset, detach_reset, store_v_seq, surrogate):
    x, v_init, leak_kw = make_case((6, 3, 211), torch.float32, "cuda", leak)
    spikes = compare(x, v_init, leak_kw, backend="cuda", decay_input=decay_input, v_reset=RESETS[reset],
                     detach_reset=detach_reset, surrogate=surrogate, alpha=None, store_v_seq=store_v_seq,
                     v_threshold=0.7)
    rate = spikes.float().mean().item()
    assert 0.02 < rate < 0.98, f"the case must exercise both branches, firing rate {rate}"


@needs_gpu
@pytest.mark.parametrize("T", [1, 2, 37, 300])
@pytest.mark.parametrize("leak", LEAKS)
def test_cuda_lengths(T, leak):
    x, v_init, leak_kw = make_case((T, 1532 if T < 100 else 68), torch.float32, "cuda", leak)
    compare(x, v_init, leak_kw, backend="cuda", v_threshold=0.5, surrogate="piecewise_quadratic", alpha=2.0)


# N % 4 != 0 takes the one-neuron-per-thread path; 3 * 100000 spans many blocks of the reduction
@needs_gpu
@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 9), (2, 3, 4, 5), (5, 1), (4, 2048), (4, 2049),
                                   (3, 3, 100000)])
def test_cuda_shapes(shape):
    x, v_init, leak_kw = make_case(shape, torch.float32, "cuda", "lif")
    compare(x, v_init, leak_kw, backend="cuda", v_threshold=0.6)
    x, _, leak_kw = make_case(shape, torch.float32, "cuda", "tau_tensor")
    compare(x, None, leak_kw, backend="cuda", v_threshold=0.6, store_v_seq=True)


@needs_gpu
@pytest.mark.parametrize("layout", ["time_strided", "permuted", "sliced", "offset_by_one"])
def test_cuda_non_contiguous_and_misaligned(layout):
    base = torch.randn(40, 6, 32, device="cuda") * 1.5
    if layout == "time_strided":
        x = base[::2]  # each step contiguous: read in place, time stride 2*N
    elif layout == "permuted":
        x = base.permute(1, 0, 2)
    elif layout == "sliced":
        x = base[:, :, 3:17]
    else:
        x = base.flatten()[1:1 + 20 * 6 * 32].view(20, 6, 32)  # contiguous but 4 bytes off 16-byte alignment
    for leak in ["lif", "decay_tensor"]:
        _, _, leak_kw = make_case(tuple(x.shape), torch.float32, "cuda", leak)
        s_ref, v_ref, g_ref = run("reference", x.contiguous().requires_grad_(), None, leak_kw, v_threshold=0.8)
        s, v, g = run("cuda", x.detach().requires_grad_(), None, leak_kw, v_threshold=0.8)
        assert_equal(s, s_ref, "spikes")
        assert_rel_close(v, v_ref, TOL, "v")
        for i, (p, q) in enumerate(zip(g, g_ref)):
            floor = leak_grad_scale(x.contiguous(), None, leak_kw, v_threshold=0.8) if p.dim() == 0 else 0.0
            assert_rel_close(p, q, TOL, f"grad[{i}]", floor=floor)


@needs_gpu
@pytest.mark.parametrize("name", LAYOUTS)
def test_cuda_memory_format_kept(name):
    check_memory_format("cuda", "cuda", name)


@needs_gpu
def test_cuda_reads_x_in_place():
    """No copy of a dense-step x: the call allocates on the GPU what it does for the contiguous copy."""
    from test_lif import dense_step_layouts

    def cost(x):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        lif_multistep(x.detach().requires_grad_(), v_threshold=0.6, backend="cuda")
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    for name, x in dense_step_layouts("cuda").items():
        assert cost(x) == cost(x.contiguous()), name


@needs_gpu
def test_cuda_double_backward_refused():
    check_double_backward_refused("cuda", "cuda")


@needs_gpu
def test_cuda_backward_op_not_differentiable():
    check_backward_op_not_differentiable(torch.ops.tks.lif_backward.default, "cuda", "cuda")


@needs_gpu
def test_cuda_compiled_double_backward_refused():
    check_compiled_double_backward_refused("cuda", "cuda")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_cuda_low_precision(dtype, leak, store_v_seq):
    check_low_precision("cuda", (7, 2, 336), dtype, "cuda", leak, store_v_seq)


@needs_gpu
@pytest.mark.parametrize("leak", LEAKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_triton(leak, dtype):
    """Same math as the Triton kernels: spikes and v bit for bit, gradients to rounding."""
    x, v_init, leak_kw = make_case((9, 4, 1000), dtype, "cuda", leak)
    kw = dict(v_threshold=0.5, surrogate="sigmoid", store_v_seq=True)
    s_t, v_t, g_t = run("triton", x, v_init, leak_kw, **kw)
    s_c, v_c, g_c = run("cuda", x, v_init, leak_kw, **kw)
    assert_equal(s_c, s_t, "spikes")
    assert_equal(v_c, v_t, "v")
    for i, (a, b) in enumerate(zip(g_c, g_t)):
        if a.dim() == 0:  # the leak's gradient: a sum of terms of both signs (see leak_grad_scale)
            assert_rel_close(a, b, TOL, f"grad[{i}]", floor=leak_grad_scale(x, v_init, leak_kw, **kw))
        else:  # exp differs by an ulp between the two; low precision rounds grad_x to the input dtype
            assert_rel_close(a.float(), b.float(), 1e-6 if dtype == torch.float32 else 1e-2, f"grad[{i}]")


@needs_gpu
def test_cuda_leak_gradient_is_deterministic():
    """The leak's gradient is reduced inside the launch in a fixed order: the same bits every run."""
    x, v_init, leak_kw = make_case((5, 4, 250001), torch.float32, "cuda", "decay_tensor")
    grads = [run("cuda", x, v_init, leak_kw, v_threshold=0.6)[2][2].item() for _ in range(3)]
    assert grads[0] == grads[1] == grads[2]


@needs_gpu
def test_cuda_runs_on_the_current_stream():
    x, v_init, leak_kw = make_case((6, 3, 4000), torch.float32, "cuda", "decay_tensor")
    s_ref, v_ref, g_ref = run("cuda", x, v_init, leak_kw, v_threshold=0.6)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        s, v, g = run("cuda", x, v_init, leak_kw, v_threshold=0.6)
    torch.cuda.current_stream().wait_stream(stream)
    assert_equal(s, s_ref, "spikes")
    assert_equal(v, v_ref, "v")
    for a, b in zip(g, g_ref):
        assert_equal(a, b, "grad")


@needs_gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fwd_bwd_in_a_cuda_graph(backend):
    """Forward and backward (with a learnable leak) capture into one CUDA graph and replay on new
    inputs exactly as eager calls compute them: no host sync and no allocation outside the pool."""
    x0, v_init, leak_kw = make_case((5, 3, 1000), torch.float32, "cuda", "decay_tensor")
    static_x = x0.detach().clone().requires_grad_(True)
    decay = leak_kw["decay"]
    w = torch.randn(x0.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(3))

    def step(x):
        spikes, v = lif_multistep(x, decay=decay, v_threshold=0.6, backend=backend)
        ((spikes * w).sum() + v.sum()).backward()
        return spikes, v

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (compiles, loads) outside the capture
        for _ in range(2):
            step(static_x)
            static_x.grad, decay.grad = None, None
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_spikes, static_v = step(static_x)
    graph_grad_x, graph_grad_decay = static_x.grad, decay.grad  # buffers of the graph's pool
    for seed in (11, 12):
        x_new = torch.randn(x0.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(seed)) + 0.4
        with torch.no_grad():
            static_x.copy_(x_new)
        graph.replay()
        ref_x = x_new.clone().requires_grad_(True)
        decay.grad = None
        ref_spikes, ref_v = step(ref_x)
        assert_equal(static_spikes, ref_spikes.detach(), "replayed spikes")
        assert_equal(static_v, ref_v.detach(), "replayed v")
        assert_equal(graph_grad_x, ref_x.grad, "replayed grad_x")
        assert_equal(graph_grad_decay, decay.grad, "replayed grad of the leak")


@needs_gpu
def test_cuda_auto_backend_picks_cuda():
    from tks_kernels._backends import resolve_backend

    x = torch.ones(2, 3, device="cuda")
    assert resolve_backend("auto", x, "lif_multistep", lambda kind, t: _ext.unavailable_reason(kind, t, "lif")) == "cuda"


@needs_gpu
def test_cuda_torch_compile_fullgraph():
    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(32, 48).cuda(), torch.nn.Linear(48, 5).cuda()
    w = torch.tensor(0.2, device="cuda", requires_grad=True)

    def model(x):
        s, v = lif_multistep(lin1(x), decay=torch.sigmoid(w), v_threshold=0.3, backend="cuda")
        return lin2(s).mean(0), v

    x = torch.randn(6, 4, 32, device="cuda")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    params = [*lin1.parameters(), *lin2.parameters(), w]
    out = {}
    for name, fn in [("eager", model), ("compiled", compiled)]:
        o, v = fn(x)
        out[name] = (o, v, torch.autograd.grad((o * o).sum() + v.sum(), params))
    assert_rel_close(out["compiled"][0], out["eager"][0], 1e-6, "output")
    assert_rel_close(out["compiled"][1], out["eager"][1], 1e-6, "v")
    for i, (a, b) in enumerate(zip(out["compiled"][2], out["eager"][2])):
        assert_rel_close(a, b, 1e-5, f"grad[{i}]")


@needs_gpu
def test_cuda_wrong_device_mix_raises():
    with pytest.raises(ValueError, match="v_init is on cpu"):
        lif_multistep(torch.ones(3, 4, device="cuda"), torch.zeros(4), backend="cuda")
    with pytest.raises(RuntimeError, match="v_init is on cpu; the CUDA kernel takes CUDA tensors"):
        torch.ops.tks.lif_forward(torch.ones(3, 4, device="cuda"), torch.zeros(4), None, 1, 2.0, True, 0.5, 0.0,
                                  False, False, 0, 4.0, False, True)


@pytest.mark.skipif(not HAS_GPU or torch.cuda.get_device_properties(0).total_memory < 40e9,
                    reason="64-bit offsets need T * N > 2**31 elements: a GPU with >= 40 GB")
def test_cuda_64bit_offsets():
    check_64bit_offsets("cuda")


# ---------------------------------------------------------------- integer spike counts (I-LIF), on a GPU

@needs_gpu
@pytest.mark.parametrize("D,leak,detach,window,store_v_seq", COUNT_GRID, ids=COUNT_IDS)
def test_cuda_counts_match_reference(D, leak, detach, window, store_v_seq):
    check_count_case("cuda", "cuda", D, leak, detach, window, store_v_seq)


@needs_gpu
@pytest.mark.parametrize("T", [1, 2, 37, 300])
def test_cuda_counts_lengths(T):
    for leak in ["lif", "decay_tensor"]:
        x, v_init, leak_kw = make_case((T, 1532 if T < 100 else 68), torch.float32, "cuda", leak, scale=2.0)
        compare(x, v_init, leak_kw, backend="cuda", **count_options(4))


# N % 4 != 0 takes the one-neuron-per-thread path; 3 * 100000 spans many blocks of the reduction
@needs_gpu
@pytest.mark.parametrize("shape", [(4, 7), (3, 2, 3, 5, 7), (5, 1), (4, 2048), (4, 2049), (3, 3, 100000)])
def test_cuda_counts_shapes(shape):
    x, v_init, leak_kw = make_case(shape, torch.float32, "cuda", "lif", scale=2.0)
    compare(x, v_init, leak_kw, backend="cuda", **count_options(3))
    x, _, leak_kw = make_case(shape, torch.float32, "cuda", "tau_tensor", scale=2.0)
    compare(x, None, leak_kw, backend="cuda", store_v_seq=True, **count_options(2, "narrower"))


@needs_gpu
def test_cuda_counts_non_contiguous():
    check_counts_non_contiguous("cuda", "cuda")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
def test_cuda_counts_low_precision(dtype, leak):
    check_low_precision("cuda", (7, 2, 336), dtype, "cuda", leak, leak == "lif", **count_options(15))


@needs_gpu
def test_cuda_count_ties_and_saturation():
    check_count_ties_and_saturation("cuda", "cuda")


@needs_gpu
@pytest.mark.parametrize("leak", LEAKS)
def test_cuda_counts_lif_charge(leak):
    check_counts_lif_charge("cuda", "cuda", leak)


@needs_gpu
@pytest.mark.parametrize("case", range(len(SJ_COUNT_CASES)))
def test_cuda_counts_match_spikingjelly(case):
    check_counts_against_spikingjelly(SJ_COUNT_CASES[case], ["cuda"], "cuda")


@needs_gpu
@pytest.mark.parametrize("leak", LEAKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_counts_match_triton(leak, dtype):
    """The same count arithmetic as the Triton kernels: counts and v bit for bit, gradients to rounding."""
    x, v_init, leak_kw = make_case((9, 4, 1000), dtype, "cuda", leak, scale=2.0)
    kw = dict(count_options(4, "wider"), store_v_seq=True)
    s_t, v_t, g_t = run("triton", x, v_init, leak_kw, **kw)
    s_c, v_c, g_c = run("cuda", x, v_init, leak_kw, **kw)
    assert_equal(s_c, s_t, "counts")
    assert_equal(v_c, v_t, "v")
    for i, (a, b) in enumerate(zip(g_c, g_t)):
        if a.dim() == 0:
            assert_rel_close(a, b, TOL, f"grad[{i}]", floor=leak_grad_scale(x, v_init, leak_kw, **kw))
        else:
            assert_rel_close(a.float(), b.float(), 1e-6 if dtype == torch.float32 else 1e-2, f"grad[{i}]")


@needs_gpu
def test_cuda_count_saved_bytes():
    check_count_saved_bytes("cuda", "cuda")


@needs_gpu
def test_cuda_count_opcheck():
    check_count_opcheck(torch.ops.tks, "cuda")


@needs_gpu
def test_cuda_count_compile():
    check_count_compile("cuda", "cuda")


@needs_gpu
def test_cuda_count_memory_format():
    check_memory_format("cuda", "cuda", "channels_last_5d", **{k: v for k, v in count_options(3).items()
                                                                if k != "v_threshold"})


@pytest.mark.skipif(not HAS_GPU or torch.cuda.get_device_properties(0).total_memory < 40e9,
                    reason="64-bit offsets need T * N > 2**31 elements: a GPU with >= 40 GB")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_counts_64bit_offsets(backend):
    check_64bit_offsets(backend, tau=4 / 3, **count_options(4, v_threshold=0.5))
