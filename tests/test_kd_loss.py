"""Distillation loss: the fused kernels (Triton, on the CPU through the interpreter; C++) against the
eager reference in fp64, the reference against F.kl_div, masked classes (-inf logits), compile,
double backward and the argument checks."""
import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F

from tks_kernels import kd_loss, kd_loss_reference
from tks_kernels.kd_loss.config import parse_kd_loss_args

from _utils import assert_equal, assert_rel_close, rel_err

kd_loss_pkg = importlib.import_module("tks_kernels.kd_loss")

TOL = 1e-5
CUDA = torch.cuda.is_available()
NEG_INF = float("-inf")


def cpp_ready():
    """The C++ backend must be built for these tests; fail (never skip) when it is not."""
    from tks_kernels import _ext

    reason = _ext.unavailable_reason("cpp", torch.empty(0), "kd_loss", arg="student")
    if reason:
        pytest.fail(f"the cpp backend cannot run: {reason}")


def on(backend, device):
    """(backend, device): the cpp backend runs on the CPU."""
    if backend == "cpp":
        cpp_ready()
        return "cpp", "cpu"
    return backend, device


def make_pair(Ts, Tt, B, C, *, seed=0, dtype=torch.float32, device="cpu"):
    """Student [Ts, B, C] and teacher [Tt, B, C] logits (T = 0: a [B, C] input). The teacher is
    sharper (N(0, 3) against N(0, 2)) and independent, so the KL is O(0.1 .. 10), where an fp32
    relative error means something."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(max(Ts, 1), B, C, generator=g) * 2.0
    t = torch.randn(max(Tt, 1), B, C, generator=g) * 3.0
    s, t = (s[0] if Ts == 0 else s), (t[0] if Tt == 0 else t)
    return s.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)


def run(backend, s, t, *, seed=1, block_c=None, **kw):
    """Loss and the gradients (student, teacher) of a random weighting of the loss's entries;
    ``backend="reference"`` is the eager reference (fp64 for fp64 inputs). The teacher's gradient
    is None when it is detached."""
    s = s.detach().requires_grad_()
    t = t.detach().requires_grad_()
    if backend == "reference":
        loss = kd_loss_reference(s, t, **kw)
    elif block_c is not None:  # the Triton kernels with a small class block
        from tks_kernels.kd_loss.triton import KDLossTritonFunction

        cfg, ss, tt = parse_kd_loss_args(s, t, kw.get("temperature", 2.0), kw.get("detach_teacher", True),
                                         kw.get("reduction", "mean"))
        loss = KDLossTritonFunction.apply(ss, tt.detach() if cfg.detach_teacher else tt, cfg, block_c)
    else:
        loss = kd_loss(s, t, backend=backend, **kw)
    w = torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(s.device)
    grad_s, grad_t = torch.autograd.grad((loss.double() * w).sum(), (s, t), allow_unused=True)
    return loss.detach(), grad_s, grad_t


def compare(backend, s, t, tol=TOL, block_c=None, **kw):
    """``backend`` against the fp64 reference (value, both gradients), and the fp32 reference too."""
    ref64 = run("reference", s.double(), t.double(), **kw)
    ref32 = run("reference", s, t, **kw)
    got = run(backend, s, t, block_c=block_c, **kw)
    assert got[0].dtype == torch.float32 and got[0].shape == ref64[0].shape
    assert got[1].dtype == s.dtype and got[1].shape == s.shape
    for what, a, a32, b in zip(("loss", "grad student", "grad teacher"), got, ref32, ref64):
        if b is None:
            assert a is None, f"{what}: a gradient although the teacher is detached"
            continue
        assert_rel_close(a, b, tol, what)
        assert_rel_close(a32, b, tol, f"fp32 reference {what}")
    return ref64


# ---------------------------------------------------------------------------------------------
# The option grid: every pair of values of every two axes, in 27 cases (greedy all-pairs, cheap
# cases preferred).
# Ts / Tt = 0 is a [B, C] input; C = 3000 spans two class blocks of the default 2048.

AXES = dict(Ts=[0, 1, 4, 10], Tt=[0, 1, 4, 10], B=[1, 5, 16], C=[2, 10, 101, 1000, 3000], tau=[1.0, 2.0, 5.0],
            detach=[True, False], reduction=["mean", "sum", "none"])
GRID = [
    (0, 1, 1, 2, 5.0, True, "mean"),
    (1, 1, 1, 2, 2.0, False, "sum"),
    (1, 0, 1, 10, 1.0, False, "sum"),
    (4, 1, 1, 2, 5.0, False, "mean"),
    (0, 4, 1, 10, 1.0, True, "none"),
    (4, 0, 1, 10, 1.0, False, "mean"),
    (1, 4, 1, 101, 5.0, False, "mean"),
    (0, 1, 1, 3000, 1.0, True, "none"),
    (10, 0, 1, 2, 1.0, False, "none"),
    (10, 1, 1, 101, 1.0, False, "sum"),
    (0, 10, 1, 101, 5.0, True, "none"),
    (4, 10, 1, 1000, 2.0, True, "sum"),
    (1, 1, 5, 1000, 5.0, True, "mean"),
    (4, 1, 5, 101, 2.0, False, "none"),
    (4, 4, 1, 3000, 5.0, False, "sum"),
    (1, 10, 1, 3000, 2.0, True, "none"),
    (0, 10, 5, 2, 1.0, True, "none"),
    (1, 1, 16, 10, 2.0, True, "mean"),
    (10, 10, 5, 10, 5.0, False, "mean"),
    (10, 4, 5, 1000, 1.0, True, "sum"),
    (0, 0, 16, 1000, 5.0, False, "none"),
    (0, 4, 16, 2, 2.0, False, "sum"),
    (4, 0, 16, 101, 1.0, True, "mean"),
    (10, 0, 5, 3000, 2.0, True, "mean"),
    (1, 0, 16, 3000, 2.0, True, "mean"),
    (1, 10, 16, 2, 2.0, True, "mean"),
    (10, 0, 16, 2, 1.0, True, "sum"),
]
GRID_IDS = [f"Ts{c[0]}-Tt{c[1]}-B{c[2]}-C{c[3]}-tau{c[4]:g}-det{int(c[5])}-{c[6]}" for c in GRID]


def test_grid_covers_every_pair():
    values = list(AXES.values())
    for i, j in itertools.combinations(range(len(values)), 2):
        seen = {(case[i], case[j]) for case in GRID}
        missing = set(itertools.product(values[i], values[j])) - seen
        assert not missing, f"{list(AXES)[i]} x {list(AXES)[j]}: {sorted(missing, key=str)[:5]}"


def grid_kwargs(case):
    *_, tau, detach, reduction = case
    return dict(temperature=tau, detach_teacher=detach, reduction=reduction)


@pytest.mark.parametrize("case", GRID, ids=GRID_IDS)
@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_fused_matches_reference(device, backend, case):
    backend, device = on(backend, device)
    Ts, Tt, B, C = case[:4]
    s, t = make_pair(Ts, Tt, B, C, seed=GRID.index(case), device=device)
    compare(backend, s, t, **grid_kwargs(case))


def test_cpp_every_option():
    """The C++ kernels are cheap: every combination of the scalar options on one shape."""
    cpp_ready()
    s, t = make_pair(5, 3, 9, 37, seed=3)
    for tau, detach, reduction in itertools.product(AXES["tau"], AXES["detach"], AXES["reduction"]):
        compare("cpp", s, t, temperature=tau, detach_teacher=detach, reduction=reduction)


MULTI_BLOCK = [(3, 5, 3, 50, 16), (1, 2, 3, 40, 16), (4, 4, 2, 33, 16)]  # 33: the last block holds one class


@pytest.mark.parametrize("Ts,Tt,B,C,block_c", MULTI_BLOCK, ids=[f"Ts{c[0]}-Tt{c[1]}-C{c[3]}" for c in MULTI_BLOCK])
def test_triton_multi_block(device, Ts, Tt, B, C, block_c):
    s, t = make_pair(Ts, Tt, B, C, seed=C, device=device)
    for reduction, detach in (("mean", False), ("none", True)):
        compare("triton", s, t, block_c=block_c, temperature=2.0, detach_teacher=detach, reduction=reduction)


# ---------------------------------------------------------------------------------------------
# What the loss is


def test_reference_is_kl_div_of_the_time_means():
    """The reference against F.kl_div on the time-averaged logits (fp64), every reduction."""
    s, t = make_pair(4, 6, 5, 11, seed=2)
    s, t = s.double(), t.double()
    tau = 3.0
    log_p = F.log_softmax(s.mean(0) / tau, -1)
    log_q = F.log_softmax(t.mean(0) / tau, -1)
    per_sample = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1) * tau ** 2
    assert_rel_close(kd_loss_reference(s, t, temperature=tau, reduction="none"), per_sample, 1e-12, "none")
    assert_rel_close(kd_loss_reference(s, t, temperature=tau),
                     F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * tau ** 2, 1e-12, "batchmean")
    assert_rel_close(kd_loss_reference(s, t, temperature=tau, reduction="sum"), per_sample.sum(), 1e-12, "sum")
    # and its gradients are autograd's through F.kl_div
    s1, t1 = s.clone().requires_grad_(), t.clone().requires_grad_()
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    kd_loss_reference(s1, t1, temperature=tau, detach_teacher=False).backward()
    (F.kl_div(F.log_softmax(s2.mean(0) / tau, -1), F.log_softmax(t2.mean(0) / tau, -1), log_target=True,
              reduction="batchmean") * tau ** 2).backward()
    assert_rel_close(s1.grad, s2.grad, 1e-12, "student grad")
    assert_rel_close(t1.grad, t2.grad, 1e-12, "teacher grad")


@pytest.mark.parametrize("backend", ["torch", "triton", "cpp"])
def test_time_axes_are_averaged(device, backend):
    """[T, B, C] inputs are their time means: the same loss as the [B, C] means, and a [B, C]
    input's gradient is [B, C]."""
    backend, device = on(backend, device)
    s, t = make_pair(4, 7, 6, 13, seed=5, device=device)
    full = kd_loss(s, t, reduction="none", backend=backend)
    means = kd_loss(s.mean(0), t.mean(0), reduction="none", backend=backend)
    assert_rel_close(full, means, 1e-6, "time means")
    s2 = s.mean(0).requires_grad_()
    kd_loss(s2, t, backend=backend).backward()
    assert s2.grad.shape == s2.shape


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_detach_teacher(device, backend):
    """detach_teacher=True (the default): no gradient reaches the teacher; False: it does, and
    the student's gradient is the same either way. The same tensor as both: loss 0, gradient 0."""
    backend, device = on(backend, device)
    s, t = make_pair(3, 5, 4, 10, seed=6, device=device)
    s1, t1 = s.clone().requires_grad_(), t.clone().requires_grad_()
    kd_loss(s1, t1, backend=backend).backward()
    assert t1.grad is None
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    kd_loss(s2, t2, detach_teacher=False, backend=backend).backward()
    assert t2.grad is not None and t2.grad.abs().sum() > 0
    assert_equal(s1.grad, s2.grad, "student gradient, teacher detached or not")
    z = s.clone().requires_grad_()
    loss = kd_loss(z, z, detach_teacher=False, backend=backend)
    loss.backward()
    assert abs(loss.item()) < 1e-6 and z.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("layout", ["batch_first", "class_strided"])
@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_strided_inputs(device, backend, layout):
    backend, device = on(backend, device)
    s, t = make_pair(4, 3, 6, 33, seed=4, device=device)
    if layout == "batch_first":
        s, t = (x.transpose(0, 1).contiguous().transpose(0, 1) for x in (s, t))
    else:
        s, t = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (s, t))
    compare(backend, s, t, detach_teacher=False)


LOW_PRECISION = [(4, 2, 7, 101, torch.bfloat16, torch.bfloat16), (1, 3, 5, 1000, torch.float16, torch.float16),
                 (3, 0, 6, 10, torch.bfloat16, torch.float32)]


@pytest.mark.parametrize("Ts,Tt,B,C,s_dtype,t_dtype", LOW_PRECISION,
                         ids=[f"Ts{c[0]}-Tt{c[1]}-C{c[3]}-{str(c[4])[6:]}-{str(c[5])[6:]}" for c in LOW_PRECISION])
@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_low_precision(device, backend, Ts, Tt, B, C, s_dtype, t_dtype):
    """bf16 / fp16 logits (the two may differ): read as they are, arithmetic in fp32, each gradient
    rounded to its input's dtype once."""
    backend, device = on(backend, device)
    s, t = make_pair(Ts, Tt, B, C, seed=7, device=device)
    s, t = s.to(s_dtype), t.to(t_dtype)
    kw = dict(temperature=2.0, detach_teacher=False, reduction="none")
    ref64 = run("reference", s.double(), t.double(), **kw)
    got = run(backend, s, t, **kw)
    ref_lp = run("reference", s, t, **kw)  # the reference, gradients rounded to the dtypes
    assert_rel_close(got[0], ref64[0], TOL, "loss")
    for what, a, a_lp, b, dtype in (("grad student", got[1], ref_lp[1], ref64[1], s_dtype),
                                    ("grad teacher", got[2], ref_lp[2], ref64[2], t_dtype)):
        assert a.dtype == dtype
        err, err_ref = rel_err(a, b), rel_err(a_lp, b)
        assert err <= torch.finfo(dtype).eps / 2 * 1.01 + TOL, (what, err)
        assert err <= 2 * err_ref + TOL, (what, err, err_ref)


# ---------------------------------------------------------------------------------------------
# Masked classes (-inf logits)

MASK_BACKENDS = ["torch", "triton", "triton-multi-block", "cpp"]


def mask_backend(backend, device):
    if backend == "triton-multi-block":
        return "triton", device, 16
    return (*on(backend, device), None)


def class_mask(B, C, seed, first_block=False):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, C, generator=g) < 0.35
    mask[:, :16] |= first_block
    mask[:, -1] = False  # every sample keeps a class
    return mask


@pytest.mark.parametrize("backend", MASK_BACKENDS)
def test_classes_masked_in_both_are_removed_classes(device, backend):
    """The same classes -inf in the student and the teacher, at every step: per sample exactly the
    loss without those classes (F.kl_div and the old kernels gave NaN), zero gradient on them on
    both sides; with the first 16 masked, a Triton class block that is all -inf."""
    backend, device, block_c = mask_backend(backend, device)
    s, t = make_pair(3, 4, 5, 40, seed=8)
    mask = class_mask(5, 40, seed=1, first_block=block_c is not None)
    kw = dict(temperature=2.0, detach_teacher=False, reduction="none")
    loss, gs, gt = run(backend, s.masked_fill(mask, NEG_INF).to(device), t.masked_fill(mask, NEG_INF).to(device),
                       block_c=block_c, **kw)
    w = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # run()'s weights
    for b in range(5):
        keep = (~mask[b]).nonzero()[:, 0]
        sb, tb = s[:, b:b + 1, keep].double().requires_grad_(), t[:, b:b + 1, keep].double().requires_grad_()
        lb = kd_loss_reference(sb, tb, **kw)
        gsb, gtb = torch.autograd.grad(lb.sum() * w[b], (sb, tb))
        assert_rel_close(loss[b].cpu(), lb[0], TOL, f"loss of sample {b}")
        assert_rel_close(gs[:, b, keep].cpu(), gsb[:, 0], TOL, f"student grad of sample {b}")
        assert_rel_close(gt[:, b, keep].cpu(), gtb[:, 0], TOL, f"teacher grad of sample {b}")
    for what, g in (("student", gs), ("teacher", gt)):
        assert_equal(g.cpu()[mask.expand_as(g)], torch.zeros(int(mask.sum()) * g.shape[0]), f"masked {what} grad")


@pytest.mark.parametrize("backend", MASK_BACKENDS)
def test_classes_masked_in_the_teacher_only(device, backend):
    """A class the teacher masks (some steps or all) has q = 0: it adds nothing to the KL and its
    teacher entries get zero gradient, while the student is pushed away from it (gradient τ p / Ts);
    the fused kernels match the reference, which matches the sum written out."""
    backend, device, block_c = mask_backend(backend, device)
    s, t = make_pair(3, 4, 5, 40, seed=9)
    g = torch.Generator().manual_seed(2)
    tmask = torch.rand(4, 5, 40, generator=g) < 0.15
    tmask[:, :, :16] |= block_c is not None
    tmask[:, :, -1] = False
    tm = t.masked_fill(tmask, NEG_INF)
    kw = dict(temperature=3.0, detach_teacher=False, reduction="none")
    ref = run("reference", s.double(), tm.double(), **kw)
    got = run(backend, s.to(device), tm.to(device), block_c=block_c, **kw)
    for what, a, b in zip(("loss", "grad student", "grad teacher"), got, ref):
        assert_rel_close(a.cpu(), b, TOL, what)
    assert_equal(got[2].cpu()[tmask], torch.zeros(int(tmask.sum())), "gradient of the teacher's -inf entries")
    # by hand: the sum over the classes the teacher keeps
    sd, td = s.double(), tm.double()
    log_p = torch.log_softmax(sd.mean(0) / 3.0, -1)
    kept = ~tmask.any(0)
    log_q = torch.log_softmax(td.mean(0) / 3.0, -1)
    by_hand = (log_q.exp() * torch.where(kept, log_q - log_p, 0.0)).sum(-1) * 9.0
    assert_rel_close(ref[0], by_hand, 1e-12, "KL over the teacher's classes")


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # the interpreter's numpy on inf - inf
@pytest.mark.parametrize("backend", ["torch", "triton", "cpp"])
def test_student_masked_where_the_teacher_is_not(device, backend):
    """The documented +inf: the KL is infinite; the student's gradient stays finite (τ (p − q) / Ts,
    as autograd gives), the teacher's is not finite for that sample (-inf, NaN at the class), as
    autograd's; other samples are exact."""
    backend, device, _ = mask_backend(backend, device)
    s, t = make_pair(2, 3, 4, 12, seed=10)
    s[1, 0, 5] = NEG_INF
    kw = dict(temperature=2.0, detach_teacher=False, reduction="none")
    loss, gs, gt = run(backend, s.to(device), t.to(device), **kw)
    ref = run("reference", s.double(), t.double(), **kw)
    assert loss[0].item() == float("inf") and torch.isfinite(loss[1:]).all()
    assert_rel_close(loss[1:].cpu(), ref[0][1:], TOL, "other samples")
    assert torch.isfinite(gs).all()
    assert_rel_close(gs.cpu(), ref[1], TOL, "student gradient")
    for what, test in (("NaN", torch.isnan), ("-inf", torch.isneginf)):
        assert_equal(test(gt[:, 0]).cpu(), test(ref[2][:, 0]), f"{what} entries of the teacher gradient")
    assert not torch.isfinite(gt[:, 0]).any()
    assert_rel_close(gt[:, 1:].cpu(), ref[2][:, 1:], TOL, "teacher gradient of the other samples")


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # the interpreter's numpy on NaN input
@pytest.mark.parametrize("backend", ["torch", "triton", "cpp"])
def test_undefined_samples_are_nan_and_alone(device, backend):
    """No defined loss (a student step all -inf, a teacher step all -inf, a +inf, a NaN): NaN for
    that sample, the others exact."""
    backend, device, _ = mask_backend(backend, device)
    s, t = make_pair(2, 3, 5, 6, seed=11)
    s[1, 1] = NEG_INF
    t[0, 2] = NEG_INF
    s[0, 3, 2] = float("inf")
    t[2, 4, 1] = float("nan")
    loss = kd_loss(s.to(device), t.to(device), reduction="none", backend=backend)
    assert loss[1:].isnan().all(), loss
    assert_rel_close(loss[:1].cpu(), kd_loss_reference(s[:, :1].double(), t[:, :1].double(), reduction="none"),
                     TOL, "sample 0")


# ---------------------------------------------------------------------------------------------
# Backends, compile, double backward


def test_auto_backend_on_cpu_is_cpp(monkeypatch):
    cpp_ready()
    s, t = make_pair(2, 2, 3, 4)
    cpp_mod = importlib.import_module("tks_kernels.kd_loss.cpp")
    called = []
    original = cpp_mod.kd_loss_cpp
    monkeypatch.setattr(cpp_mod, "kd_loss_cpp", lambda *a: called.append(1) or original(*a))
    kd_loss(s, t)
    assert called == [1]


def test_cuda_backend_name_points_to_triton():
    s, t = make_pair(2, 2, 3, 4)
    with pytest.raises(RuntimeError, match="no CUDA kernel for kd_loss, use backend='triton'"):
        kd_loss(s, t, backend="cuda")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device: auto -> triton and cpp refusing CUDA tensors")
def test_auto_backend_on_cuda_is_triton(monkeypatch):
    s, t = make_pair(2, 2, 3, 4, device="cuda")
    triton_mod = importlib.import_module("tks_kernels.kd_loss.triton")
    called = []
    original = triton_mod.kd_loss_forward_triton
    monkeypatch.setattr(triton_mod, "kd_loss_forward_triton", lambda *a: called.append(1) or original(*a))
    kd_loss(s, t)
    assert called == [1]
    with pytest.raises(RuntimeError, match="CPU tensors"):
        kd_loss(s, t, backend="cpp")


def test_cpp_op_registration():
    """Schema, fake (meta) implementation, autograd registration: torch.library.opcheck."""
    cpp_ready()
    s, t = make_pair(3, 2, 4, 7, seed=12)
    s.requires_grad_()
    t.requires_grad_()
    torch.library.opcheck(torch.ops.tks.kd_loss_forward.default, (s, t, 2.0))
    saved = torch.ops.tks.kd_loss_forward(s.detach(), t.detach(), 2.0)[1]
    torch.library.opcheck(torch.ops.tks.kd_loss_backward.default,
                          (saved, torch.randn(4), 3, 2, 2.0, True, True, torch.float32, torch.float32))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_triton_op_registration(device, reduction):
    s, t = make_pair(3, 2, 4, 7, seed=12, device=device)
    s.requires_grad_()
    t.requires_grad_()
    torch.library.opcheck(torch.ops.tks_triton.kd_loss_forward.default, (s, t, 2.0, reduction, 0))
    saved = torch.ops.tks_triton.kd_loss_forward(s.detach(), t.detach(), 2.0, "none", 0)[1]
    torch.library.opcheck(torch.ops.tks_triton.kd_loss_backward.default,
                          (saved, torch.randn(4, device=device), 3, 2, 2.0, True, False, torch.float32,
                           torch.float32, 1.0, 0))


@pytest.mark.parametrize("backend,kw", [("torch", dict(detach_teacher=False)), ("cpp", dict(detach_teacher=False)),
                                        ("cpp", dict(reduction="none")), ("triton", dict(detach_teacher=False)),
                                        ("triton", dict(reduction="sum"))],
                         ids=["torch", "cpp-teacher-grad", "cpp-none", "triton-teacher-grad", "triton-sum"])
def test_under_torch_compile_fullgraph(device, backend, kw):
    """torch.compile(fullgraph=True) traces every backend (the fused ones as custom ops): the
    same values and gradients as the eager call."""
    backend, device = on(backend, device)
    s, t = make_pair(4, 3, 6, 10, seed=13, device=device)

    def total(student, teacher):
        loss = kd_loss(student, teacher, temperature=2.0, backend=backend, **kw)
        return (loss * torch.linspace(0.5, 1.5, loss.numel(), device=loss.device)).sum()

    compiled = torch.compile(total, backend="aot_eager", fullgraph=True)
    (s1, t1), (s2, t2) = [(s.clone().requires_grad_(), t.clone().requires_grad_()) for _ in range(2)]
    value = compiled(s1, t1)
    value.backward()
    ref = total(s2, t2)
    ref.backward()
    assert_rel_close(value.detach(), ref.detach(), 1e-6, "compiled value")
    assert_rel_close(s1.grad, s2.grad, 1e-6, "compiled student grad")
    assert (t1.grad is None) == (t2.grad is None)
    if t2.grad is not None:
        assert_rel_close(t1.grad, t2.grad, 1e-6, "compiled teacher grad")


_COMPILE_FIRST = """
import sys, torch, tks_kernels
assert "tks_kernels._ext" not in sys.modules and "tks_kernels._C" not in sys.modules, "loaded before the call"
s, t = torch.randn(4, 5, 7, requires_grad=True), torch.randn(2, 5, 7, requires_grad=True)
f = torch.compile(lambda s, t: tks_kernels.kd_loss(s, t, detach_teacher=False), backend="aot_eager",
                  fullgraph=True)
loss = f(s, t)
loss.backward()
assert "tks_kernels._C" in sys.modules  # loaded by the compiled call itself (auto picks cpp on CPU)
s2, t2 = s.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
ref = tks_kernels.kd_loss(s2, t2, detach_teacher=False, backend="torch")
ref.backward()
assert torch.allclose(loss, ref, rtol=1e-5) and torch.allclose(s.grad, s2.grad, rtol=1e-5, atol=1e-7)
assert torch.allclose(t.grad, t2.grad, rtol=1e-5, atol=1e-7)
print("ok")
"""


def test_cpp_compiled_as_the_first_call_of_the_process():
    """torch.compile(fullgraph=True) of kd_loss (backend "auto": cpp here) as the first call of a fresh
    process, before anything has loaded the extension."""
    cpp_ready()
    from test_tks_loss import run_fresh_python

    run_fresh_python(_COMPILE_FIRST)


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_double_backward_raises_in_the_first_backward(device, backend):
    """create_graph=True through a fused backend raises in that backward, naming the op, the
    backend and the fix."""
    backend, device = on(backend, device)
    s, t = make_pair(2, 3, 3, 4, seed=14, device=device)
    w = torch.ones_like(s, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"kd_loss\\(backend='{backend}'\\) does not support double backward"
                                           ".*use backend='torch'"):
        torch.autograd.grad(kd_loss(s * w, t, backend=backend), w, create_graph=True)


def test_reference_has_the_double_backward_the_error_points_to():
    """backend='torch' (the fix the error names) differentiates twice, correctly, in the student
    and in the teacher."""
    from test_tks_loss import hvp_matches_finite_differences

    s, t = (x.double() for x in make_pair(2, 3, 3, 4, seed=14))
    hvp_matches_finite_differences(lambda a: kd_loss_reference(a, t, detach_teacher=False), s, "student")
    hvp_matches_finite_differences(lambda b: kd_loss_reference(s, b, detach_teacher=False), t, "teacher")


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error before any kernel runs


def _bad_inputs():
    s, t = make_pair(3, 2, 4, 5)
    return [
        ("1-D student", (s[0, 0], t), {}, ValueError, "student must have shape \\[T, B, C\\].*or \\[B, C\\]"),
        ("4-D teacher", (s, t[None]), {}, ValueError, "teacher must have shape"),
        ("T = 0", (s[:0], t), {}, ValueError, "student must have at least one time step"),
        ("B = 0", (s[:, :0], t[:, :0]), {}, ValueError, "B >= 1 samples"),
        ("B mismatch", (s, t[:, :3]), {}, ValueError, "same batch size B and number of classes C"),
        ("C mismatch", (s, t[..., :4]), {}, ValueError, "same batch size B and number of classes C"),
        ("student not a tensor", (s.tolist(), t), {}, TypeError, "student must be a torch.Tensor"),
        ("int teacher", (s, t.long()), {}, TypeError, "teacher has dtype torch.int64"),
        ("fp64 student", (s.double(), t), {}, TypeError, "student has dtype torch.float64"),
        ("devices", (s, t.to("meta")), {}, ValueError, "teacher is on meta but student is on cpu"),
        ("temperature 0", (s, t), dict(temperature=0.0), ValueError, "temperature must be > 0"),
        ("temperature < 0", (s, t), dict(temperature=-2.0), ValueError, "temperature must be > 0"),
        ("temperature nan", (s, t), dict(temperature=float("nan")), ValueError, "temperature must be finite"),
        ("temperature tensor", (s, t), dict(temperature=torch.tensor(2.0)), TypeError, "temperature must be a float"),
        ("reduction", (s, t), dict(reduction="batchmean"), ValueError, "reduction='batchmean' is not supported"),
        ("reduction type", (s, t), dict(reduction=None), TypeError, "reduction must be a str"),
        ("detach flag", (s, t), dict(detach_teacher=0), TypeError, "detach_teacher must be a bool"),
        ("backend", (s, t), dict(backend="cudnn"), ValueError, "backend='cudnn' is not supported"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_bad_input_raises_before_any_kernel(monkeypatch, case):
    _, args, kw, error, message = case

    def no_kernel(*a, **k):
        raise AssertionError("a kernel ran on bad input")

    monkeypatch.setattr(kd_loss_pkg, "_dispatch", no_kernel)
    with pytest.raises(error, match=message):
        kd_loss(*args, **kw)
    if "backend" not in kw and "float64" not in message:  # the reference also takes fp64 (an oracle)
        with pytest.raises(error, match=message):
            kd_loss_reference(*args, **kw)


def test_cpp_kernel_checks_its_own_inputs():
    """The ops called directly (no Python checks) still refuse mismatched shapes."""
    cpp_ready()
    s, t = make_pair(3, 2, 4, 5)
    with pytest.raises(RuntimeError, match="must have the same B and C"):
        torch.ops.tks.kd_loss_forward(s, t[:, :3], 2.0)
    with pytest.raises(RuntimeError, match="temperature must be > 0"):
        torch.ops.tks.kd_loss_forward(s, t, 0.0)
    saved = torch.ops.tks.kd_loss_forward(s, t, 2.0)[1]
    with pytest.raises(RuntimeError, match="grad_loss must be \\[B\\]"):
        torch.ops.tks.kd_loss_backward(saved, torch.ones(3), 3, 2, 2.0, True, False, torch.float32, torch.float32)
