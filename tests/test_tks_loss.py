"""TKS loss: the fused kernels (Triton, on the CPU through the interpreter; C++) against the eager
reference, the reference against an independent implementation of the TKS authors' formulation,
the baselines, and the argument checks."""
import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F

from tks_kernels import mean_ce, tet_loss, tks_lambda, tks_loss, tks_loss_reference
from tks_kernels.tks_loss.config import parse_tks_loss_args

from _utils import assert_equal, assert_rel_close, rel_err

# tks_kernels.tks_loss is the function; the subpackage of the same name is in sys.modules
tks_loss_pkg = importlib.import_module("tks_kernels.tks_loss")

TOL = 1e-5
CUDA = torch.cuda.is_available()


def cpp_ready():
    """The C++ backend must be built for these tests; fail (never skip) when it is not."""
    from tks_kernels import _ext

    reason = _ext.unavailable_reason("cpp", torch.empty(0), "tks_loss", arg="logits")
    if reason:
        pytest.fail(f"the cpp backend cannot run: {reason}")


# ---------------------------------------------------------------------------------------------
# Inputs


def make_logits(T, B, C, scenario, *, seed=0, scale=2.0, dtype=torch.float32, device="cpu"):
    """Logits [T, B, C] (C >= 2) and labels [B] where the steps whose argmax is the label are
    random / some / none / all of them, or with tied maxima ("ties"). The label wins or loses by
    a margin of ~scale/2, so the losses stay O(0.1 .. 10), where an fp32 relative error means
    something (a loss of 1e-9 is below fp32 resolution in the reference as in the kernels)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (B,), generator=g)
    z = torch.randn(T, B, C, generator=g) * scale
    b_idx = torch.arange(B)
    others_max = z.scatter(2, y[None, :, None].expand(T, B, 1), float("-inf")).amax(-1)  # [T, B]
    margin = (0.25 + torch.rand(T, B, generator=g)) * scale
    if scenario == "random":
        pass
    elif scenario in ("some", "none", "all"):
        pick = {"some": torch.rand(T, B, generator=g) < 0.5, "none": torch.zeros(T, B, dtype=torch.bool),
                "all": torch.ones(T, B, dtype=torch.bool)}[scenario]
        z[:, b_idx, y] = torch.where(pick, others_max + margin, others_max - margin)
    elif scenario == "ties":
        # small integers: rows often hold their maximum more than once
        z = torch.randint(-2, 2, (T, B, C), generator=g).float()
        # the label ties with the maximum on about half of the steps, before or after its first index
        tie = torch.rand(T, B, generator=g) < 0.5
        z[:, b_idx, y] = torch.where(tie, z.amax(-1), z[:, b_idx, y])
        # and on step 0 the label and one other class share the maximum
        row_max = z[0].amax(-1)
        z[0, b_idx, y] = row_max
        z[0, b_idx, (y + 1) % C] = row_max
    else:
        raise ValueError(scenario)
    return z.to(device=device, dtype=dtype), y.to(device)


def check_scenario(z, y, scenario):
    frac = (z.argmax(-1) == y).float().mean().item()
    if scenario == "none":
        assert frac == 0.0
    if scenario == "all":
        assert frac == 1.0
    if scenario == "ties":
        assert (z == z.max(-1, keepdim=True).values).sum(-1).gt(1).any(), "the case must hold ties"


# ---------------------------------------------------------------------------------------------
# Running a backend: value, parts and the gradient of a random weighting of all of them


def run(backend, z, y, seed=1, **kw):
    """Loss, parts and the gradient of ``Σ w·loss + w_ce·ce + w_kd·kd`` (so the ce and kd
    outputs' own gradients are checked too). ``backend="reference"`` is the eager reference
    (fp64 when ``z`` is fp64)."""
    z = z.detach().requires_grad_()
    if backend == "reference":
        loss, parts = tks_loss_reference(z, y, return_parts=True, **kw)
    else:
        block_c = kw.pop("block_c", None)
        if block_c is not None:  # the Triton kernels with a small class block
            from tks_kernels.tks_loss.config import reduce_outputs
            from tks_kernels.tks_loss.triton import TKSLossTritonFunction

            cfg, yy = parse_tks_loss_args(z, y, kw["lam"], kw.get("temperature", 3.0), kw.get("teacher", "sum"),
                                          kw.get("detach_teacher", False), kw.get("reduction", "mean"), True)
            loss, parts = reduce_outputs(*TKSLossTritonFunction.apply(z, yy, cfg, block_c), z.shape[0], cfg, True)
        else:
            loss, parts = tks_loss(z, y, return_parts=True, backend=backend, **kw)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(loss.shape, generator=g).to(z.device, torch.float64)
    w_ce = torch.randn(parts.ce.shape, generator=g).to(z.device, torch.float64)
    w_kd = torch.randn(parts.kd.shape, generator=g).to(z.device, torch.float64)
    total = (loss.double() * w).sum() + (parts.ce.double() * w_ce).sum() + (parts.kd.double() * w_kd).sum()
    (grad,) = torch.autograd.grad(total, z)
    return loss.detach(), parts, grad


def compare(backend, z, y, tol=TOL, block_c=None, **kw):
    """``backend`` against the fp64 reference (values and gradient), and the fp32 reference too.
    ``block_c``: the Triton kernels with that class block."""
    loss64, parts64, grad64 = run("reference", z.double(), y, **kw)
    loss32, parts32, grad32 = run("reference", z, y, **kw)
    loss, parts, grad = run(backend, z, y, **kw, **({} if block_c is None else {"block_c": block_c}))
    assert loss.dtype == torch.float32 and loss.shape == loss64.shape
    assert grad.dtype == z.dtype and grad.shape == z.shape
    assert_rel_close(loss, loss64, tol, "loss")
    assert_rel_close(parts.ce, parts64.ce, tol, "ce")
    assert_rel_close(parts.kd, parts64.kd, tol, "kd")
    assert_equal(parts.selected, parts64.selected.float(), "selected (the argmax mask)")
    assert_rel_close(grad, grad64, tol, "grad")
    # the fp32 reference itself is as accurate
    assert_rel_close(loss32, loss64, tol, "fp32 reference loss")
    assert_rel_close(grad32, grad64, tol, "fp32 reference grad")
    return parts64


# ---------------------------------------------------------------------------------------------
# The option grid: every pair of values of every two axes, in 25 cases (greedy all-pairs, cheap
# cases preferred; the interpreter costs ~3 ms per program per class block and pass).

AXES = dict(
    T=[1, 4, 10], B=[1, 7, 128], C=[2, 10, 101, 1000], lam=[0.0, 0.3, 1.0], tau=[1.0, 3.0, 5.0],
    teacher=["sum", "mean"], detach=[False, True], reduction=["mean", "sum", "none"],
    scenario=["random", "some", "none", "all", "ties"],
)
GRID = [
    (1, 1, 2, 0.0, 1.0, "sum", False, "mean", "random"),
    (4, 1, 10, 0.3, 3.0, "mean", True, "sum", "some"),
    (10, 7, 101, 1.0, 5.0, "sum", True, "none", "none"),
    (1, 128, 1000, 0.3, 5.0, "mean", False, "none", "all"),
    (4, 7, 2, 1.0, 1.0, "mean", False, "sum", "ties"),
    (10, 128, 1000, 0.0, 3.0, "sum", True, "mean", "ties"),
    (4, 1, 101, 0.0, 5.0, "mean", False, "mean", "none"),
    (1, 7, 10, 1.0, 3.0, "sum", False, "mean", "some"),
    (10, 128, 2, 0.3, 1.0, "sum", True, "sum", "all"),
    (4, 1, 1000, 1.0, 1.0, "sum", True, "none", "random"),
    (10, 7, 10, 0.0, 5.0, "mean", False, "sum", "random"),
    (1, 128, 101, 0.3, 1.0, "sum", True, "sum", "none"),
    (10, 1, 2, 0.0, 3.0, "sum", False, "none", "some"),
    (4, 7, 101, 0.3, 3.0, "sum", False, "mean", "all"),
    (1, 1, 10, 0.3, 1.0, "sum", False, "none", "ties"),
    (4, 128, 1000, 1.0, 1.0, "sum", False, "sum", "some"),
    (1, 128, 10, 0.3, 3.0, "sum", False, "mean", "random"),
    (1, 1, 2, 0.0, 5.0, "sum", False, "mean", "all"),
    (1, 7, 1000, 0.0, 3.0, "sum", False, "mean", "none"),
    (1, 1, 10, 1.0, 1.0, "sum", False, "mean", "all"),
    (1, 1, 101, 0.0, 5.0, "sum", False, "mean", "some"),
    (1, 1, 101, 0.0, 5.0, "sum", False, "mean", "ties"),
    (1, 1, 2, 0.0, 1.0, "sum", False, "mean", "none"),
    (1, 1, 10, 0.0, 1.0, "sum", False, "mean", "none"),
    (1, 1, 101, 0.0, 1.0, "sum", False, "mean", "random"),
]
GRID_IDS = [f"T{c[0]}-B{c[1]}-C{c[2]}-lam{c[3]}-tau{c[4]:g}-{c[5]}-det{int(c[6])}-{c[7]}-{c[8]}" for c in GRID]


def test_grid_covers_every_pair():
    values = list(AXES.values())
    for i, j in itertools.combinations(range(len(values)), 2):
        seen = {(case[i], case[j]) for case in GRID}
        missing = set(itertools.product(values[i], values[j])) - seen
        assert not missing, f"{list(AXES)[i]} x {list(AXES)[j]}: {sorted(missing, key=str)[:5]}"


def grid_kwargs(case):
    T, B, C, lam, tau, teacher, detach, reduction, scenario = case
    return dict(lam=lam, temperature=tau, teacher=teacher, detach_teacher=detach, reduction=reduction)


@pytest.mark.parametrize("case", GRID, ids=GRID_IDS)
def test_triton_matches_reference(device, case):
    T, B, C, *_, scenario = case
    z, y = make_logits(T, B, C, scenario, seed=GRID.index(case), device=device)
    check_scenario(z, y, scenario)
    compare("triton", z, y, **grid_kwargs(case))


@pytest.mark.parametrize("case", GRID, ids=GRID_IDS)
def test_cpp_matches_reference(case):
    cpp_ready()
    T, B, C, *_, scenario = case
    z, y = make_logits(T, B, C, scenario, seed=GRID.index(case))
    check_scenario(z, y, scenario)
    compare("cpp", z, y, **grid_kwargs(case))


@pytest.mark.parametrize("scenario", ["some", "ties"])
def test_cpp_every_option(scenario):
    """The C++ kernels are cheap: every combination of the scalar options on one shape (no and
    every step selected: in the grid)."""
    cpp_ready()
    z, y = make_logits(5, 9, 37, scenario, seed=3)
    for lam, tau, teacher, detach, reduction in itertools.product(
        AXES["lam"], AXES["tau"], AXES["teacher"], AXES["detach"], AXES["reduction"]
    ):
        compare("cpp", z, y, lam=lam, temperature=tau, teacher=teacher, detach_teacher=detach, reduction=reduction)


# Several class blocks on small C: the online max / argmax / softmax statistics across blocks.
MULTI_BLOCK = [
    (3, 5, 101, 16, "some", "sum", False),
    (10, 4, 101, 32, "random", "mean", False),
    (4, 3, 40, 16, "ties", "sum", False),
    (7, 3, 50, 16, "all", "mean", True),
    (2, 3, 33, 16, "none", "sum", False),  # last block holds one class
]


@pytest.mark.parametrize("T,B,C,block_c,scenario,teacher,detach", MULTI_BLOCK,
                         ids=[f"T{c[0]}-C{c[2]}-block{c[3]}-{c[4]}-{c[5]}-det{int(c[6])}" for c in MULTI_BLOCK])
def test_triton_multi_block(device, T, B, C, block_c, scenario, teacher, detach):
    z, y = make_logits(T, B, C, scenario, seed=C, device=device)
    for reduction in ("mean", "none"):
        compare("triton", z, y, block_c=block_c, lam=0.4, temperature=2.0, teacher=teacher,
                detach_teacher=detach, reduction=reduction)


# ---------------------------------------------------------------------------------------------
# Ties, the mask, and the teacher's gradient


def tie_case(device, C=40):
    """Four samples, one step each, tied maxima at classes 5 and 30 (different blocks of 16):
    label 5 (first maximum: selected), 30 (not), 7 (not), and a row that is all equal with
    label 0 (selected) -- as torch.argmax decides."""
    z = torch.zeros(1, 4, C)
    z[0, :3, 5] = 2.0
    z[0, :3, 30] = 2.0
    y = torch.tensor([5, 30, 7, 0])
    return z.to(device), y.to(device), torch.tensor([1.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("backend", ["triton", "triton-multi-block", "cpp", "torch"])
def test_ties_take_the_first_maximum(device, backend):
    if backend == "cpp":
        cpp_ready()
        device = "cpu"
    z, y, expected = tie_case(device)
    assert_equal((z.argmax(-1) == y).float()[0].cpu(), expected, "torch.argmax agrees with the case")
    kw = dict(lam=0.5, reduction="none")
    if backend == "triton-multi-block":
        kw["block_c"] = 16
        backend = "triton"
    loss, parts, grad = run(backend, z, y, **kw)
    assert_equal(parts.selected.cpu(), expected, "selected per sample")
    compare(backend, z, y, **kw)


def test_teacher_gradient_is_exercised(device):
    """Detaching the teacher changes the gradient (and not the value) when steps are selected."""
    z, y = make_logits(4, 6, 10, "some", seed=5, device=device)
    loss_a, _, grad_a = run("triton", z, y, lam=0.7)
    loss_b, _, grad_b = run("triton", z, y, lam=0.7, detach_teacher=True)
    assert_rel_close(loss_a, loss_b, 1e-6, "detach does not change the value")
    assert rel_err(grad_a, grad_b) > 1e-3


def test_mask_is_not_differentiated(device):
    """kd alone through a "mean" teacher of the selected steps: the count divides the teacher
    but gets no gradient, in the kernels as in the reference."""
    z, y = make_logits(3, 4, 6, "some", seed=11, device=device)
    compare("triton", z, y, lam=1.0, teacher="mean", temperature=1.0)


@pytest.mark.parametrize("scale", [15.0, 50.0])
@pytest.mark.parametrize("scenario", ["all", "some"])
@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_large_logits_as_accurate_as_the_reference(device, backend, scenario, scale):
    """|logits| up to ~200: confident steps make ce and kd tiny (down to 1e-12 and 0 in fp32),
    beyond any fp32 relative tolerance. The fused kernels must be no less accurate than the fp32
    reference there (both against fp64); the gradient through a confident, correct teacher is
    formed from non-negative terms, so it does not cancel the logits' magnitude."""
    if backend == "cpp":
        cpp_ready()
        device = "cpu"
    z, y = make_logits(4, 8, 100, scenario, seed=2, scale=scale, device=device)
    kw = dict(lam=0.5, temperature=3.0, reduction="none")
    loss64, parts64, grad64 = run("reference", z.double(), y, **kw)
    loss32, parts32, grad32 = run("reference", z, y, **kw)
    loss, parts, grad = run(backend, z, y, **kw)
    for what, a, a32, b in [("loss", loss, loss32, loss64), ("ce", parts.ce, parts32.ce, parts64.ce),
                            ("kd", parts.kd, parts32.kd, parts64.kd), ("grad", grad, grad32, grad64)]:
        err, err32 = rel_err(a, b), rel_err(a32, b)
        assert err <= 2 * err32 + TOL, f"{what}: error {err:.2e}, fp32 reference {err32:.2e}"


@pytest.mark.parametrize("layout", ["batch_first", "class_strided"])
def test_strided_logits(device, layout):
    """[B, T, C] outputs transposed (the authors' stacking), and a class dim that is not contiguous."""
    z, y = make_logits(4, 6, 33, "some", seed=4, device=device)
    if layout == "batch_first":
        z = z.transpose(0, 1).contiguous().transpose(0, 1)
    else:
        z = z.transpose(1, 2).contiguous().transpose(1, 2)
    backends = ["triton"] + (["cpp"] if device == "cpu" else [])
    for backend in backends:
        if backend == "cpp":
            cpp_ready()
        compare(backend, z, y, lam=0.3, teacher="mean")


# ---------------------------------------------------------------------------------------------
# Low precision: logits read as they are, arithmetic in fp32, the gradient rounded once


LOW_PRECISION = [(4, 7, 101, "some"), (10, 3, 1000, "ties"), (1, 5, 10, "all")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T,B,C,scenario", LOW_PRECISION, ids=[f"T{c[0]}-B{c[1]}-C{c[2]}-{c[3]}" for c in LOW_PRECISION])
@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_low_precision(device, backend, dtype, T, B, C, scenario):
    if backend == "cpp":
        cpp_ready()
        device = "cpu"
    z, y = make_logits(T, B, C, scenario, seed=7, dtype=dtype, device=device)
    kw = dict(lam=0.3, temperature=3.0, teacher="sum", reduction="none")
    loss64, parts64, grad64 = run("reference", z.double(), y, **kw)
    loss, parts, grad = run(backend, z, y, **kw)
    _, _, grad_ref_lp = run("reference", z, y, **kw)  # the reference, gradient rounded to dtype
    assert grad.dtype == dtype
    # the values are computed in fp32 from the same (exactly upcast) logits
    assert_rel_close(loss, loss64, TOL, "loss")
    assert_equal(parts.selected, parts64.selected.float(), "selected")
    # the gradient is rounded to dtype once: half an ulp, and no worse than the reference's
    err, err_ref = rel_err(grad, grad64), rel_err(grad_ref_lp, grad64)
    assert err <= torch.finfo(dtype).eps / 2 * 1.01 + TOL, err
    assert err <= 2 * err_ref + TOL, (err, err_ref)


# ---------------------------------------------------------------------------------------------
# The reference against an independent implementation of the authors' formulation


def authors_formulation(logits, target, lam, temperature, teacher="sum", detach_teacher=False):
    """The TKS loss as the authors' training code phrases it (Brain-Cog-Lab/TKS): per-step
    outputs in a list, the mask from ``max(dim)`` indices, the teacher from the masked sum, CE of
    the averaged output, and per step a soft CE ``τ²·mean_b(−Σ_c softmax(teacher/τ)·log_softmax(z_t))``
    averaged over steps, mixed as ``(1 − lam)·ce + lam·kd``. Written here from the formulation,
    loop by loop, to check the package's reference."""
    outputs = [logits[t] for t in range(logits.shape[0])]
    steps = len(outputs)
    stacked = torch.stack(outputs, dim=1)  # [B, T, C]
    selected = (stacked.max(dim=2).indices == target.unsqueeze(1)).to(stacked.dtype)
    soft = (stacked * selected.unsqueeze(2)).sum(dim=1)
    if teacher == "mean":
        soft = soft / torch.clamp(selected.sum(dim=1, keepdim=True), min=1.0)
    if detach_teacher:
        soft = soft.detach()
    ce = F.cross_entropy(sum(outputs) / steps, target)
    probs = F.softmax(soft / temperature, dim=1)
    kd = 0.0
    for out in outputs:
        kd = kd + temperature ** 2 * (-probs * F.log_softmax(out, dim=1)).mean(0).sum()
    kd = kd / steps
    return (1.0 - lam) * ce + lam * kd


AUTHOR_CASES = [
    (4, 16, 10, 0.7, 3.0, "sum", False, "some"),
    (10, 8, 101, 0.3, 5.0, "sum", False, "random"),
    (6, 5, 7, 1.0, 1.0, "mean", False, "ties"),
    (3, 4, 5, 0.5, 2.0, "sum", True, "all"),
    (2, 6, 4, 0.5, 4.0, "mean", True, "none"),
]


@pytest.mark.parametrize("T,B,C,lam,tau,teacher,detach,scenario", AUTHOR_CASES,
                         ids=[f"T{c[0]}-C{c[2]}-{c[5]}-det{int(c[6])}-{c[7]}" for c in AUTHOR_CASES])
def test_reference_matches_authors_formulation(T, B, C, lam, tau, teacher, detach, scenario):
    z, y = make_logits(T, B, C, scenario, seed=B)
    z = z.double().requires_grad_()
    kw = dict(lam=lam, temperature=tau, teacher=teacher, detach_teacher=detach)
    ours = tks_loss_reference(z, y, **kw)
    theirs = authors_formulation(z, y, lam, tau, teacher, detach)
    assert_rel_close(ours, theirs, 1e-12, "mean loss")
    g_ours, = torch.autograd.grad(ours, z)
    g_theirs, = torch.autograd.grad(theirs, z)
    assert_rel_close(g_ours, g_theirs, 1e-12, "grad")
    # per sample ("none") is the loss of each sample alone; "sum" is their sum
    per_sample = tks_loss_reference(z, y, reduction="none", **kw)
    alone = torch.stack([authors_formulation(z[:, b:b + 1], y[b:b + 1], lam, tau, teacher, detach) for b in range(B)])
    assert_rel_close(per_sample, alone, 1e-12, "per-sample loss")
    assert_rel_close(tks_loss_reference(z, y, reduction="sum", **kw), alone.sum(), 1e-12, "summed loss")


def fused_and_torch(backend, device, T, B, C, seed, output):
    """``output(logits, target, backend)`` -> (value, gradient), for ``backend`` and for "torch"
    on the same logits (the cpp backend on the CPU)."""
    if backend == "cpp":
        cpp_ready()
        device = "cpu"
    z, y = make_logits(T, B, C, "some", seed=seed, device=device)
    results = []
    for b in (backend, "torch"):
        zz = z.clone().requires_grad_()
        value = output(zz, y, b)
        (grad,) = torch.autograd.grad((value * torch.linspace(0.5, 1.5, value.numel()).view(value.shape)
                                       .to(value.device)).sum(), zz)
        results.append((value.detach(), grad))
    return results


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_loss_alone_every_reduction(device, backend, reduction):
    """Without return_parts (the common call): the Triton Function reduces inside, the others after."""
    (loss, grad), (loss_ref, grad_ref) = fused_and_torch(
        backend, device, 3, 5, 12, 22, lambda z, y, b: tks_loss(z, y, lam=0.6, reduction=reduction, backend=b))
    assert loss.shape == loss_ref.shape == (() if reduction != "none" else (5,))
    assert_rel_close(loss, loss_ref, TOL, "loss")
    assert_rel_close(grad, grad_ref, TOL, "grad")


@pytest.mark.parametrize("backend", ["triton", "cpp"])
@pytest.mark.parametrize("part", ["ce", "kd"])
def test_gradient_of_one_part_alone(device, backend, part):
    """Only ce (or kd) reaches the loss: the other outputs get no gradient (None in the backward,
    never materialised zeros) and the result is the reference's."""
    def output(z, y, b):
        _, parts = tks_loss(z, y, lam=0.4, reduction="none", return_parts=True, backend=b)
        return getattr(parts, part)

    (_, grad), (_, grad_ref) = fused_and_torch(backend, device, 4, 6, 10, 21, output)
    assert_rel_close(grad, grad_ref, TOL, f"gradient of {part} alone")


def test_parts_mix_into_the_loss(device):
    z, y = make_logits(4, 6, 10, "some", seed=9, device=device)
    for reduction in ("mean", "sum", "none"):
        loss, parts = tks_loss(z, y, lam=0.3, reduction=reduction, return_parts=True)
        assert_rel_close(loss, 0.7 * parts.ce + 0.3 * parts.kd, 1e-6, f"loss = mix of parts ({reduction})")
    loss, parts = tks_loss(z, y, lam=0.3, return_parts=True)
    assert parts.selected.item() == (z.argmax(-1) == y).float().mean().item()
    assert loss.shape == () and tks_loss(z, y, lam=0.3, reduction="none").shape == (6,)


def test_no_correct_step_gives_a_uniform_teacher():
    """No step predicts the label: the teacher is the zero vector, p uniform, for both modes."""
    z, y = make_logits(3, 2, 5, "none", seed=1)
    for teacher in ("sum", "mean"):
        _, parts = tks_loss_reference(z.double(), y, lam=1.0, temperature=2.0, teacher=teacher, return_parts=True,
                                      reduction="none")
        uniform = -(torch.log_softmax(z.double(), -1).mean(-1)).sum(0) * (4.0 / 3)
        assert_rel_close(parts.kd, uniform, 1e-12, f"kd with a uniform teacher ({teacher})")


# ---------------------------------------------------------------------------------------------
# Backends, compile, double backward


def test_auto_backend_on_cpu_is_cpp(monkeypatch):
    cpp_ready()
    z, y = make_logits(2, 3, 4, "some")
    called = []
    cpp_mod = importlib.import_module("tks_kernels.tks_loss.cpp")

    original = cpp_mod.tks_loss_cpp_per_sample
    monkeypatch.setattr(cpp_mod, "tks_loss_cpp_per_sample", lambda *a: called.append(1) or original(*a))
    tks_loss(z, y, lam=0.5)
    assert called == [1]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device: auto -> triton and cpp refusing CUDA tensors")
def test_auto_backend_on_cuda_is_triton(monkeypatch):
    z, y = make_logits(2, 3, 4, "some", device="cuda")
    triton_mod = importlib.import_module("tks_kernels.tks_loss.triton")

    called = []
    original = triton_mod.tks_loss_forward_triton
    monkeypatch.setattr(triton_mod, "tks_loss_forward_triton", lambda *a: called.append(1) or original(*a))
    tks_loss(z, y, lam=0.5)
    assert called == [1]
    with pytest.raises(RuntimeError, match="CPU tensors"):
        tks_loss(z, y, lam=0.5, backend="cpp")


def test_cuda_backend_name_points_to_triton():
    z, y = make_logits(2, 3, 4, "some")
    with pytest.raises(RuntimeError, match="no CUDA kernel for tks_loss, use backend='triton'"):
        tks_loss(z, y, lam=0.5, backend="cuda")


def test_cpp_op_registration():
    """Schema, fake (meta) implementation, autograd registration: torch.library.opcheck."""
    cpp_ready()
    z, y = make_logits(4, 5, 7, "some")
    z.requires_grad_()
    torch.library.opcheck(torch.ops.tks.tks_loss_forward.default, (z, y, 0.3, 3.0, False, False))
    saved = [s.detach() for s in torch.ops.tks.tks_loss_forward(z, y, 0.3, 3.0, True, False)[3:]]
    torch.library.opcheck(torch.ops.tks.tks_loss_backward.default,
                          (z.detach(), y, *saved, torch.ones(5), None, torch.randn(5), 0.3, 3.0, False))


def test_cpp_under_torch_compile():
    cpp_ready()
    z, y = make_logits(4, 5, 7, "some")
    compiled = torch.compile(lambda z, y: tks_loss(z, y, lam=0.3, backend="cpp"), backend="aot_eager", fullgraph=True)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    loss = compiled(z1, y)
    loss.backward()
    ref = tks_loss(z2, y, lam=0.3, backend="torch")
    ref.backward()
    assert_rel_close(loss.detach(), ref.detach(), TOL, "compiled loss")
    assert_rel_close(z1.grad, z2.grad, TOL, "compiled grad")


TRITON_COMPILE_CASES = [dict(reduction="mean"), dict(reduction="none", teacher="mean"),
                        dict(reduction="sum", return_parts=True, detach_teacher=True)]


@pytest.mark.parametrize("kw", TRITON_COMPILE_CASES, ids=["mean", "none-teacher_mean", "sum-parts-detached"])
def test_triton_under_torch_compile_fullgraph(device, kw):
    """torch.compile(fullgraph=True) keeps the Triton loss whole through its custom ops
    (tks_triton::tks_loss_forward / backward): the same values and gradients as the eager call."""
    z, y = make_logits(4, 6, 10, "some", seed=31, device=device)
    w = torch.linspace(0.5, 1.5, 6, device=device)

    def total(logits):
        out = tks_loss(logits, y, lam=0.5, backend="triton", **kw)
        if isinstance(out, tuple):
            loss, parts = out
            return loss.sum() + 0.5 * parts.ce.sum() + 0.25 * parts.kd.sum()
        return (out * w).sum() if out.dim() else out

    compiled = torch.compile(total, backend="aot_eager", fullgraph=True)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    value = compiled(z1)
    value.backward()
    ref = total(z2)
    ref.backward()
    assert_rel_close(value.detach(), ref.detach(), 1e-6, "compiled value")
    assert_rel_close(z1.grad, z2.grad, 1e-6, "compiled grad")


@pytest.mark.parametrize("reduction,return_parts", [("mean", False), ("none", True), ("sum", True)])
def test_triton_op_registration(device, reduction, return_parts):
    """Schema, fake implementation, autograd registration of the ops torch.compile uses."""
    z, y = make_logits(4, 5, 7, "some", device=device)
    z.requires_grad_()
    torch.library.opcheck(torch.ops.tks_triton.tks_loss_forward.default,
                          (z, y, 0.3, 3.0, "sum", False, reduction, return_parts, 0))
    saved = torch.ops.tks_triton.tks_loss_forward(z.detach(), y, 0.3, 3.0, "mean", False, "none", False, 0)[3]
    g = torch.randn(5, device=device)
    torch.library.opcheck(torch.ops.tks_triton.tks_loss_backward.default,
                          (z.detach(), y, saved, torch.ones(5, device=device), None, g, 0.3, 3.0, False, 1.0, 0))


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_double_backward_raises_in_the_first_backward(device, backend):
    """create_graph=True through a fused backend raises in that backward, naming the op, the
    backend and the fix, before any gradient is returned: a gradient penalty added to another
    term (whose second derivative came out silently 0 with triton) cannot run on a wrong value.
    A plain backward is unaffected."""
    if backend == "cpp":
        cpp_ready()
        device = "cpu"
    z, y = make_logits(2, 3, 4, "some", device=device)
    w = torch.ones_like(z, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"tks_loss\\(backend='{backend}'\\) does not support double backward"
                                           ".*use backend='torch'"):
        torch.autograd.grad(tks_loss(z * w, y, lam=0.5, backend=backend), w, create_graph=True)
    (grad,) = torch.autograd.grad(tks_loss(z * w, y, lam=0.5, backend=backend), w)
    (grad_ref,) = torch.autograd.grad(tks_loss(z * w, y, lam=0.5, backend="torch"), w)
    assert_rel_close(grad, grad_ref, TOL, "first-order gradient")


def hvp_matches_finite_differences(fn, x: torch.Tensor, what: str, seed: int = 0) -> None:
    """The Hessian-vector product of scalar ``fn`` at fp64 ``x`` by double backward equals central
    finite differences of its gradient (a cheap second-order check in one random direction)."""
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(fn(x), x, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), x)

    def grad_at(point):
        point = point.detach().requires_grad_()
        return torch.autograd.grad(fn(point), point)[0]

    eps = 1e-5
    fd = (grad_at(x + eps * v) - grad_at(x - eps * v)) / (2 * eps)
    assert hv.abs().max() > 1e-3, f"{what}: the second derivative is (almost) zero"
    assert_rel_close(hv, fd, 1e-6, f"{what}: Hessian-vector product")


def test_reference_has_the_double_backward_the_error_points_to():
    """backend="torch" (the fix the error names; its eager reference, here in fp64) differentiates
    twice, correctly."""
    z, y = make_logits(2, 3, 4, "some", seed=3)
    for teacher in ("sum", "mean"):
        hvp_matches_finite_differences(
            lambda logits: tks_loss_reference(logits, y, lam=0.5, teacher=teacher), z.double(), teacher)


_COMPILE_FIRST = """
import sys, torch, tks_kernels
assert "tks_kernels._ext" not in sys.modules and "tks_kernels._C" not in sys.modules, "loaded before the call"
z = torch.randn(4, 5, 7, requires_grad=True)
y = torch.randint(0, 7, (5,))
f = torch.compile(lambda z, y: tks_kernels.tks_loss(z, y, lam=0.3, backend="cpp"), backend="aot_eager", fullgraph=True)
loss = f(z, y)
loss.backward()
z2 = z.detach().clone().requires_grad_()
ref = tks_kernels.tks_loss(z2, y, lam=0.3, backend="torch")
ref.backward()
assert torch.allclose(loss, ref, rtol=1e-5) and torch.allclose(z.grad, z2.grad, rtol=1e-5, atol=1e-7)
print("ok")
"""


def test_cpp_compiled_as_the_first_call_of_the_process():
    """torch.compile(fullgraph=True) of tks_loss(backend='cpp') as the very first call of a fresh
    process: the extension loads and the ops' Python parts register outside the traced code
    (they used to register while dynamo traced: "Attempted to call function marked as skipped")."""
    cpp_ready()
    run_fresh_python(_COMPILE_FIRST)


def run_fresh_python(code: str) -> None:
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.path.join(repo, "python"),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# Masked classes (-inf logits)

NEG_INF = float("-inf")
MASK_BACKENDS = ["torch", "triton", "triton-multi-block", "cpp"]


def backend_and_device(backend, device):
    """(backend, device, block_c) for a MASK_BACKENDS entry: cpp runs on the CPU, the multi-block
    Triton case with 16-class blocks."""
    if backend == "cpp":
        cpp_ready()
        return "cpp", "cpu", None
    if backend == "triton-multi-block":
        return "triton", device, 16
    return backend, device, None


def class_mask(B, C, y, seed, first_block=False):
    """[B, C] bool: about a third of each sample's classes masked, never its label; with
    ``first_block`` the first 16 classes too (a whole Triton class block of -inf)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, C, generator=g) < 0.35
    if first_block:
        mask[:, :16] = True
    mask[torch.arange(B), y.cpu()] = False
    return mask


def weights(B, seed=5):
    return torch.randn(3, B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def per_sample_run(backend, z, y, w, block_c=None, **kw):
    """(loss, ce, kd) per sample and the gradient of Σ_b w0 loss + w1 ce + w2 kd."""
    z = z.detach().requires_grad_()
    if backend == "reference":
        loss, parts = tks_loss_reference(z, y, return_parts=True, reduction="none", **kw)
    elif block_c is not None:
        from tks_kernels.tks_loss.config import reduce_outputs
        from tks_kernels.tks_loss.triton import TKSLossTritonFunction

        cfg, yy = parse_tks_loss_args(z, y, kw["lam"], kw.get("temperature", 3.0), kw.get("teacher", "sum"),
                                      kw.get("detach_teacher", False), "none", True)
        loss, parts = reduce_outputs(*TKSLossTritonFunction.apply(z, yy, cfg, block_c), z.shape[0], cfg, True)
    else:
        loss, parts = tks_loss(z, y, return_parts=True, reduction="none", backend=backend, **kw)
    w = w.to(z.device)
    total = (loss.double() * w[0]).sum() + (parts.ce.double() * w[1]).sum() + (parts.kd.double() * w[2]).sum()
    (grad,) = torch.autograd.grad(total, z)
    return loss.detach(), parts.ce.detach(), parts.kd.detach(), grad


def reduced_class_oracle(z, y, mask, w, **kw):
    """What a loss must give when sample b's masked classes (the same at every step) are -inf:
    the fp64 reference run on sample b alone with those classes removed, and gradient 0 on them."""
    T, B, C = z.shape
    outs, grad = [], torch.zeros(T, B, C, dtype=torch.float64)
    for b in range(B):
        keep = (~mask[b]).nonzero()[:, 0]
        yb = (keep == y[b].item()).nonzero()[:, 0]
        loss, ce, kd, gb = per_sample_run("reference", z[:, b:b + 1, keep].double().cpu(), yb, w[:, b:b + 1], **kw)
        outs.append((loss, ce, kd))
        grad[:, b, keep] = gb[:, 0]
    loss, ce, kd = (torch.cat([o[i] for o in outs]) for i in range(3))
    return loss, ce, kd, grad


MASKED_CASES = [  # T, B, C, lam, teacher, detach, scenario
    (4, 6, 23, 0.0, "sum", False, "some"),
    (3, 5, 37, 0.5, "mean", False, "none"),  # no selected step: uniform over the unmasked classes
    (1, 4, 40, 1.0, "sum", True, "all"),
    (5, 3, 33, 0.7, "mean", False, "ties"),
]


@pytest.mark.parametrize("case", MASKED_CASES, ids=[f"T{c[0]}-C{c[2]}-lam{c[3]}-{c[4]}-det{int(c[5])}-{c[6]}"
                                                    for c in MASKED_CASES])
@pytest.mark.parametrize("backend", MASK_BACKENDS)
def test_masked_classes_are_removed_classes(device, backend, case):
    """-inf logits (the same classes at every step) give exactly the loss of the problem without
    those classes, per sample, at lam = 0 and lam > 0 (it was NaN even at lam = 0), and zero
    gradient on them; the first 16 classes masked: a Triton class block that is all -inf."""
    T, B, C, lam, teacher, detach, scenario = case
    backend, device, block_c = backend_and_device(backend, device)
    z, y = make_logits(T, B, C, scenario, seed=C)
    mask = class_mask(B, C, y, seed=T, first_block=block_c is not None)
    kw = dict(lam=lam, temperature=2.0, teacher=teacher, detach_teacher=detach)
    w = weights(B)
    expected = reduced_class_oracle(z, y, mask, w, **kw)
    zm = z.masked_fill(mask[None], NEG_INF).to(device)
    loss, ce, kd, grad = per_sample_run(backend, zm, y.to(device), w, block_c=block_c, **kw)
    for what, got, want in zip(("loss", "ce", "kd", "grad"), (loss, ce, kd, grad), expected):
        assert_rel_close(got.cpu(), want, TOL, what)
    assert_equal(grad.cpu()[mask[None].expand(T, B, C)], torch.zeros(int(mask.sum()) * T), "masked gradient")


@pytest.mark.parametrize("backend", MASK_BACKENDS)
def test_masked_classes_varying_over_steps(device, backend):
    """A class masked at some steps only: its mean logit is -inf, so it gets teacher probability 0
    (kd stays finite) and every -inf entry gets gradient 0; the fused kernels match the reference,
    which matches kd written out by hand for one case."""
    backend, device, block_c = backend_and_device(backend, device)
    T, B, C = 4, 5, 40
    z, y = make_logits(T, B, C, "some", seed=8)
    g = torch.Generator().manual_seed(9)
    mask = torch.rand(T, B, C, generator=g) < 0.2
    mask[:, :, :16] |= block_c is not None
    mask[:, torch.arange(B), y] = False
    zm = z.masked_fill(mask, NEG_INF)
    w = weights(B)
    for lam, teacher, detach in ((0.0, "sum", False), (0.6, "mean", False), (1.0, "sum", True)):
        kw = dict(lam=lam, temperature=3.0, teacher=teacher, detach_teacher=detach)
        expected = per_sample_run("reference", zm.double(), y, w, **kw)
        got = per_sample_run(backend, zm.to(device), y.to(device), w, block_c=block_c, **kw)
        for what, a, b in zip(("loss", "ce", "kd", "grad"), got, expected):
            assert_rel_close(a.cpu(), b, TOL, f"{what} (lam={lam}, {teacher})")
        assert_equal(got[3].cpu()[mask], torch.zeros(int(mask.sum()), dtype=z.dtype), "gradient of -inf entries")
    # the rule by hand for sample 0: p = softmax(teacher / τ) over the classes finite at every step
    zd = zm.double()
    sel = zd[:, 0].argmax(-1) == y[0]
    unmasked = ~mask[:, 0].any(0)
    p = torch.zeros(C, dtype=torch.float64)
    p[unmasked] = torch.softmax(zd[sel, 0][:, unmasked].sum(0) / 3.0, -1)
    logq = torch.log_softmax(zd[:, 0], -1)
    kd0 = -(p * torch.where(p > 0, logq, 0.0)).sum(-1).sum() * 9.0 / T
    assert sel.any() and mask[:, 0].any(0).any() and not mask[:, 0].all(0).all()
    _, parts = tks_loss_reference(zd, y, lam=0.5, temperature=3.0, return_parts=True, reduction="none")
    assert_rel_close(parts.kd[0], kd0, 1e-12, "kd of sample 0 by hand")


@pytest.mark.parametrize("backend", ["torch", "triton", "cpp"])
def test_masked_lam0_is_mean_ce_and_masked_label_is_infinite_ce(device, backend):
    """lam = 0 is mean_ce (finite) with masked classes; the label's class masked at one step gives
    ce = +inf (as F.cross_entropy), a loss of +inf for lam < 1 and exactly kd at lam = 1 (0 · inf
    is left out), with F.cross_entropy's finite gradient."""
    backend, device, _ = backend_and_device(backend, device)
    T, B, C = 3, 4, 12
    z, y = make_logits(T, B, C, "some", seed=13)
    zm = z.masked_fill(class_mask(B, C, y, seed=1)[None], NEG_INF)
    zm, y = zm.to(device), y.to(device)
    loss0 = tks_loss(zm, y, lam=0.0, reduction="none", backend=backend)
    mce = mean_ce(zm, y, reduction="none")
    assert torch.isfinite(mce).all()
    if backend == "torch":
        assert_equal(loss0, mce, "lam=0 is mean_ce")
    assert_rel_close(loss0, mce, TOL, "lam=0 is mean_ce")
    zl = zm.clone()
    zl[1, 0, y[0]] = NEG_INF  # sample 0's label masked at step 1
    w = weights(B)
    for lam in (0.0, 0.4, 1.0):
        loss, ce, kd, grad = per_sample_run(backend, zl, y, w, lam=lam)
        _, _, _, grad_ref = per_sample_run("reference", zl.double().cpu(), y.cpu(), w, lam=lam)
        assert ce[0].item() == float("inf") and torch.isfinite(kd).all() and torch.isfinite(ce[1:]).all()
        assert loss[0].item() == (kd[0].item() if lam == 1.0 else float("inf")), (lam, loss[0])
        assert torch.isfinite(grad).all()
        assert_rel_close(grad.cpu(), grad_ref, TOL, f"gradient with a masked label (lam={lam})")


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # the interpreter's numpy on NaN input
@pytest.mark.parametrize("backend", ["torch", "triton", "cpp"])
def test_undefined_samples_are_nan_and_alone(device, backend):
    """What the docstring says comes out of a sample without a defined loss (a step whose logits
    are all -inf, a +inf logit, a NaN logit): NaN loss, parts and gradient for that sample; the
    other samples are exact."""
    backend, device, _ = backend_and_device(backend, device)
    z, y = make_logits(3, 4, 6, "some", seed=21)
    z[1, 1] = NEG_INF
    z[0, 2, 3] = float("inf")
    z[2, 3, 1] = float("nan")
    for lam in (0.0, 0.5, 1.0):
        kw = dict(lam=lam, temperature=2.0, teacher="mean")
        w = weights(4)
        got = per_sample_run(backend, z.to(device), y.to(device), w, **kw)
        ok = per_sample_run("reference", z[:, :1].double(), y[:1], w[:, :1], **kw)
        for what, a, b in zip(("loss", "ce", "kd", "grad"), got, ok):
            assert_rel_close(a[..., :1, :] if what == "grad" else a[:1], b.to(device), TOL, what)
            bad = a[:, 1:] if what == "grad" else a[1:]
            assert bad.isnan().reshape(bad.shape[0], -1).any(0).all() if what == "grad" else bad.isnan().all(), \
                (what, lam, bad)


def test_mean_ce_label_smoothing_and_tet_with_masked_classes():
    """Label smoothing spreads its mass over the unmasked classes only, and TET's MSE leaves the
    masked entries out of its mean: both equal the loss of each sample alone without its masked
    classes (torch's label_smoothing and an MSE over every entry give +inf), zero gradient on them."""
    T, B, C = 4, 5, 12
    z, y = make_logits(T, B, C, "random", seed=4)
    z = z.double()
    mask = class_mask(B, C, y, seed=2)
    zm = z.masked_fill(mask[None], NEG_INF).requires_grad_()
    for name, loss_fn in (("label smoothing", lambda v, t: mean_ce(v, t, label_smoothing=0.1, reduction="none")),
                          ("TET", lambda v, t: tet_loss(v, t, lam=0.2, phi=0.5, reduction="none"))):
        got = loss_fn(zm, y)
        (grad,) = torch.autograd.grad(got.sum(), zm)
        want, want_grad = [], torch.zeros_like(z)
        for b in range(B):
            keep = (~mask[b]).nonzero()[:, 0]
            zb = z[:, b:b + 1, keep].clone().requires_grad_()
            lb = loss_fn(zb, (keep == y[b]).nonzero()[:, 0])
            want.append(lb.detach())
            want_grad[:, b, keep] = torch.autograd.grad(lb.sum(), zb)[0][:, 0]
        assert_rel_close(got, torch.cat(want), 1e-12, name)
        assert_rel_close(grad, want_grad, 1e-12, f"{name} gradient")
        assert_equal(grad[mask[None].expand(T, B, C)], torch.zeros(int(mask.sum()) * T, dtype=z.dtype),
                     f"{name}: masked gradient")
    # lam = 1 / smoothing = 1 with a masked label: the +inf term has weight 0 and is left out
    zl = zm.detach().clone()
    zl[0, 0, y[0]] = NEG_INF
    assert torch.isfinite(tet_loss(zl, y, lam=1.0, reduction="none")).all()
    assert torch.isfinite(mean_ce(zl, y, label_smoothing=1.0, reduction="none")).all()
    assert mean_ce(zl, y, reduction="none")[0].item() == float("inf")


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error before any kernel runs


def _bad_inputs():
    z, y = make_logits(3, 4, 5, "some")
    ok = dict(lam=0.5)
    return [
        ("target above C", (z, torch.tensor([0, 1, 5, 2])), ok, ValueError, "class index 5, outside \\[0, 5\\)"),
        ("negative target", (z, torch.tensor([0, -1, 2, 2])), ok, ValueError, "class index -1"),
        ("float target", (z, y.float()), ok, TypeError, "integer class indices"),
        ("bool target", (z, y > 0), ok, TypeError, "integer class indices"),
        ("target shape", (z, y[:3]), ok, ValueError, "target has shape \\(3,\\)"),
        ("2-D target", (z, y[None]), ok, ValueError, "must be \\[B\\]"),
        ("2-D logits", (z[0], y), ok, ValueError, "\\[T, B, C\\]"),
        ("T = 0", (z[:0], y), ok, ValueError, "T >= 1"),
        ("int logits", (z.long(), y), ok, TypeError, "logits has dtype torch.int64"),
        ("fp64 logits", (z.double(), y), ok, TypeError, "logits has dtype torch.float64"),
        ("temperature 0", (z, y), dict(lam=0.5, temperature=0.0), ValueError, "temperature must be > 0"),
        ("temperature < 0", (z, y), dict(lam=0.5, temperature=-1.0), ValueError, "temperature must be > 0"),
        ("temperature nan", (z, y), dict(lam=0.5, temperature=float("nan")), ValueError, "temperature must be finite"),
        ("lam > 1", (z, y), dict(lam=1.5), ValueError, "lam must be in \\[0, 1\\]"),
        ("lam < 0", (z, y), dict(lam=-0.1), ValueError, "lam must be in \\[0, 1\\]"),
        ("lam tensor", (z, y), dict(lam=torch.tensor(0.5)), TypeError, "lam must be a float"),
        ("teacher", (z, y), dict(lam=0.5, teacher="max"), ValueError, "teacher='max' is not supported"),
        ("reduction", (z, y), dict(lam=0.5, reduction="batchmean"), ValueError, "reduction='batchmean'"),
        ("detach flag", (z, y), dict(lam=0.5, detach_teacher=1), TypeError, "detach_teacher must be a bool"),
        ("backend", (z, y), dict(lam=0.5, backend="cudnn"), ValueError, "backend='cudnn' is not supported"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_bad_input_raises_before_any_kernel(monkeypatch, case):
    _, args, kw, error, message = case

    def no_kernel(*a, **k):
        raise AssertionError("a kernel ran on bad input")

    monkeypatch.setattr(tks_loss_pkg, "_dispatch", no_kernel)
    with pytest.raises(error, match=message):
        tks_loss(*args, **kw)
    if "backend" not in kw and "float64" not in message:  # the reference also takes fp64 (an oracle)
        with pytest.raises(error, match=message):
            tks_loss_reference(*args, **kw)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device: the label range is checked on the host, not by a device assert")
def test_bad_target_on_cuda_raises_cleanly():
    z, _ = make_logits(3, 4, 5, "some", device="cuda")
    with pytest.raises(ValueError, match="class index 7"):
        tks_loss(z, torch.tensor([0, 7, 1, 2], device="cuda"), lam=0.5)
    torch.cuda.synchronize()  # the context is still usable: no device assert fired
    tks_loss(z, torch.tensor([0, 4, 1, 2], device="cuda"), lam=0.5)


def test_label_range_on_the_host():
    from tks_kernels.tks_loss.config import label_range

    assert label_range(torch.tensor([3, 0, 9, 2])) == (0, 9)
    assert label_range(torch.tensor([[5, -1], [2, 7]]).t()[1]) == (-1, 7)  # strided
    assert label_range(torch.tensor([4])) == (4, 4)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device: CUDA graph capture")
@pytest.mark.parametrize("teacher", ["sum", "mean"])
def test_triton_fwd_bwd_in_a_cuda_graph(teacher):
    """The fused loss captures into a CUDA graph (no host sync while capturing: the label check is
    a device assert there) and replays on new logits and labels as the eager call computes them."""
    T, B, C = 4, 16, 10
    kw = dict(lam=0.6, temperature=3.0, teacher=teacher)
    z, y = make_logits(T, B, C, "some", seed=11, device="cuda")
    static_z = z.clone().requires_grad_(True)
    static_y = y.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (compiles the kernels) outside the capture
        for _ in range(2):
            tks_loss(static_z, static_y, backend="triton", **kw).backward()
            static_z.grad = None
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = tks_loss(static_z, static_y, backend="triton", **kw)
        static_loss.backward()
    for seed in (12, 13):
        z2, y2 = make_logits(T, B, C, "some", seed=seed, device="cuda")
        with torch.no_grad():
            static_z.copy_(z2)
        static_y.copy_(y2)
        graph.replay()
        ref = z2.detach().requires_grad_(True)
        ref_loss = tks_loss(ref, y2, backend="triton", **kw)
        ref_loss.backward()
        assert_equal(static_loss.detach(), ref_loss.detach(), "replayed loss")
        assert_equal(static_z.grad, ref.grad, "replayed gradient")


def test_cpp_kernel_checks_its_own_inputs():
    """The op called directly (no Python checks) still refuses a bad label."""
    cpp_ready()
    z, y = make_logits(3, 4, 5, "some")
    with pytest.raises(RuntimeError, match="outside \\[0, 5\\)"):
        torch.ops.tks.tks_loss_forward(z, torch.tensor([0, 1, 9, 2]), 0.5, 3.0, False, False)


# ---------------------------------------------------------------------------------------------
# Schedule and baselines


def test_tks_lambda():
    assert tks_lambda(0, 300, 0.7) == 0.0
    assert tks_lambda(150, 300, 0.7) == 0.35
    assert tks_lambda(300, 300, 0.7) == 0.7
    assert tks_lambda(400, 300, 0.3) == 0.3  # held at lam_max after the last epoch
    assert abs(tks_lambda(99, 100, 0.3) - 0.297) < 1e-15
    for bad, error in [((0, 0, 0.7), ValueError), ((-1, 10, 0.7), ValueError), ((1, 10, 1.5), ValueError),
                       ((1.0, 10, 0.7), TypeError)]:
        with pytest.raises(error):
            tks_lambda(*bad)


def test_mean_ce_and_label_smoothing():
    z, y = make_logits(4, 6, 10, "random", seed=2)
    z = z.double()
    assert_rel_close(mean_ce(z, y), F.cross_entropy(z.mean(0), y), 1e-12, "mean CE")
    s = 0.1
    logp = torch.log_softmax(z.mean(0), -1)
    smoothed = (1 - s) * -logp.gather(1, y[:, None])[:, 0] + s * -logp.mean(-1)
    assert_rel_close(mean_ce(z, y, label_smoothing=s, reduction="none"), smoothed, 1e-12, "label smoothing")
    assert_rel_close(mean_ce(z, y, label_smoothing=s, reduction="sum"), smoothed.sum(), 1e-12, "sum")
    assert mean_ce(z.float(), y).dtype == torch.float32
    with pytest.raises(ValueError, match="label_smoothing"):
        mean_ce(z, y, label_smoothing=1.5)


def test_tet_loss():
    z, y = make_logits(4, 6, 10, "random", seed=3)
    z = z.double()
    lam, phi = 1e-3, 1.0
    # TET: each step supervised, plus the MSE of every logit to phi over all T·B·C entries
    ce_steps = sum(F.cross_entropy(z[t], y) for t in range(4)) / 4
    expected = (1 - lam) * ce_steps + lam * F.mse_loss(z, torch.full_like(z, phi))
    assert_rel_close(tet_loss(z, y), expected, 1e-12, "TET")
    per_sample = tet_loss(z, y, lam=0.2, phi=0.5, reduction="none")
    alone = torch.stack([tet_loss(z[:, b:b + 1], y[b:b + 1], lam=0.2, phi=0.5) for b in range(6)])
    assert_rel_close(per_sample, alone, 1e-12, "TET per sample")
    assert_rel_close(tet_loss(z, y, lam=0.2, phi=0.5), alone.mean(), 1e-12, "TET mean of samples")
    with pytest.raises(ValueError, match="target holds class index 10"):
        tet_loss(z, torch.full((6,), 10))
