"""Fused LIF (Triton; on the CPU through the interpreter) against the eager reference and
spikingjelly 2.0.0."""
import itertools

import pytest
import torch

from tks_kernels.lif import SURROGATES, lif_multistep, lif_multistep_reference

from _utils import assert_equal, assert_rel_close, assert_within_one_rounding

TOL = 1e-5

# Leak modes: float tau (LIF), None (IF), learnable tau tensor, decay tensor (PLIF's sigmoid(w)).
LEAKS = ["lif", "if", "tau_tensor", "decay_tensor"]
RESETS = {"hard0": 0.0, "hard-0.3": -0.3, "soft": None}


def make_case(shape, dtype, device, leak, with_v_init=True, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale + 0.3).to(device=device, dtype=dtype).requires_grad_()
    v_init = (torch.randn(shape[1:], generator=g) * 0.5).to(device).requires_grad_() if with_v_init else None
    leak_kw = {
        "lif": {"tau": 2.0 + torch.rand((), generator=g).item()},
        "if": {"tau": None},
        "tau_tensor": {"tau": torch.tensor(2.5, device=device, requires_grad=True)},
        "decay_tensor": {"decay": torch.tensor(0.35, device=device, requires_grad=True)},
    }[leak]
    return x, v_init, leak_kw


def run(backend, x, v_init, leak_kw, seed=1, weight_dtype=None, **kw):
    """Forward on ``backend``, then grads of a random weighting of both outputs. The spikes'
    weights are rounded to ``weight_dtype`` (default: the spikes' dtype), as autograd rounds the
    gradient reaching low-precision spikes."""
    fn = lif_multistep_reference if backend == "reference" else lif_multistep
    extra = {} if backend == "reference" else {"backend": backend}
    spikes, v = fn(x, v_init, **leak_kw, **kw, **extra)
    g = torch.Generator().manual_seed(seed)
    w_s = torch.randn(spikes.shape, generator=g).to(spikes.device).to(weight_dtype or spikes.dtype).to(spikes.dtype)
    w_v = torch.randn(v.shape, generator=g).to(v.device)
    loss = (spikes.float() * w_s).sum() + (v * w_v).sum()
    leaves = [t for t in [x, v_init, *leak_kw.values()] if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(loss, leaves)
    return spikes, v, grads


def as_fp64(x, v_init, leak_kw):
    """The same case in fp64: the oracle for v and gradients (the leak's gradient is a sum of
    T * N terms of both signs, which an fp32 loop only gets to ~1e-5)."""
    def d(t):
        return t.detach().double().requires_grad_() if isinstance(t, torch.Tensor) else t
    return d(x), d(v_init), {k: d(t) for k, t in leak_kw.items()}


def leak_grad_scale(x, v_init, leak_kw, seed=1, **kw):
    """Σ_n |∂L/∂k_n| in fp64, k_n a per-neuron copy of the learnable leak: the leak's gradient
    sums these terms of both signs, so its error is measured against this (its relative error
    alone is ill-conditioned where they cancel to near zero)."""
    from tks_kernels.lif.config import TAU_DEFAULT, parse_lif_args
    from tks_kernels.lif.reference import lif_reference_forward

    x64, v64, leak64 = as_fp64(x, v_init, leak_kw)
    (name, leaf), = leak64.items()
    opts = {k: kw.get(k, d) for k, d in dict(v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False,
                                              surrogate="sigmoid", alpha=None, store_v_seq=False,
                                              max_spike_count=None, grad_window=None).items()}
    cfg, _ = parse_lif_args(x, v_init, TAU_DEFAULT, torch.tensor(0.5, device=x.device), allow_float64=True, **opts)
    decay0 = (1 / leaf if name == "tau" else leaf).detach()
    per_neuron = decay0.expand(x.shape[1:]).clone().requires_grad_()
    spikes, v = lif_reference_forward(x64, v64, per_neuron, cfg)
    g = torch.Generator().manual_seed(seed)
    w_s = torch.randn(spikes.shape, generator=g).to(spikes.device)
    w_v = torch.randn(v.shape, generator=g).to(v.device)
    loss = (spikes * w_s).sum() + (v * w_v).sum()
    (grad,) = torch.autograd.grad(loss, per_neuron)
    chain = (decay0**2).item() if name == "tau" else 1.0  # d(1/tau)/dtau = -1/tau**2
    return grad.abs().sum().item() * chain


def check_low_precision(backend, shape, dtype, device, leak, store_v_seq, **options):
    """fp16/bf16 ``x`` on ``backend``; state is fp32: spikes equal the reference on the upcast
    input; grad_x equals the fp32 reference's up to one rounding to the input dtype. ``options``
    replace the default neuron options (count firing)."""
    x, v_init, leak_kw = make_case(shape, dtype, device, leak)
    x32 = x.detach().float().requires_grad_()
    kw = dict(options or dict(v_threshold=0.6, surrogate="atan"), store_v_seq=store_v_seq)
    s_ref, v_ref, g_ref = run("reference", x32, v_init, leak_kw, weight_dtype=dtype, **kw)
    s, v, g = run(backend, x, v_init, leak_kw, **kw)
    assert s.dtype == dtype and v.dtype == torch.float32
    assert_equal(s.float(), s_ref, "spikes")
    assert_rel_close(v, v_ref, TOL, "v")
    assert g[0].dtype == dtype
    assert_within_one_rounding(g[0], g_ref[0], "grad_x")
    for i in range(1, len(g)):
        floor = leak_grad_scale(x32, v_init, leak_kw, **kw) if g[i].dim() == 0 else 0.0
        assert_rel_close(g[i], g_ref[i], TOL, f"grad[{i}]", floor=floor)


def check_64bit_offsets(backend, **options):
    """T * N > 2**31 on CUDA: the last neurons (which need 64-bit offsets) match the reference run
    on them alone (neurons are independent). ``options``: the neuron's (default v_threshold=0.5)."""
    options = options or dict(v_threshold=0.5)
    T, N = 9, 2**28 + 1000
    x = torch.randn(T, N, device="cuda", dtype=torch.bfloat16)
    s, v = lif_multistep(x, backend=backend, **options)
    tail = x[:, -5000:].contiguous()
    s_ref, v_ref = lif_multistep_reference(tail, **options)
    assert_equal(s[:, -5000:], s_ref, "spikes")
    assert_rel_close(v[-5000:], v_ref, TOL, "v")
    del s, v
    xg = x.requires_grad_()
    s, v = lif_multistep(xg, backend=backend, **options)
    (gx,) = torch.autograd.grad(v.sum(), xg)
    tail_g = tail.float().requires_grad_()
    _, v_ref = lif_multistep_reference(tail_g, **options)
    (gx_ref,) = torch.autograd.grad(v_ref.sum(), tail_g)
    assert_within_one_rounding(gx[:, -5000:], gx_ref, "grad_x")


def compare(x, v_init, leak_kw, backend="triton", **kw):
    """Spikes exactly equal to the fp32 reference; v and grads within TOL of the fp64 reference."""
    s_ref, v_ref32, g_ref32 = run("reference", x, v_init, leak_kw, **kw)
    s64, v_ref, g_ref = run("reference", *as_fp64(x, v_init, leak_kw), **kw)
    assert_equal(s64.float(), s_ref.float(), "fp64 vs fp32 reference spikes (choose another seed)")
    s, v, g = run(backend, x, v_init, leak_kw, **kw)
    assert_equal(s, s_ref, "spikes")
    assert v.dtype == torch.float32
    assert_rel_close(v, v_ref, TOL, "v")
    assert_rel_close(v_ref32, v_ref, TOL, "fp32 reference v")
    for i, (a, b) in enumerate(zip(g, g_ref)):
        assert a.dtype == g_ref32[i].dtype
        floor = leak_grad_scale(x, v_init, leak_kw, **kw) if a.dim() == 0 else 0.0
        assert_rel_close(a, b, TOL, f"grad[{i}]", floor=floor)
    return s_ref


# decay_input has no meaning for IF: its cases run once, with decay_input=True
GRID = [c for c in itertools.product(LEAKS, [True, False], RESETS, [False, True], [False, True])
        if not (c[0] == "if" and not c[1])]


@pytest.mark.parametrize("leak,decay_input,reset,detach_reset,store_v_seq", GRID,
                         ids=[f"{l}-di{int(d)}-{r}-det{int(dr)}-seq{int(sv)}" for l, d, r, dr, sv in GRID])
@pytest.mark.parametrize("surrogate", list(SURROGATES))
def test_triton_matches_reference_option_grid(device, leak, decay_input, reset, detach_reset, store_v_seq, surrogate):
    x, v_init, leak_kw = make_case((6, 3, 211), torch.float32, device, leak)
    spikes = compare(x, v_init, leak_kw, decay_input=decay_input, v_reset=RESETS[reset], detach_reset=detach_reset,
                     surrogate=surrogate, alpha=None, store_v_seq=store_v_seq, v_threshold=0.7)
    rate = spikes.float().mean().item()
    assert 0.02 < rate < 0.98, f"the case must exercise both branches, firing rate {rate}"


@pytest.mark.parametrize("T", [1, 2, 37])
@pytest.mark.parametrize("leak", LEAKS)
def test_triton_lengths(device, T, leak):
    x, v_init, leak_kw = make_case((T, 1531), torch.float32, device, leak)
    compare(x, v_init, leak_kw, v_threshold=0.5, surrogate="piecewise_quadratic", alpha=2.0)


@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 9), (2, 3, 4, 5), (3, 2, 3, 5, 7), (5, 1), (4, 2049)])
def test_triton_shapes(device, shape):
    x, v_init, leak_kw = make_case(shape, torch.float32, device, "lif")
    compare(x, v_init, leak_kw, v_threshold=0.6)
    x, _, leak_kw = make_case(shape, torch.float32, device, "tau_tensor")
    compare(x, None, leak_kw, v_threshold=0.6, store_v_seq=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the interpreter compiles nothing: needs a GPU")
def test_triton_new_T_does_not_recompile():
    from tks_kernels.lif.triton import _lif_backward_kernel, _lif_forward_kernel

    def n_compiled():
        return sum(len(c[0]) for c in _lif_forward_kernel.device_caches.values()) + \
            sum(len(c[0]) for c in _lif_backward_kernel.device_caches.values())

    x = torch.randn(3, 4096, device="cuda", requires_grad=True)
    lif_multistep(x, backend="triton")[0].sum().backward()
    before = n_compiled()
    for T in [1, 2, 5, 17]:
        x = torch.randn(T, 4096, device="cuda", requires_grad=True)
        lif_multistep(x, backend="triton")[0].sum().backward()
    assert n_compiled() == before


TRITON_COMPILE_CASES = {
    "lif": dict(tau=2.0),
    "if-soft": dict(tau=None, v_reset=None),
    "decay-seq": dict(decay=0.4, store_v_seq=True),
    "tau_tensor-rect": dict(tau=2.5, tau_tensor=True, surrogate="rect", detach_reset=True),
}


@pytest.mark.parametrize("case", list(TRITON_COMPILE_CASES))
def test_triton_under_torch_compile_fullgraph(device, case):
    """torch.compile(fullgraph=True) keeps the Triton LIF whole through its custom ops
    (tks_triton::lif_forward / backward, the C++ ops' schemas): the same spikes, v and gradients
    (input, v_init and a learnable leak) as the eager call."""
    kw = dict(TRITON_COMPILE_CASES[case])
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(4, 3, 50, generator=g) * 1.5 + 0.3).to(device)
    v_init = (torch.randn(3, 50, generator=g) * 0.5).to(device)
    w = torch.randn(4, 3, 50, generator=g).to(device)
    results = []
    for compiled in (True, False):
        leak = {}
        if "decay" in kw:
            leak["decay"] = torch.tensor(kw["decay"], device=device, requires_grad=True)
        elif kw.get("tau_tensor"):
            leak["tau"] = torch.tensor(kw["tau"], device=device, requires_grad=True)
        else:
            leak["tau"] = kw["tau"]
        opts = {k: v for k, v in kw.items() if k not in ("decay", "tau", "tau_tensor")}
        xi, vi = x.clone().requires_grad_(), v_init.clone().requires_grad_()

        def fn(x_seq, v0):
            spikes, v = lif_multistep(x_seq, v0, v_threshold=0.6, backend="triton", **leak, **opts)
            return (spikes * w).sum() + v.sum(), spikes, v

        run_fn = torch.compile(fn, backend="aot_eager", fullgraph=True) if compiled else fn
        total, spikes, v = run_fn(xi, vi)
        total.backward()
        grads = [xi.grad, vi.grad] + [t.grad for t in leak.values() if isinstance(t, torch.Tensor)]
        results.append((spikes.detach(), v.detach(), grads))
    (s_c, v_c, g_c), (s_e, v_e, g_e) = results
    assert_equal(s_c, s_e, "spikes")
    assert_equal(v_c, v_e, "v")
    assert len(g_c) == len(g_e)
    for i, (a, b) in enumerate(zip(g_c, g_e)):
        assert_rel_close(a, b, 1e-6, f"grad {i}")


def test_triton_op_registration(device):
    """Schema, fake implementation, autograd registration of the Triton ops torch.compile uses."""
    from tks_kernels.lif import triton as lif_triton  # noqa: F401 (registers the ops)

    x = torch.randn(5, 3, 17, device=device, requires_grad=True)
    v_init = torch.randn(3, 17, device=device, requires_grad=True)
    decay = torch.tensor(0.4, device=device, requires_grad=True)
    # x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset,
    # surrogate, alpha, store_v_seq, save_h
    torch.library.opcheck(torch.ops.tks_triton.lif_forward.default,
                          (x, v_init, None, 1, 2.0, True, 0.5, 0.0, False, False, 0, 4.0, False, True))
    torch.library.opcheck(torch.ops.tks_triton.lif_forward.default,
                          (x, v_init, decay, 2, 2.0, True, 0.5, 0.0, False, False, 7, 1.0, True, True))
    h = torch.randn(5, 3, 17, device=device)
    torch.library.opcheck(torch.ops.tks_triton.lif_backward.default, (
        torch.randn(5, 3, 17, device=device), torch.randn(3, 17, device=device), h, x.detach(), v_init.detach(),
        decay.detach(), 2, 2.0, True, 0.5, 0.0, False, False, 1, 2.0, False, torch.float32, True))


def test_triton_empty_neurons(device):
    x = torch.zeros(3, 0, device=device, requires_grad=True)
    s, v = lif_multistep(x, backend="triton")
    assert s.shape == (3, 0) and v.shape == (0,)


@pytest.mark.parametrize("layout", ["time_strided", "permuted", "sliced"])
def test_triton_non_contiguous(device, layout):
    base = torch.randn(40, 6, 30, device=device) * 1.5
    if layout == "time_strided":
        x = base[::2]  # time stride 2*N, each step contiguous: no copy
    elif layout == "permuted":
        x = base.permute(1, 0, 2)  # [6, 40, 30]
    else:
        x = base[:, :, 3:17]
    assert not x.is_contiguous()
    for leak in ["lif", "decay_tensor"]:
        _, _, leak_kw = make_case(tuple(x.shape), torch.float32, device, leak)
        s_ref, v_ref, g_ref = run("reference", x.contiguous().requires_grad_(), None, leak_kw, v_threshold=0.8)
        view = x.detach().requires_grad_()
        s, v, g = run("triton", view, None, leak_kw, v_threshold=0.8)
        assert_equal(s, s_ref, "spikes")
        assert_rel_close(v, v_ref, TOL, "v")
        for i, (p, q) in enumerate(zip(g, g_ref)):
            assert_rel_close(p, q, TOL, f"grad[{i}]")


# ---------------------------------------------------------------- memory format

def dense_step_layouts(device):
    """[T, *] inputs whose steps are dense blocks that are not contiguous, by name."""
    g = torch.Generator().manual_seed(3)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 1.5 + 0.3).to(device)

    return {
        # a 4-D channels_last single step, as the modules see it: [1, N, C, H, W]
        "channels_last_single_step": r(2, 6, 5, 7).to(memory_format=torch.channels_last).unsqueeze(0),
        # [T, N, C, H, W] with channels_last steps
        "channels_last_5d": r(3, 2, 5, 7, 6).permute(0, 1, 4, 2, 3),
        "transposed": r(4, 9, 5).transpose(1, 2),
        # and a time stride that is not N: still read in place
        "channels_last_time_strided": r(6, 2, 5, 7, 6).permute(0, 1, 4, 2, 3)[::2],
    }


LAYOUTS = list(dense_step_layouts("cpu"))


def allocated_bytes(fn) -> int:
    """Bytes allocated on the CPU while ``fn`` runs (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)


def check_memory_format(backend, device, name, **kw):
    """Outputs (spikes, v, v_seq) and the gradient of x keep x's step strides; the gradients arrive
    contiguous (another layout) and v_init is contiguous; every value equals the run on the
    contiguous copy of x."""
    x = dense_step_layouts(device)[name]
    assert not x[0].is_contiguous()
    step = tuple(x[0].stride())
    n = x[0].numel()
    g = torch.Generator().manual_seed(4)
    v0 = (torch.randn(x.shape[1:], generator=g) * 0.5).to(device)
    w_s, w_v = torch.randn(x.shape, generator=g).to(device), torch.randn(x.shape, generator=g).to(device)
    for store_v_seq in [False, True]:
        out = {}
        for which, inp in (("strided", x), ("contiguous", x.contiguous())):
            xi, vi = inp.detach().requires_grad_(), v0.clone().requires_grad_()
            tau = torch.tensor(2.5, device=device, requires_grad=True)
            s, v = lif_multistep(xi, vi, tau=tau, v_threshold=0.6, store_v_seq=store_v_seq, backend=backend, **kw)
            loss = (s * w_s).sum() + (v * (w_v if store_v_seq else w_v[0])).sum()
            out[which] = (s, v, *torch.autograd.grad(loss, [xi, vi, tau]))
        s, v, gx, gv, gtau = out["strided"]
        assert s.stride() == (n, *step), f"spikes strides {s.stride()}, x's step {step}"
        assert v.stride() == ((n, *step) if store_v_seq else step), f"v strides {v.stride()}"
        assert gx.stride() == (n, *step), f"grad_x strides {gx.stride()}"
        assert_equal(s, out["contiguous"][0], "spikes")
        for i, what in enumerate(["v", "grad_x", "grad_v_init"], start=1):
            if backend == "torch":  # torch's own kernels: vectorised (contiguous) vs not round the exp apart
                assert_rel_close(out["strided"][i], out["contiguous"][i], 1e-6, f"{what} (store_v_seq={store_v_seq})")
            else:  # the kernels: the same operations on every element, whatever the layout
                assert_equal(out["strided"][i], out["contiguous"][i], f"{what} (store_v_seq={store_v_seq})")
        # the leak's gradient sums over the neurons in memory order, which differs
        assert_rel_close(gtau, out["contiguous"][4], 1e-6, "grad tau")


def check_reads_x_in_place(backend):
    """A dense-step x is not copied: the call allocates what it does on the contiguous copy of x
    (its outputs), and a sliced x (not a dense block: copied) more."""
    def cost(x):
        return allocated_bytes(lambda: lif_multistep(x.detach().requires_grad_(), v_threshold=0.6, backend=backend))

    for name, x in dense_step_layouts("cpu").items():
        assert cost(x) == cost(x.contiguous()), name
    sliced = torch.randn(3, 2, 6, 9)[..., 1:8]
    assert cost(sliced) > cost(sliced.contiguous())


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_memory_format_kept(device, backend, name):
    check_memory_format(backend, device, name)


def test_triton_reads_x_in_place():
    check_reads_x_in_place("triton")


# ---------------------------------------------------------------- double backward

DOUBLE_BACKWARD = r"lif_multistep\(backend='{}'\) does not support double backward \(create_graph=True\); use backend='torch'"


def check_double_backward_refused(backend, device):
    """create_graph=True through a fused backend raises (its backward is not differentiable: the
    second derivative would silently be zero); the torch backend differentiates twice."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 3, 50, generator=g) * 1.5).to(device).requires_grad_()
    w = torch.randn(4, 3, 50, generator=g).to(device)
    tau = torch.tensor(2.5, device=device, requires_grad=True)
    s, v = lif_multistep(x, tau=tau, v_threshold=0.5, backend=backend)
    with pytest.raises(RuntimeError, match=DOUBLE_BACKWARD.format(backend)):
        torch.autograd.grad((s * w).sum() + (v * v).sum(), [x, tau], create_graph=True)
    # first-order gradients are untouched
    s, v = lif_multistep(x, tau=tau, v_threshold=0.5, backend=backend)
    s_ref, v_ref = lif_multistep(x, tau=tau, v_threshold=0.5, backend="torch")
    gx, gtau = torch.autograd.grad((s * w).sum() + (v * v).sum(), [x, tau])
    gx_ref, gtau_ref = torch.autograd.grad((s_ref * w).sum() + (v_ref * v_ref).sum(), [x, tau], create_graph=True)
    assert_rel_close(gx, gx_ref, TOL, "grad_x")
    # the reference's second derivative (a gradient penalty) is there and non-zero
    (gg,) = torch.autograd.grad(gx_ref.pow(2).sum() + gtau_ref, x)
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0


def check_backward_op_not_differentiable(op, backend, device):
    """The backward op called in grad mode with an input that requires grad (what a compiled
    backward run with create_graph=True does) raises at once, not a warning and a zero."""
    h = torch.randn(5, 3, 17, device=device)
    grad_spikes = torch.randn(5, 3, 17, device=device, requires_grad=True)
    args = (grad_spikes, torch.randn(3, 17, device=device), h, None, None, None, 1, 2.0, True, 0.5, 0.0, False, False,
            1, 2.0, False, torch.float32, False)
    with pytest.raises(RuntimeError, match=DOUBLE_BACKWARD.format(backend)):
        op(*args)
    with torch.no_grad():
        op(*args)  # the op itself runs
    op(grad_spikes.detach(), *args[1:])


def check_compiled_double_backward_refused(backend, device):
    lin = torch.nn.Linear(20, 20).to(device)
    x = torch.randn(4, 3, 20, device=device, requires_grad=True)

    def fn(x):
        s, v = lif_multistep(lin(x), v_threshold=0.3, backend=backend)
        return (s * lin(x)).sum() + (v * v).sum()

    torch._dynamo.reset()
    loss = torch.compile(fn, backend="aot_eager", fullgraph=True)(x)
    # torch's own refusal of a compiled double backward (at the second backward, as for any
    # compiled function); the backward op would refuse too (check_backward_op_not_differentiable)
    with pytest.raises(RuntimeError, match="double backward"):
        gw, = torch.autograd.grad(loss, [lin.weight], create_graph=True)
        torch.autograd.grad(gw.pow(2).sum(), lin.weight)


def test_triton_double_backward_refused(device):
    check_double_backward_refused("triton", device)


def test_triton_backward_op_not_differentiable(device):
    from tks_kernels.lif import triton as lif_triton  # noqa: F401 (registers the ops)

    check_backward_op_not_differentiable(torch.ops.tks_triton.lif_backward.default, "triton", device)


def test_triton_compiled_double_backward_refused(device):
    check_compiled_double_backward_refused("triton", device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
@pytest.mark.parametrize("store_v_seq", [False, True])
def test_triton_low_precision(device, dtype, leak, store_v_seq):
    check_low_precision("triton", (7, 2, 333), dtype, device, leak, store_v_seq)


@pytest.mark.parametrize("which", ["spikes", "v"])
def test_triton_gradient_from_one_output(device, which):
    """Only one output used: the other's gradient is None and must count as zero."""
    x, v_init, leak_kw = make_case((5, 400), torch.float32, device, "tau_tensor")
    out = {}
    for backend in ["reference", "triton"]:
        fn = lif_multistep_reference if backend == "reference" else lambda *a, **k: lif_multistep(*a, backend="triton", **k)
        s, v = fn(x, v_init, **leak_kw, v_threshold=0.5)
        loss = (s * torch.linspace(-1, 1, s.shape[-1], device=device)).sum() if which == "spikes" else (v * v).sum()
        out[backend] = torch.autograd.grad(loss, [x, v_init, leak_kw["tau"]])
    for a, b in zip(out["triton"], out["reference"]):
        assert_rel_close(a, b, TOL, "grad")


def test_triton_no_grad_path(device, monkeypatch):
    """Inference (no_grad, or no input requiring grad) runs the forward without saving H."""
    import tks_kernels.lif.triton as lif_triton

    calls = []
    real = lif_triton.lif_forward_triton
    monkeypatch.setattr(lif_triton, "lif_forward_triton", lambda *a, save_h, **k: calls.append(save_h) or real(*a, save_h=save_h, **k))
    x = torch.randn(4, 100, device=device, requires_grad=True)
    with torch.no_grad():
        s, v = lif_multistep(x, backend="triton")
    s2, v2 = lif_multistep(x.detach(), backend="triton")
    s3, v3 = lif_multistep(x, backend="triton")
    assert calls == [False, False, True]
    s_ref, v_ref = lif_multistep(x.detach(), backend="torch")
    for a, b in [(s, s_ref), (s2, s_ref), (s3.detach(), s_ref)]:
        assert_equal(a, b, "spikes")
    assert not s.requires_grad and s3.requires_grad


def test_default_v_init_is_v_reset(device):
    x = torch.full((1, 4), 0.1, device=device)
    # hard reset to -1: H = -1 + (0.1 - (-1 - -1)) / 2 = -0.95
    _, v = lif_multistep(x, tau=2.0, v_reset=-1.0, backend="torch")
    assert torch.allclose(v, torch.full_like(v, -0.95))
    _, v = lif_multistep(x, tau=2.0, v_reset=None, backend="torch")  # soft: starts at 0
    assert torch.allclose(v, torch.full_like(v, 0.05))


def test_fire_at_threshold_exactly(device):
    """Θ(0) = 1: H equal to the threshold fires."""
    x = torch.tensor([[1.0, 0.999999]], device=device)
    for backend in ["torch", "triton"]:
        s, _ = lif_multistep(x, tau=None, v_threshold=1.0, backend=backend)
        assert s.tolist() == [[1.0, 0.0]]


# ---------------------------------------------------------------- against spikingjelly 2.0.0

# spikingjelly==2.0.0 is a test dependency (the [test] extra): imported, never skipped, so a
# missing oracle is an error rather than silently fewer checks
import spikingjelly.activation_based.neuron as sj  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

SJ_SURROGATES = {
    "sigmoid": sj_surrogate.Sigmoid, "atan": sj_surrogate.ATan, "piecewise_quadratic": sj_surrogate.PiecewiseQuadratic,
    "erf": sj_surrogate.Erf, "piecewise_exp": sj_surrogate.PiecewiseExp, "soft_sign": sj_surrogate.SoftSign,
    "super_spike": sj_surrogate.SuperSpike, "rect": sj_surrogate.Rect,
}


def test_default_alphas_are_spikingjelly_defaults():
    for name, cls in SJ_SURROGATES.items():
        assert cls().alpha == SURROGATES[name][1], name


SJ_GRID = [c for c in itertools.product(["LIF", "IF", "PLIF"], [True, False], [0.0, None], [False, True], list(SJ_SURROGATES))
           if not (c[0] == "IF" and not c[1])]


@pytest.mark.parametrize("kind,decay_input,v_reset,detach_reset,surrogate", SJ_GRID,
                         ids=[f"{k}-di{int(d)}-{'soft' if r is None else 'hard'}-det{int(dr)}-{s}" for k, d, r, dr, s in SJ_GRID])
def test_reference_and_triton_match_spikingjelly(device, kind, decay_input, v_reset, detach_reset, surrogate):
    check_spikingjelly_agreement(kind, decay_input, v_reset, detach_reset, surrogate, ["reference", "triton"], device)


def check_spikingjelly_agreement(kind, decay_input, v_reset, detach_reset, surrogate, backends, device="cpu"):
    """Two calls of spikingjelly's node (on the CPU; state carried over) against two calls of each
    backend (v_init = the last v; "triton" runs on ``device``): spikes exactly, v_seq and gradients
    (x and PLIF's w) within TOL."""
    torch.manual_seed(7)
    T, shape = 6, (3, 97)
    alpha = {"sigmoid": 3.0, "atan": 2.5, "piecewise_quadratic": 2.0}.get(surrogate)
    sg = SJ_SURROGATES[surrogate](alpha=alpha) if alpha else SJ_SURROGATES[surrogate]()
    common = dict(v_threshold=0.5, v_reset=v_reset, surrogate_function=sg, detach_reset=detach_reset, step_mode="m",
                  store_v_seq=True)
    if kind == "LIF":
        node = sj.LIFNode(tau=2.7, decay_input=decay_input, **common)
        leak_kw = {"tau": 2.7}
    elif kind == "IF":
        node = sj.IFNode(**common)
        leak_kw = {"tau": None}
    else:
        node = sj.ParametricLIFNode(init_tau=2.3, decay_input=decay_input, **common)
        leak_kw = None
    x = (torch.randn(T, *shape) * 1.2 + 0.2).requires_grad_()
    # two calls: the state carries over, as in a module
    sj_out, sj_vseq = [], []
    for _ in range(2):
        sj_out.append(node(x))
        sj_vseq.append(node.v_seq)
    sj_loss = sum((o * torch.randn_like(o)).sum() + (vs * vs).sum() for o, vs in zip(sj_out, sj_vseq))
    torch.manual_seed(11)
    w1, w2 = torch.randn_like(sj_out[0]), torch.randn_like(sj_out[0])
    sj_loss = (sj_out[0] * w1).sum() + (sj_out[1] * w2).sum() + (sj_vseq[0] ** 2).sum() + (sj_vseq[1] ** 2).sum()
    params = [x] + ([node.w] if kind == "PLIF" else [])
    sj_grads = torch.autograd.grad(sj_loss, params)

    for backend in backends:
        fn = lif_multistep_reference if backend == "reference" else lambda *a, **k: lif_multistep(*a, backend=backend, **k)
        dev = device if backend in ("triton", "cuda") else "cpu"
        xd = x.detach().to(dev).requires_grad_()
        w = node.w.detach().clone().to(dev).requires_grad_() if kind == "PLIF" else None
        kw = dict(leak_kw) if leak_kw is not None else {"decay": w.sigmoid()}
        opts = dict(decay_input=decay_input, v_threshold=0.5, v_reset=v_reset, detach_reset=detach_reset,
                    surrogate=surrogate, alpha=alpha, store_v_seq=True)
        s1, vs1 = fn(xd, None, **kw, **opts)
        s2, vs2 = fn(xd, vs1[-1], **kw, **opts)
        s1, vs1, s2, vs2 = s1.cpu(), vs1.cpu(), s2.cpu(), vs2.cpu()
        assert_equal(s1, sj_out[0], f"{backend} spikes call 1")
        assert_equal(s2, sj_out[1], f"{backend} spikes call 2")
        assert_rel_close(vs1, sj_vseq[0], TOL, f"{backend} v_seq call 1")
        assert_rel_close(vs2, sj_vseq[1], TOL, f"{backend} v_seq call 2")
        loss = (s1 * w1).sum() + (s2 * w2).sum() + (vs1**2).sum() + (vs2**2).sum()
        grads = [g.cpu() for g in torch.autograd.grad(loss, [xd] + ([w] if kind == "PLIF" else []))]
        for i, (a, b) in enumerate(zip(grads, sj_grads)):
            assert_rel_close(a, b, TOL, f"{backend} grad[{i}]")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x_seq=torch.ones(3, 4, dtype=torch.int32)), TypeError, "x_seq has dtype torch.int32"),
    (dict(x_seq=torch.ones(3, 4, dtype=torch.bool)), TypeError, "x_seq has dtype torch.bool"),
    (dict(x_seq=torch.ones(0, 4)), ValueError, "T >= 1"),
    (dict(x_seq=torch.tensor(1.0)), ValueError, "T >= 1"),
    (dict(v_init=torch.zeros(5)), ValueError, "v_init has shape"),
    (dict(tau=1.0), ValueError, "tau must be > 1"),
    (dict(tau=0.5), ValueError, "tau must be > 1"),
    (dict(tau=float("inf")), ValueError, "tau must be finite"),
    (dict(tau=float("nan")), ValueError, "tau must be finite"),
    (dict(tau="2"), TypeError, "tau must be a float"),
    (dict(tau=torch.ones(3)), ValueError, "0-dim"),
    (dict(surrogate="relu"), ValueError, "sigmoid, atan, piecewise_quadratic"),
    (dict(alpha=-1.0), ValueError, "alpha must be > 0"),
    (dict(v_threshold=None), TypeError, "v_threshold must be a float"),
    (dict(backend="cupy"), ValueError, "backend='cupy' is not supported"),
    (dict(decay_input=1), TypeError, "decay_input must be a bool"),
    (dict(decay=torch.tensor(0.5), tau=3.0), ValueError, "not both"),
    # any tau with decay, the default's value and None included
    (dict(decay=torch.tensor(0.5), tau=2.0), ValueError, "not both"),
    (dict(decay=torch.tensor(0.5), tau=None), ValueError, "not both"),
    (dict(decay=torch.tensor(0.5), tau=torch.tensor(3.0)), ValueError, "not both"),
    # tensor tau and decay out of range (CPU tensors: checked without a device sync)
    (dict(tau=torch.tensor(0.0)), ValueError, r"tau must be > 1 \(LIF\), got tensor\(0.0\)"),
    (dict(tau=torch.tensor(1.0, requires_grad=True)), ValueError, "tau must be > 1"),
    (dict(tau=torch.tensor(-3.0)), ValueError, "tau must be > 1"),
    (dict(tau=torch.tensor(float("nan"))), ValueError, "tau must be finite"),
    (dict(tau=torch.tensor(float("inf"))), ValueError, "tau must be finite"),
    (dict(decay=torch.tensor(0.0)), ValueError, r"decay \(= 1/tau\) must be in \(0, 1\), got tensor\(0.0\)"),
    (dict(decay=torch.tensor(1.0)), ValueError, "decay .* must be in"),
    (dict(decay=torch.tensor(1.5)), ValueError, "decay .* must be in"),
    (dict(decay=torch.tensor(-0.2)), ValueError, "decay .* must be in"),
    (dict(decay=torch.tensor(float("nan"))), ValueError, "decay .* must be in"),
])
def test_bad_input_raises_clear_error(kwargs, exc, match):
    args = dict(x_seq=torch.ones(3, 4), v_init=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        lif_multistep(dict(args)["x_seq"], args["v_init"], **{k: v for k, v in args.items() if k not in ("x_seq", "v_init")})
    if "backend" not in args:  # the reference takes the same arguments and refuses the same
        with pytest.raises(exc, match=match):
            lif_multistep_reference(args.pop("x_seq"), args.pop("v_init"), **args)


def test_tensor_leak_in_range_and_default_tau_with_decay_run():
    x = torch.ones(3, 4)
    for kw in [dict(decay=torch.tensor(0.5)), dict(tau=torch.tensor(1.0001)), dict(decay=torch.tensor(1e-6))]:
        s, v = lif_multistep(x, **kw)
        assert torch.isfinite(v).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to place v_init elsewhere")
def test_v_init_on_other_device_raises():
    with pytest.raises(ValueError, match="v_init is on"):
        lif_multistep(torch.ones(3, 4, device="cuda"), torch.zeros(4))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40e9,
                    reason="64-bit offsets need T * N > 2**31 elements: a GPU with >= 40 GB")
def test_triton_64bit_offsets():
    check_64bit_offsets("triton")


def test_v_init_on_meta_device_raises():
    with pytest.raises(ValueError, match="v_init is on meta"):
        lif_multistep(torch.ones(3, 4), torch.zeros(4, device="meta"))


def test_triton_on_cpu_without_interpreter_says_how(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        lif_multistep(torch.ones(3, 4), backend="triton")


def test_auto_backend_on_cpu_runs():
    s, v = lif_multistep(torch.ones(3, 4))
    assert s.shape == (3, 4) and v.shape == (4,)


# ---------------------------------------------------------------- integer spike counts (I-LIF)

def count_options(D, window="default", v_threshold=None, detach_reset=False):
    """lif_multistep options of count firing with max spike count D; ``window`` default (0, D),
    wider or narrower than it."""
    grad_window = {"default": None, "wider": (-0.5, D + 1.0), "narrower": (0.5, max(D - 0.5, 0.75))}[window]
    return dict(v_reset=None, decay_input=False, max_spike_count=D, grad_window=grad_window, detach_reset=detach_reset,
                v_threshold=v_threshold if v_threshold is not None else (0.25 if D > 4 else 0.7))


# every D, leak and detach_reset; the windows and store_v_seq cycle through them
COUNT_GRID = [(D, leak, detach, ["default", "wider", "narrower"][i % 3], (i // 3) % 2 == 1)
              for i, (D, leak, detach) in enumerate(itertools.product([1, 2, 4, 15], LEAKS, [False, True]))]
COUNT_IDS = [f"D{D}-{leak}-det{int(det)}-{w}-seq{int(seq)}" for D, leak, det, w, seq in COUNT_GRID]


def check_count_case(backend, device, D, leak, detach, window, store_v_seq, shape=(6, 3, 211)):
    x, v_init, leak_kw = make_case(shape, torch.float32, device, leak, scale=2.0)
    kw = count_options(D, window, detach_reset=detach)
    counts = compare(x, v_init, leak_kw, backend=backend, store_v_seq=store_v_seq, **kw)
    # the case exercises the levels, saturation and the window's both sides
    assert counts.min() == 0 and counts.max() == D and len(counts.unique()) == D + 1, counts.unique()
    assert torch.equal(counts, counts.round())
    return counts


@pytest.mark.parametrize("D,leak,detach,window,store_v_seq", COUNT_GRID, ids=COUNT_IDS)
def test_triton_counts_match_reference(device, D, leak, detach, window, store_v_seq):
    check_count_case("triton", device, D, leak, detach, window, store_v_seq)


@pytest.mark.parametrize("T", [1, 2, 37])
def test_triton_counts_lengths(device, T):
    for leak in ["lif", "decay_tensor"] if T < 37 else ["decay_tensor"]:
        x, v_init, leak_kw = make_case((T, 1531), torch.float32, device, leak, scale=2.0)
        compare(x, v_init, leak_kw, backend="triton", **count_options(4))


@pytest.mark.parametrize("shape", [(4, 7), (3, 2, 3, 5, 7), (5, 1), (4, 2049)])
def test_triton_counts_shapes(device, shape):
    x, v_init, leak_kw = make_case(shape, torch.float32, device, "lif", scale=2.0)
    compare(x, v_init, leak_kw, backend="triton", **count_options(3))


def check_counts_non_contiguous(backend, device):
    base = torch.randn(40, 6, 30, device=device) * 2.0
    for x in (base[::2], base.permute(1, 0, 2), base[:, :, 3:17]):
        for leak in ["lif", "decay_tensor"]:
            _, _, leak_kw = make_case(tuple(x.shape), torch.float32, device, leak)
            kw = count_options(4, "wider")
            s_ref, v_ref, g_ref = run("reference", x.contiguous().requires_grad_(), None, leak_kw, **kw)
            s, v, g = run(backend, x.detach().requires_grad_(), None, leak_kw, **kw)
            assert_equal(s, s_ref, "counts")
            assert_rel_close(v, v_ref, TOL, "v")
            for i, (a, b) in enumerate(zip(g, g_ref)):
                floor = leak_grad_scale(x.contiguous(), None, leak_kw, **kw) if a.dim() == 0 else 0.0
                assert_rel_close(a, b, TOL, f"grad[{i}]", floor=floor)


def test_triton_counts_non_contiguous(device):
    check_counts_non_contiguous("triton", device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("leak", ["lif", "decay_tensor"])
def test_triton_counts_low_precision(device, dtype, leak):
    check_low_precision("triton", (7, 2, 333), dtype, device, leak, leak == "lif", **count_options(15))


def check_count_ties_and_saturation(backend, device):
    """Exact ties H / v_threshold = 0.5, 1.5, 2.5, 3.5 round half to even (0, 2, 2, 4), counts
    saturate at D and at 0, and the window's ends are inside: dC/dH = 1 / v_threshold at
    H / v_threshold = grad_min and = grad_max, 0 one float beyond. IF, one step (H = X); with
    v_threshold 1 (an exact reciprocal) and 0.75 (a division): the values are exact in fp32."""
    scaled = torch.tensor([0.5, 1.5, 2.5, 3.5, 7.25, -1.0, 0.0, 1.0, 4.0, 0.25, 2.75])
    expected = torch.tensor([0.0, 2.0, 2.0, 4.0, 4.0, 0.0, 0.0, 1.0, 4.0, 0.0, 3.0])
    lo, hi = 0.25, 2.75
    above, below = torch.nextafter(torch.tensor(hi), torch.tensor(9.0)), torch.nextafter(torch.tensor(lo), torch.tensor(-9.0))
    for th in [1.0, 0.75]:
        x = torch.cat([scaled, torch.stack([above, below])]) * th
        assert torch.equal(x / th, torch.cat([scaled, torch.stack([above, below])])), "inputs must be exact"
        x = x.reshape(1, -1).to(device).requires_grad_()
        kw = dict(tau=None, v_reset=None, decay_input=False, max_spike_count=4, v_threshold=th, grad_window=(lo, hi),
                  detach_reset=True)
        for b in ["reference", backend]:
            fn = lif_multistep_reference if b == "reference" else lambda *a, **k: lif_multistep(*a, backend=backend, **k)
            c, v = fn(x, **kw)
            assert_equal(c[0, :11].cpu(), expected, f"{b} counts, v_threshold={th}")
            assert_equal(v.cpu(), (x[0] - c[0] * th).detach().cpu(), f"{b} v")
            (gx,) = torch.autograd.grad(c.sum(), x)
            inside = torch.cat([(scaled >= lo) & (scaled <= hi), torch.tensor([False, False])])
            assert_equal(gx[0].cpu(), torch.where(inside, torch.tensor(1.0) / th, 0.0), f"{b} dC/dH, v_threshold={th}")
    # window ends are compared in fp32, as spikingjelly's (a tensor-scalar compare rounds the bound):
    # H / v_threshold = fp32(0.7) < 0.7 is inside the window [0.7, 0.7]
    x = torch.tensor([[0.7]], device=device).requires_grad_()
    for b in ["reference", backend]:
        fn = lif_multistep_reference if b == "reference" else lambda *a, **k: lif_multistep(*a, backend=backend, **k)
        c, _ = fn(x, tau=None, v_reset=None, decay_input=False, max_spike_count=2, grad_window=(0.7, 0.7))
        assert torch.autograd.grad(c.sum(), x)[0].item() == 1.0, b


def test_triton_count_ties_and_saturation(device):
    check_count_ties_and_saturation("triton", device)


def test_count_reference_carries_state():
    """Two steps by hand: H = (1 - 1/tau) V + X with 1 - 1/tau rounded to fp32 once."""
    tau, th = 1.7, 0.6
    x = torch.tensor([[1.0], [0.45]])
    c, v = lif_multistep_reference(x, tau=tau, v_reset=None, decay_input=False, max_spike_count=3, v_threshold=th,
                                   store_v_seq=True)
    decay = torch.tensor(1.0 - 1.0 / tau, dtype=torch.float32)  # the Python double, rounded once
    h0 = x[0]
    c0 = torch.round(h0 / torch.tensor(th))
    v0 = h0 - c0 * torch.tensor(th)
    h1 = decay * v0 + x[1]
    assert c[0].item() == 2.0 and c[1].item() == torch.round(h1 / torch.tensor(th)).item()
    assert_equal(v, torch.stack([v0, h1 - c[1] * torch.tensor(th)]), "v")


SJ_COUNT_CASES = [  # tau, v_threshold, D, grad_window, detach_reset
    (4 / 3, 1.0, 4, None, False),
    (1.7, 0.7, 3, (0.5, 2.0), True),
    (2.9, 0.37, 15, (-1.0, 20.0), False),
    (1.05, 1.3, 1, None, True),
    (5.0, 0.5, 7, (0.0, 3.5), False),
]


@pytest.mark.parametrize("case", range(len(SJ_COUNT_CASES)))
def test_reference_and_triton_counts_match_spikingjelly(device, case):
    check_counts_against_spikingjelly(SJ_COUNT_CASES[case], ["reference", "triton"], device)


def check_counts_against_spikingjelly(case, backends, device="cpu"):
    """spikingjelly 2.0.0's ILIFNode (step_mode='m': its registered ILIF op; on the CPU its
    reference, autograd through it), two calls carrying the state, against two calls of each
    backend (v_init = the last v): counts exactly, v_seq bit for bit in fp32 and within TOL, the
    gradient of x within TOL."""
    tau, th, D, window, detach = case
    torch.manual_seed(100 + D)
    node = sj.ILIFNode(tau=tau, v_threshold=th, surrogate_function=sj_surrogate.MultiLevelSpikeCount(D, grad_window=window),
                       detach_reset=detach, step_mode="m", store_v_seq=True)
    x = (torch.randn(6, 3, 97) * (D / 2 + 1) * th + 0.5 * th).requires_grad_()
    sj_out, sj_vseq = [], []
    for _ in range(2):
        sj_out.append(node(x))
        sj_vseq.append(node.v_seq)
    assert len(sj_out[1].unique()) > 1 and sj_out[1].max() == D, "the case must reach several levels and saturate"
    w1, w2 = torch.randn_like(x), torch.randn_like(x)
    sj_loss = (sj_out[0] * w1).sum() + (sj_out[1] * w2).sum() + (sj_vseq[0] ** 2).sum() + (sj_vseq[1] ** 2).sum()
    (sj_grad,) = torch.autograd.grad(sj_loss, x)
    opts = dict(tau=tau, v_threshold=th, v_reset=None, decay_input=False, max_spike_count=D, grad_window=window,
                detach_reset=detach, store_v_seq=True)
    for backend in backends:
        fn = lif_multistep_reference if backend == "reference" else lambda *a, **k: lif_multistep(*a, backend=backend, **k)
        dev = device if backend in ("triton", "cuda") else "cpu"
        xd = x.detach().to(dev).requires_grad_()
        s1, vs1 = fn(xd, None, **opts)
        s2, vs2 = fn(xd, vs1[-1], **opts)
        for i, (s, vs) in enumerate([(s1, vs1), (s2, vs2)]):
            assert_equal(s.cpu(), sj_out[i].detach(), f"{backend} counts, call {i + 1}")
            assert_equal(vs.cpu(), sj_vseq[i].detach(), f"{backend} v_seq, call {i + 1} (bit for bit)")
        loss = (s1 * w1.to(dev)).sum() + (s2 * w2.to(dev)).sum() + (vs1**2).sum() + (vs2**2).sum()
        (grad,) = torch.autograd.grad(loss, xd)
        assert_rel_close(grad.cpu(), sj_grad, TOL, f"{backend} grad_x")


def check_counts_lif_charge(backend, device, leak):
    """count_charge="lif" (H = V - V / tau + X): fused against the reference."""
    x, v_init, leak_kw = make_case((6, 3, 211), torch.float32, device, leak, scale=2.0)
    compare(x, v_init, leak_kw, backend=backend, count_charge="lif", store_v_seq=leak == "lif",
            **count_options(4, "wider", detach_reset=leak == "tau_tensor"))


@pytest.mark.parametrize("leak", LEAKS)
def test_triton_counts_lif_charge(device, leak):
    check_counts_lif_charge("triton", device, leak)


@pytest.mark.parametrize("detach", [False, True])
def test_count_lif_charge_is_spikingjelly_single_step(detach):
    """spikingjelly's ILIFNode in step_mode='s' charges through LIFNode (V - V / tau + X), not its
    ILIF op's (1 - 1/tau) V + X: count_charge="lif" gives its counts and v bit for bit, step by
    step and in one multi-step call; the default charge gives the same counts and v to an ulp."""
    tau, th, D = 1.7, 0.8, 4
    torch.manual_seed(3)
    node = sj.ILIFNode(tau=tau, v_threshold=th, surrogate_function=sj_surrogate.MultiLevelSpikeCount(D, grad_window=(0.5, 3.5)),
                       detach_reset=detach, step_mode="s")
    x = (torch.randn(8, 4, 500) * 2).requires_grad_()
    sj_c, sj_v = [], []
    for t in range(8):
        sj_c.append(node(x[t]))
        sj_v.append(node.v)
    sj_c, sj_v = torch.stack(sj_c), torch.stack(sj_v)
    w = torch.randn_like(sj_c)
    (sj_grad,) = torch.autograd.grad((sj_c * w).sum() + (sj_v ** 2).sum(), x)
    opts = dict(tau=tau, v_threshold=th, v_reset=None, decay_input=False, max_spike_count=D, grad_window=(0.5, 3.5),
                detach_reset=detach)
    xs = x.detach().requires_grad_()
    v, c_steps, v_steps = None, [], []
    for t in range(8):  # one step per call, as the module's single-step mode
        c, v = lif_multistep_reference(xs[t:t + 1], v, count_charge="lif", **opts)
        c_steps.append(c[0])
        v_steps.append(v)
    c_steps, v_steps = torch.stack(c_steps), torch.stack(v_steps)
    assert_equal(c_steps.detach(), sj_c.detach(), "counts")
    assert_equal(v_steps.detach(), sj_v.detach(), "v (bit for bit)")
    (grad,) = torch.autograd.grad((c_steps * w).sum() + (v_steps ** 2).sum(), xs)
    assert_rel_close(grad, sj_grad, TOL, "grad_x")
    c_m, v_m = lif_multistep_reference(x.detach(), count_charge="lif", store_v_seq=True, **opts)
    assert_equal(c_m, sj_c.detach(), "counts, one call")
    assert_equal(v_m, sj_v.detach(), "v, one call")
    c_i, v_i = lif_multistep_reference(x.detach(), store_v_seq=True, **opts)
    assert not torch.equal(v_i, sj_v.detach()), "the charges round apart (else this test shows nothing)"
    assert_rel_close(v_i, sj_v.detach(), 1e-6, "v, the default charge")


def test_counts_bad_input_raises_before_any_kernel(monkeypatch):
    """Every option that has no meaning with counts is a ValueError naming the argument, raised
    by the argument checks (the dispatch to a kernel is never reached)."""
    import tks_kernels.lif as lif

    monkeypatch.setattr(lif, "_dispatch", lambda *a, **k: pytest.fail("a kernel was dispatched"))
    ok = dict(tau=4 / 3, v_reset=None, decay_input=False, max_spike_count=4)
    cases = [
        (dict(max_spike_count=0), "max_spike_count must be an integer from 1 to 2\\*\\*24"),
        (dict(max_spike_count=-2), "max_spike_count must be an integer"),
        (dict(max_spike_count=2.5), "max_spike_count must be an integer"),
        (dict(max_spike_count=4.0), "max_spike_count must be an integer"),
        (dict(max_spike_count=True), "max_spike_count must be an integer"),
        (dict(max_spike_count="4"), "max_spike_count must be an integer"),
        (dict(max_spike_count=2**24 + 1), "max_spike_count must be an integer"),
        (dict(v_reset=0.0), "pass v_reset=None"),
        (dict(v_reset=-0.5), "pass v_reset=None"),
        (dict(decay_input=True), "pass decay_input=False"),
        (dict(surrogate="atan"), "leave surrogate and alpha at their defaults"),
        (dict(alpha=4.0), "leave surrogate and alpha at their defaults"),
        (dict(grad_window=(2.0, 1.0)), "min > max"),
        (dict(grad_window=(0.0, float("inf"))), "grad_window\\[1\\] must be finite"),
        (dict(grad_window=(float("nan"), 1.0)), "grad_window\\[0\\] must be finite"),
        (dict(grad_window=(1.0,)), "grad_window must be a pair"),
        (dict(grad_window="01"), "grad_window must be a pair"),
        (dict(grad_window=(0.0, "4")), "grad_window must be a pair of numbers"),
        (dict(tau=1.0), "tau must be > 1"),
        (dict(tau=0.5), "tau must be > 1"),
        (dict(tau=torch.tensor(0.9)), "tau must be > 1"),
        (dict(v_threshold=0.0), "needs v_threshold > 0"),
        (dict(v_threshold=-1.0), "needs v_threshold > 0"),
        (dict(max_spike_count=None, grad_window=(0.0, 1.0)), "pass max_spike_count=D too"),
        (dict(count_charge="LIF"), "count_charge='LIF' is not supported; choose one of 'ilif', 'lif'"),
        (dict(max_spike_count=None, count_charge="lif"), "count_charge='lif' is the charge of count firing"),
    ]
    for change, match in cases:
        for backend in ["auto", "torch", "cpp", "triton"]:
            with pytest.raises(ValueError, match=match):
                lif_multistep(torch.ones(3, 4), **{**ok, **change}, backend=backend)
        with pytest.raises(ValueError, match=match):
            lif_multistep_reference(torch.ones(3, 4), **{**ok, **change})
    # and the valid ones pass the checks (numpy integers count as integers)
    import numpy as np

    for change in [dict(), dict(max_spike_count=np.int64(3)), dict(grad_window=(0, 4)), dict(tau=None),
                   dict(decay=torch.tensor(0.5)), dict(tau=torch.tensor(1.5))]:
        args = {**ok, **change}
        if "decay" in change:
            del args["tau"]
        with pytest.raises(pytest.fail.Exception, match="a kernel was dispatched"):
            lif_multistep(torch.ones(3, 4), **args)


def check_count_saved_bytes(backend, device):
    """What the count neuron saves for backward: one fp32 [T, *] (H), as the binary neuron."""
    x = torch.randn(5, 3, 64, device=device, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s, v = lif_multistep(x, tau=4 / 3, **count_options(4), backend=backend)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
                if t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()}
    assert sum(storages.values()) == x.numel() * 4, storages
    s.sum().backward()


def test_triton_count_saved_bytes(device):
    check_count_saved_bytes("triton", device)


def test_triton_count_op_registration(device):
    from tks_kernels.lif import triton as lif_triton  # noqa: F401 (registers the ops)

    check_count_opcheck(torch.ops.tks_triton, device)


def check_count_opcheck(ns, device):
    x = torch.randn(5, 3, 17, device=device, requires_grad=True)
    v_init = torch.randn(3, 17, device=device, requires_grad=True)
    decay = torch.tensor(0.4, device=device, requires_grad=True)
    # x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset,
    # surrogate, alpha, store_v_seq, save_h, max_spike_count, grad_min, grad_max
    torch.library.opcheck(ns.lif_forward.default,
                          (x, v_init, None, 1, 4 / 3, False, 0.5, 0.0, True, False, 0, 4.0, False, True, 4, 0.0, 4.0))
    torch.library.opcheck(ns.lif_forward.default,
                          (x, v_init, decay, 2, 2.0, False, 0.3, 0.0, True, True, 0, 4.0, True, True, 15, -1.0, 9.0))
    torch.library.opcheck(ns.lif_forward.default,  # the LIF charge (count_lif_charge)
                          (x, v_init, None, 1, 1.7, False, 0.5, 0.0, True, False, 0, 4.0, False, True, 3, 0.0, 3.0, True))
    h = torch.randn(5, 3, 17, device=device) * 2
    torch.library.opcheck(ns.lif_backward.default, (
        torch.randn(5, 3, 17, device=device), torch.randn(3, 17, device=device), h, None, v_init.detach(),
        decay.detach(), 2, 2.0, False, 0.5, 0.0, True, False, 0, 4.0, False, torch.float32, True, 4, 0.5, 3.0))
    torch.library.opcheck(ns.lif_backward.default, (
        torch.randn(5, 3, 17, device=device), None, h, None, v_init.detach(), decay.detach(), 2, 2.0, False, 0.5,
        0.0, True, False, 0, 4.0, False, torch.float32, True, 4, 0.0, 4.0, True))


def check_count_compile(backend, device):
    """torch.compile(fullgraph=True) of Linear -> count neuron -> Linear: no graph break, values and
    gradients (weights and a learnable tau) equal eager."""
    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(16, 24).to(device), torch.nn.Linear(24, 5).to(device)
    tau = torch.tensor(1.6, device=device, requires_grad=True)

    def model(x):
        c, v = lif_multistep(lin1(x) * 3, tau=tau, backend=backend, **count_options(3, "wider"))
        return lin2(c).mean(0), v

    x = torch.randn(4, 3, 16, device=device)
    params = [*lin1.parameters(), *lin2.parameters(), tau]
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = {}
    for name, fn in [("eager", model), ("compiled", compiled)]:
        o, v = fn(x)
        out[name] = (o, v, torch.autograd.grad((o * o).sum() + v.sum(), params))
    assert_equal(out["compiled"][0], out["eager"][0], "output")
    assert_equal(out["compiled"][1], out["eager"][1], "v")
    for i, (a, b) in enumerate(zip(out["compiled"][2], out["eager"][2])):
        assert_rel_close(a, b, 1e-6, f"grad[{i}]")


def test_triton_count_compile(device):
    check_count_compile("triton", device)


def test_triton_count_memory_format(device):
    check_memory_format("triton", device, "channels_last_5d", **{k: v for k, v in count_options(3).items()
                                                                  if k != "v_threshold"})
