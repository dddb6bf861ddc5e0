"""lif_multistep(save=...): what the fused backward keeps. save="x" keeps references to x_seq and
v_init and recomputes H in the backward (the C++ CPU kernel here; the CUDA one in
test_lif_cuda.py); its gradients must be torch.equal to save="h"'s for every option, not close."""
import pytest
import torch

from tks_kernels import _ext
from tks_kernels.lif import SURROGATES, lif_multistep
from tks_kernels.lif import config as lif_config

from test_lif import COUNT_GRID, COUNT_IDS, GRID, LAYOUTS, RESETS, count_options, dense_step_layouts, make_case

CPP_REASON = _ext.load_reason("cpp")


@pytest.fixture(autouse=True)
def _cpp_built():
    if CPP_REASON is not None:
        pytest.fail(f"backend='cpp' unavailable: {CPP_REASON}")


def grads_for(save, x, v_init, leak_kw, seed=1, outputs=("spikes", "v"), grad_dtype=None, backend="cpp", **kw):
    """(spikes, v, grads of a random weighting of the chosen outputs) with save=``save``."""
    spikes, v = lif_multistep(x, v_init, **leak_kw, **kw, backend=backend, save=save)
    g = torch.Generator().manual_seed(seed)
    w_s = torch.randn(spikes.shape, generator=g).to(spikes.device, grad_dtype or spikes.dtype)
    w_v = torch.randn(v.shape, generator=g).to(v.device)
    loss = 0
    if "spikes" in outputs:
        loss = loss + (spikes * w_s).float().sum()
    if "v" in outputs:
        loss = loss + (v * w_v).sum()
    leaves = [t for t in [x, v_init, *leak_kw.values()] if isinstance(t, torch.Tensor) and t.requires_grad]
    return spikes, v, torch.autograd.grad(loss, leaves)


def assert_same(h_run, x_run):
    for a, b in zip(h_run, x_run, strict=True):
        if isinstance(a, tuple):
            assert_same(a, b)
            continue
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        assert torch.equal(a, b), f"save='x' differs from save='h': max |diff| {(a.double() - b.double()).abs().max()}"


def check_equal(x, v_init, leak_kw, **kw):
    h_run = grads_for("h", x, v_init, leak_kw, **kw)
    x_run = grads_for("x", x, v_init, leak_kw, **kw)
    assert_same(h_run, x_run)
    assert any(g.abs().sum() > 0 for g in x_run[2]), "a case with no gradient cannot tell the modes apart"
    return x_run


@pytest.mark.parametrize("leak,decay_input,reset,detach_reset,store_v_seq", GRID,
                         ids=[f"{l}-di{int(d)}-{r}-det{int(dr)}-seq{int(sv)}" for l, d, r, dr, sv in GRID])
def test_recompute_equals_saved_h_option_grid(leak, decay_input, reset, detach_reset, store_v_seq):
    x, v_init, leak_kw = make_case((6, 3, 211), torch.float32, "cpu", leak)
    for surrogate in SURROGATES:
        spikes, _, _ = check_equal(x, v_init, leak_kw, decay_input=decay_input, v_reset=RESETS[reset],
                                   detach_reset=detach_reset, surrogate=surrogate, store_v_seq=store_v_seq,
                                   v_threshold=0.7)
        assert 0.02 < spikes.float().mean().item() < 0.98


@pytest.mark.parametrize("D,leak,detach,window,store_v_seq", COUNT_GRID, ids=COUNT_IDS)
def test_recompute_equals_saved_h_counts(D, leak, detach, window, store_v_seq):
    x, v_init, leak_kw = make_case((6, 3, 211), torch.float32, "cpu", leak, scale=2.0)
    counts, _, _ = check_equal(x, v_init, leak_kw, store_v_seq=store_v_seq,
                               **count_options(D, window, detach_reset=detach))
    assert counts.max() == D
    for charge in ("lif",) if leak != "if" else ():
        check_equal(x, v_init, leak_kw, count_charge=charge, **count_options(D, window, detach_reset=detach))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "if", "tau_tensor", "decay_tensor"])
def test_recompute_low_precision(dtype, leak):
    x, v_init, leak_kw = make_case((5, 2, 300), dtype, "cpu", leak)
    check_equal(x, v_init, leak_kw, v_threshold=0.6, store_v_seq=leak == "if")
    check_equal(x, v_init, leak_kw, **count_options(3))


# T=1; T=9: two recompute blocks per 4096-neuron chunk; T=300: 64-neuron blocks; N past a chunk
@pytest.mark.parametrize("T,N", [(1, 513), (9, 4097), (300, 130), (3, 40000)])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
def test_recompute_lengths_and_blocks(T, N, leak):
    x, v_init, leak_kw = make_case((T, N), torch.float32, "cpu", leak)
    check_equal(x, v_init, leak_kw, v_threshold=0.5, surrogate="atan")
    check_equal(x, None, leak_kw, v_reset=None, **({"decay_input": False} if leak == "lif" else {}))


@pytest.mark.parametrize("outputs", [("spikes",), ("v",)])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_recompute_gradient_from_one_output(outputs, store_v_seq):
    x, v_init, leak_kw = make_case((7, 4, 33), torch.float32, "cpu", "tau_tensor")
    check_equal(x, v_init, leak_kw, outputs=outputs, store_v_seq=store_v_seq)


@pytest.mark.parametrize("name", LAYOUTS)
def test_recompute_memory_formats(name):
    """Dense non-contiguous steps are read in place; the gradient keeps x's step strides."""
    x = dense_step_layouts("cpu")[name].detach().requires_grad_()
    assert not x[0].is_contiguous()
    check_equal(x, None, {"tau": 2.0}, v_threshold=0.5)


def test_recompute_non_dense_input():
    """A time-sliced, expanded x (copied to rows in both the forward and the backward)."""
    base = torch.randn(10, 3, 50) * 1.5 + 0.3
    x = base[::2].detach().requires_grad_()
    check_equal(x, torch.randn(3, 50), {"decay": torch.tensor(0.3, requires_grad=True)}, v_threshold=0.4)
    x = (torch.randn(5, 1, 40) + 0.5).expand(5, 3, 40).detach().requires_grad_()
    check_equal(x, None, {"tau": 3.0}, v_threshold=0.4)


def saved_tensors(save, x, v_init, **kw):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = lif_multistep(x, v_init, backend="cpp", save=save, **kw)
    return saved, out


def new_bytes(saved, *inputs):
    """Bytes of the saved tensors' storages that are not one of ``inputs``' storages."""
    own = {t.untyped_storage().data_ptr() for t in inputs if t is not None}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
                if t.untyped_storage().data_ptr() not in own}
    return sum(storages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("counts", [False, True])
def test_saved_bytes_are_the_docstrings(dtype, counts):
    """save="h": one new fp32 [T, *] (4 * T * N bytes); save="x": no new bytes, x_seq itself and
    v_init referenced (b * T * N bytes, alive anyway)."""
    T, shape = 5, (3, 64)
    x = torch.randn(T, *shape, dtype=dtype, requires_grad=True)
    v_init = torch.randn(shape, requires_grad=True)
    kw = count_options(2) if counts else {}
    saved, _ = saved_tensors("h", x, v_init, **kw)
    assert new_bytes(saved, x, v_init) == 4 * T * 3 * 64
    saved, _ = saved_tensors("x", x, v_init, **kw)
    assert new_bytes(saved, x, v_init) == 0
    assert any(t is x or t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for t in saved)
    assert sum(t.nbytes for t in saved) == x.nbytes + v_init.nbytes


def test_recompute_forward_writes_no_h():
    """The forward with save="x" allocates the spikes and v only (torch's profiler)."""
    from test_lif import allocated_bytes

    x = torch.randn(8, 64, 1024, requires_grad=True)
    sizes = {}
    for save in ("h", "x"):
        sizes[save] = allocated_bytes(lambda: lif_multistep(x, backend="cpp", save=save))
    assert sizes["h"] - sizes["x"] >= x.numel() * 4, sizes


def test_recompute_leak_gradient_deterministic_across_threads():
    x, v_init, leak_kw = make_case((4, 3 * 4096 + 77), torch.float32, "cpu", "decay_tensor")
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(grads_for("x", x, v_init, leak_kw, v_threshold=0.5)[2][-1])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0], grads_for("h", x, v_init, leak_kw, v_threshold=0.5)[2][-1])


def test_recompute_double_backward_refused():
    x = torch.randn(4, 10, requires_grad=True)
    s, v = lif_multistep(x, backend="cpp", save="x")
    (g,) = torch.autograd.grad((s.sum() + v.sum()), x, create_graph=False)
    assert g.abs().sum() > 0
    s, v = lif_multistep(x, backend="cpp", save="x")
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(s.sum() + v.sum(), x, create_graph=True)


def test_recompute_compiles_fullgraph():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 24)
    x = torch.randn(5, 3, 16)

    def model(x):
        s, v = lif_multistep(lin(x), tau=torch.tensor(2.5), v_threshold=0.3, backend="cpp", save="x")
        return s.sum() + v.square().sum()

    eager = torch.autograd.grad(model(x), list(lin.parameters()))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x), list(lin.parameters()))
    for a, b in zip(eager, got):
        assert torch.equal(a, b)


def test_opcheck_recompute_backward():
    x = torch.randn(5, 3, 17)
    v_init = torch.randn(3, 17)
    decay = torch.tensor(0.4)
    empty = torch.empty(0)
    torch.library.opcheck(torch.ops.tks.lif_backward.default, (
        torch.randn(5, 3, 17), torch.randn(3, 17), empty, x, v_init, decay,
        2, 2.0, True, 0.5, 0.0, False, False, 1, 2.0, False, torch.float32, True, 0, 0.0, 0.0, False, True))
    torch.library.opcheck(torch.ops.tks.lif_forward.default, (
        x.requires_grad_(), v_init, None, 1, 2.0, True, 0.5, 0.0, False, False, 0, 4.0, False, False, 0, 0.0,
        0.0, False, True))


def test_recompute_backward_op_needs_x():
    with pytest.raises(RuntimeError, match="recompute=True needs x_seq"):
        torch.ops.tks.lif_backward(torch.randn(3, 4), None, torch.empty(0), None, None, None, 1, 2.0, True, 1.0,
                                   0.0, False, False, 0, 4.0, False, torch.float32, False, 0, 0.0, 0.0, False, True)


# ---------------------------------------------------------------- choosing the mode

def test_save_is_checked():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"save='H' is not supported; choose one of 'auto', 'h', 'x'"):
        lif_multistep(x, save="H")


def test_auto_follows_the_measured_table():
    assert lif_config.resolve_save("auto", "cpp", 8) == lif_config.SAVE_AUTO["cpp"]
    # no GPU measurement of the CUDA recompute yet: CUDA keeps H
    assert lif_config.resolve_save("auto", "cuda", 8) == "h"
    assert lif_config.resolve_save("auto", "triton", 8) == "h"


def test_cuda_recompute_falls_back_above_its_tile():
    T = lif_config.CUDA_RECOMPUTE_MAX_T
    assert lif_config.resolve_save("x", "cuda", T) == "x"
    assert lif_config.resolve_save("x", "cuda", T + 1) == "h"
    assert lif_config.resolve_save("x", "cpp", 10 * T) == "x"  # the CPU tile shrinks its block instead


def test_triton_refuses_recompute():
    with pytest.raises(ValueError, match="save='x'.*not available on backend='triton'"):
        lif_config.resolve_save("x", "triton", 4)


def test_torch_backend_ignores_save():
    x, v_init, leak_kw = make_case((4, 50), torch.float32, "cpu", "lif")
    a = grads_for("h", x, v_init, leak_kw, backend="torch")
    b = grads_for("x", x, v_init, leak_kw, backend="torch")
    assert_same(a, b)


# ---------------------------------------------------------------- CUDA (run by bench/gpu_check.sh)

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bench/gpu_check.sh runs it")


def _to_cuda(x, v_init, leak_kw):
    def c(t):
        return t.detach().cuda().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
    return c(x), c(v_init), {k: c(t) for k, t in leak_kw.items()}


@needs_gpu
def test_cuda_recompute_equals_saved_h_option_grid():
    for leak, decay_input, reset, detach_reset, store_v_seq in GRID:
        case = _to_cuda(*make_case((6, 3, 212), torch.float32, "cpu", leak))
        for surrogate in SURROGATES:
            check_equal(*case, backend="cuda", decay_input=decay_input, v_reset=RESETS[reset],
                        detach_reset=detach_reset, surrogate=surrogate, store_v_seq=store_v_seq, v_threshold=0.7)


@needs_gpu
def test_cuda_recompute_equals_saved_h_counts():
    for D, leak, detach, window, store_v_seq in COUNT_GRID:
        case = _to_cuda(*make_case((6, 3, 212), torch.float32, "cpu", leak, scale=2.0))
        check_equal(*case, backend="cuda", store_v_seq=store_v_seq, **count_options(D, window, detach_reset=detach))


# T <= 8: 4 neurons a thread (N % 4 == 0); 9..32: one; 211: unaligned rows
@needs_gpu
@pytest.mark.parametrize("T", [1, 8, 9, 32])
@pytest.mark.parametrize("N", [1024, 211])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_recompute_lengths_and_dtypes(T, N, dtype):
    for leak in ("lif", "decay_tensor"):
        case = _to_cuda(*make_case((T, 2, N), dtype, "cpu", leak))
        check_equal(*case, backend="cuda", v_threshold=0.5, surrogate="atan")


@needs_gpu
def test_cuda_recompute_saves_x_and_falls_back_above_its_tile():
    for T, expect_h in ((lif_config.CUDA_RECOMPUTE_MAX_T, False), (lif_config.CUDA_RECOMPUTE_MAX_T + 1, True)):
        x = torch.randn(T, 4, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            lif_multistep(x, backend="cuda", save="x")
        assert new_bytes(saved, x) == (4 * x.numel() if expect_h else 0)
        check_equal(x, None, {"tau": 2.0}, backend="cuda")


# ---------------------------------------------------------------- the neuron modules

def test_neuron_module_save_attribute():
    """``node.save`` reaches the kernel: "x" keeps no H, its gradients equal "h"'s; a bad value is refused."""
    import tks

    x = (torch.randn(6, 4, 50) * 1.5 + 0.3).requires_grad_()
    grads, held = {}, {}
    for save in ("h", "x"):
        node = tks.LIFNode(tau=2.0, v_threshold=0.5, step_mode="m", backend="cpp")
        node.save = save
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = node(x)
        held[save] = new_bytes(saved, x)
        grads[save] = torch.autograd.grad((out * torch.arange(out.numel()).reshape(out.shape).sin()).sum(), x)[0]
    assert held == {"h": 4 * x.numel(), "x": 0}
    assert torch.equal(grads["h"], grads["x"]) and grads["x"].abs().sum() > 0
    node = tks.ILIFNode(step_mode="m", backend="cpp")
    assert node.save == "auto"
    with pytest.raises(ValueError, match="save='y' is not supported"):
        node.save = "y"
