"""Benchmark the multi-step LIF neuron and its integer-count variant (I-LIF): forward, backward and
forward+backward, every provider side by side on one device.

Providers (each is skipped, with the library's own reason printed, when it cannot run here):
  eager      tks_kernels.lif_multistep(backend="torch"): the package's eager fp32 reference loop
  compile    torch.compile of that reference (tks_kernels.lif.reference.lif_reference_forward)
  triton     tks_kernels.lif_multistep(backend="triton")
  cuda       tks_kernels.lif_multistep(backend="cuda")
  cpp        tks_kernels.lif_multistep(backend="cpp")
  (these three with save="h": the forward writes fp32 H, the backward reads it)
  cuda-x     backend="cuda", save="x": the backward recomputes H from x (no H written or read)
  cpp-x      backend="cpp", save="x"
  sj-<impl>  spikingjelly 2.0.0 activation_based.functional.lif_multi_step (what LIFNode(step_mode='m')
             runs) with fp32 state. On CUDA each implementation (cuda, triton, torch) is forced with
             SJ_LIF_CUDA_IMPLEMENTATION, which spikingjelly reads once at import: one subprocess each.
             On CPU spikingjelly always runs its torch reference: sj-torch.

Neurons (--neuron, default both; each writes its own <name>.csv / .md / .png):
  lif   tau=2, v_threshold=0.5, v_reset=0 (hard), decay_input, surrogate piecewise quadratic with
        alpha=2 (the TKS authors'); spikingjelly's peer: functional.lif_multi_step.
  ilif  integer spike counts, spikingjelly 2.0.0's ILIFNode defaults: tau=4/3, v_threshold=1,
        max_spike_count=4, gradient window [0, 4], soft reset; its peer: functional.ilif_multi_step
        (what ILIFNode(step_mode='m') runs; on CPU its torch reference, on CUDA its Triton kernels,
        chosen with SJ_ILIF_CUDA_IMPLEMENTATION).
Input x ~ N(0, 1) of shape [T, N] (x 2 for ilif, so that several counts occur); the upstream
gradient is a fixed random [T, N] tensor for the spikes (the final v gets none, as in a network).

Usage:  python bench/bench_lif.py [--quick] [--neuron lif,ilif] [--out DIR]   (see bench/README.md)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import common as C  # noqa: E402

LIF_KWARGS = dict(tau=2.0, v_threshold=0.5, v_reset=0.0, decay_input=True, detach_reset=False,
                  surrogate="piecewise_quadratic", alpha=2.0)
ILIF_KWARGS = dict(tau=4.0 / 3.0, v_threshold=1.0, v_reset=None, decay_input=False, detach_reset=False,
                   max_spike_count=4, grad_window=None)


@dataclass(frozen=True)
class Neuron:
    """One benchmarked neuron: its lif_multistep options, spikingjelly's peer and the CPU target."""

    name: str
    title: str
    kwargs: dict
    settings: str  # for the Markdown header
    sj_env: str  # spikingjelly's variable that picks its CUDA implementation
    x_scale: float  # x ~ N(0, 1) * x_scale
    cpu_speedup_target: float  # cpp fwd+bwd vs spikingjelly at T=8, N=2^20, fp32


NEURONS = {
    "lif": Neuron("lif", "LIF", LIF_KWARGS,
                  "tau=2, v_threshold=0.5, hard reset to 0, decay_input, piecewise-quadratic surrogate alpha=2",
                  "SJ_LIF_CUDA_IMPLEMENTATION", 1.0, 6.0),
    "ilif": Neuron("ilif", "I-LIF (integer spike counts)", ILIF_KWARGS,
                   "spikingjelly's ILIFNode defaults: tau=4/3, v_threshold=1, max_spike_count=4, gradient window "
                   "[0, 4], soft reset, no decay_input", "SJ_ILIF_CUDA_IMPLEMENTATION", 2.0, 5.0),
}
PASSES = C.PASSES
OUR_FUSED = ("triton", "cuda", "cpp", "cuda-x", "cpp-x")
# save="x" providers and the save="h" provider each is compared with
RECOMPUTE = {"cuda-x": "cuda", "cpp-x": "cpp"}
SJ_IMPLS = ("cuda", "triton", "torch")
ALL_PROVIDERS = ("eager", "compile") + OUR_FUSED + tuple(f"sj-{i}" for i in SJ_IMPLS)
PEERS = ("eager", "compile", "sj-torch", "sj-cuda", "sj-triton", "sj-best")

COLUMNS = (
    ["provider", "dtype", "T", "N", "pass", "status", "median_ms", "q20_ms", "q80_ms", "bytes", "gbps",
     "pct_copy", "copy_gbps", "saved_bytes", "saved_per_neuron_step", "x_saved", "peak_fwd_mb",
     "peak_fwdbwd_mb", "spike_mismatch", "grad_rel_err", "compile_s", "held_per_neuron_step",
     "speedup_vs_save_h"]
    + [f"speedup_vs_{p.replace('-', '_')}" for p in PEERS]
)

# The count neuron moves the same bytes (x, counts in x's dtype, fp32 H, final v; grad, H, grad_x).
BYTE_FORMULAS = {
    "fwd": "T*N*b (read x) + T*N*b (write spikes) + T*N*4 (write H, fp32, saved for backward) + N*4 (write final v)",
    "bwd": "T*N*b (read grad_spikes) + T*N*4 (read H) + T*N*b (write grad_x)",
    "fwd+bwd": "fwd + bwd = T*N*(4b + 8) + 4N",
}
# save="x" (cuda-x, cpp-x): no H; the backward reads x again and writes grad_v_init
BYTE_FORMULAS_X = {
    "fwd": "T*N*b (read x) + T*N*b (write spikes) + N*4 (write final v)",
    "bwd": "T*N*b (read grad_spikes) + T*N*b (read x) + T*N*b (write grad_x) + N*4 (write grad_v_init)",
    "fwd+bwd": "fwd + bwd = T*N*5b + 8N",
}


def pass_bytes(pass_name: str, T: int, N: int, in_bytes: int, recompute: bool = False) -> int:
    """Bytes a fused kernel must move, at least (``b`` = bytes of x's dtype): one that saves fp32 H
    (every provider but the save="x" ones, so GB/s compares their speeds on one scale), or one
    that recomputes H from x (``recompute``: cuda-x, cpp-x; their GB/s is of their own bytes)."""
    if recompute:
        fwd = T * N * 2 * in_bytes + N * 4
        bwd = T * N * 3 * in_bytes + N * 4
    else:
        fwd = T * N * (2 * in_bytes + 4) + N * 4
        bwd = T * N * (2 * in_bytes + 4)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_name]


# --------------------------------------------------------------------------------------------
# sweep


def build_sweep(args, device) -> list[tuple[str, int, int]]:
    """[(dtype name, T, N)], grouped by dtype then T so one torch.compile serves every N.
    Full sweep: fp32 at every N; bf16 / fp16 at the largest N (all of them with --N)."""
    gpu = device.type == "cuda"
    Ns_low = None
    if args.smoke:
        dtypes, Ts, Ns = ["fp32"], [2], [4096]
    elif args.quick:
        dtypes, Ts, Ns = ["fp32"], [2, 8], ([1 << 20, 1 << 24] if gpu else [1 << 16, 1 << 20])
    else:
        dtypes = ["fp32", "bf16", "fp16"]
        Ts = [1, 2, 4, 8, 16, 32]
        Ns = [1 << 16, 1 << 20, 1 << 24] if gpu else [1 << 16, 1 << 20]
        Ns_low = Ns[-1:]
    dtypes = C.parse_list(args.dtypes) or dtypes
    Ts = C.parse_list(args.T, int) or Ts
    if args.N:
        Ns = Ns_low = C.parse_list(args.N, C.size_arg)
    for d in dtypes:
        if d not in C.DTYPES:
            raise SystemExit(f"--dtypes: unknown dtype {d!r}; choose from {', '.join(C.DTYPES)}")
    return [(d, T, N) for d in dtypes for T in Ts for N in (Ns if d == "fp32" or Ns_low is None else Ns_low)]


def compile_plan(args, device) -> tuple[set, set]:
    """(T values, dtype names) where torch.compile runs: compiling the unrolled loop takes
    ~20-40 s per (T, dtype) on a 2-core CPU, so the default plan is small; widen it with flags."""
    if args.smoke or args.quick:
        Ts, dtypes = [], []
    elif device.type == "cuda":
        Ts, dtypes = [8], ["fp32", "bf16"]
    else:
        Ts, dtypes = [8], ["fp32"]
    Ts = C.parse_list(args.compile_t, int) if args.compile_t is not None else Ts
    dtypes = C.parse_list(args.compile_dtypes) if args.compile_dtypes is not None else dtypes
    return set(Ts or []), set(dtypes or [])


# --------------------------------------------------------------------------------------------
# providers: each returns forward(x) -> spikes, or raises with the reason it cannot run


class Providers:
    """``forward(name, dtype, T, N)`` -> a function ``x [T, N] -> spikes`` for provider ``name``,
    or the exception saying why it cannot run."""

    def __init__(self, device, args, neuron: Neuron):
        self.device = device
        self.args = args
        self.neuron = neuron
        self.compile_T, self.compile_dtypes = compile_plan(args, device)
        self._compiled = {}
        self.compile_errors = {}  # (dtype, T) -> the exception of a failed compile: not retried per N
        self._sj = None

    def forward(self, name: str, dtype_name: str, T: int, N: int):
        import tks_kernels

        kw = self.neuron.kwargs
        if name == "eager":
            return lambda x: tks_kernels.lif_multistep(x, backend="torch", **kw)[0]
        if name in OUR_FUSED:
            if name == "triton" and self.device.type == "cpu" and not self.args.smoke:
                raise RuntimeError(
                    "Triton runs on CUDA tensors; on CPU only through TRITON_INTERPRET=1, whose timings "
                    "measure the interpreter, not a kernel"
                )
            backend, save = (RECOMPUTE[name], "x") if name in RECOMPUTE else (name, "h")
            if save == "x" and backend == "cuda" and T > tks_kernels.lif.CUDA_RECOMPUTE_MAX_T:
                raise RuntimeError(f"save='x' on CUDA takes T <= {tks_kernels.lif.CUDA_RECOMPUTE_MAX_T} "
                                   "(above it H is saved, as provider cuda)")
            return lambda x: tks_kernels.lif_multistep(x, backend=backend, save=save, **kw)[0]
        if name == "compile":
            return self._compile_forward(dtype_name, T)
        if name.startswith("sj-"):
            return self._sj_forward(name[3:], N)
        raise ValueError(f"unknown provider {name!r}")

    def _compile_forward(self, dtype_name: str, T: int):
        if T not in self.compile_T or dtype_name not in self.compile_dtypes:
            raise RuntimeError(
                f"outside the compile plan (T in {sorted(self.compile_T)}, dtypes {sorted(self.compile_dtypes)}: "
                "compiling the unrolled loop takes tens of seconds per (T, dtype); widen with --compile-t / "
                "--compile-dtypes)"
            )
        key = (dtype_name, T)
        if key in self.compile_errors:
            raise self.compile_errors[key]
        if key not in self._compiled:
            from tks_kernels.lif.config import parse_lif_args
            from tks_kernels.lif.reference import lif_reference_forward

            kw = self.neuron.kwargs
            cfg, _ = parse_lif_args(
                x_seq=torch.zeros(T, 1, device=self.device), v_init=None, tau=kw["tau"], decay=None,
                v_threshold=kw["v_threshold"], v_reset=kw["v_reset"], decay_input=kw["decay_input"],
                detach_reset=kw["detach_reset"], surrogate=kw.get("surrogate", "sigmoid"), alpha=kw.get("alpha"),
                store_v_seq=False, max_spike_count=kw.get("max_spike_count"), grad_window=kw.get("grad_window"),
            )
            # One graph per (T, dtype): the loop over T unrolls, N stays symbolic.
            C.prepare_compile()

            def reference(x):
                return lif_reference_forward(x, None, None, cfg)[0]

            self._compiled[key] = torch.compile(reference)
        compiled = self._compiled[key]

        def forward(x):
            torch._dynamo.mark_dynamic(x, 1)
            return compiled(x)

        return forward

    def _sj_forward(self, impl: str, N: int):
        env = self.neuron.sj_env
        requested = os.environ.get(env, "auto")
        if self.device.type == "cpu" and impl != "torch":
            raise RuntimeError(f"spikingjelly runs its {impl} implementation on CUDA only; on CPU it runs torch")
        if self.device.type == "cuda" and requested != impl:
            raise RuntimeError(f"sj-{impl} runs in a subprocess with {env}={impl} (this process has {requested!r})")
        if self._sj is None:
            try:
                from spikingjelly.activation_based import functional, surrogate
            except ImportError as e:
                raise RuntimeError(f"spikingjelly is not installed ({e}); pip install spikingjelly==2.0.0") from e
            self._sj = (functional, surrogate)
        functional, surrogate = self._sj
        # Its neurons keep the state in x's dtype, which for bf16/fp16 sends them to the eager
        # reference; the functional form with fp32 state is spikingjelly's fastest path.
        v0 = torch.zeros(N, device=self.device, dtype=torch.float32)
        kw = self.neuron.kwargs
        if self.neuron.name == "ilif":
            count = surrogate.MultiLevelSpikeCount(kw["max_spike_count"], grad_window=kw["grad_window"])

            def forward(x):
                return functional.ilif_multi_step(
                    x, v0, tau=kw["tau"], v_threshold=kw["v_threshold"], surrogate_function=count,
                    detach_reset=kw["detach_reset"], store_v_seq=False,
                )[0]

            return forward
        surrogate_fn = surrogate.PiecewiseQuadratic(alpha=kw["alpha"])

        def forward(x):
            return functional.lif_multi_step(
                x, v0, tau=kw["tau"], decay_input=kw["decay_input"], v_threshold=kw["v_threshold"],
                v_reset=kw["v_reset"], surrogate_function=surrogate_fn, detach_reset=kw["detach_reset"],
                store_v_seq=False,
            )[0]

        return forward


# --------------------------------------------------------------------------------------------
# measuring one provider on one configuration


def measure(provider: str, forward, x0, grad, reference, device, warmup_ms, rep_ms) -> list[dict]:
    """Rows (one per pass) for ``forward`` on input ``x0`` with upstream gradient ``grad``."""
    T, N = x0.shape

    def check(spikes, gx):
        if reference is None:
            return {}
        ref_spikes, ref_gx = reference
        return {"spike_mismatch": (spikes != ref_spikes).float().mean().item(), "grad_rel_err": C.rel_err(gx, ref_gx)}

    fields, times = C.measure_passes(forward, x0, grad, device, warmup_ms, rep_ms, check)
    fields["saved_per_neuron_step"] = fields.pop("saved_per_element")
    first = fields.pop("first_call_s")
    fields["compile_s"] = first if provider == "compile" else float("nan")
    return [dict(fields, provider=provider, pass_=p, status="ok", median_ms=times[p][0], q20_ms=times[p][1],
                 q80_ms=times[p][2]) for p in PASSES]


def run_sweep(args, device, providers: list[str], skips: C.SkipLog, neuron: Neuron) -> list[dict]:
    warmup_ms, rep_ms = C.timing_budget(args, device)
    prov = Providers(device, args, neuron)
    gen = torch.Generator(device="cpu").manual_seed(0)
    probes: dict[tuple[str, str], object] = {}
    rows = []
    for dtype_name, T, N in build_sweep(args, device):
        dtype = C.DTYPES[dtype_name]
        where = f"{dtype_name}, T={T}, N={N}"
        print(f"-- {where}", flush=True)
        base_rows = {name: dict(provider=name, dtype=dtype_name, T=T, N=N) for name in providers}
        runnable, forwards = [], {}
        for name in providers:
            try:
                if (name, dtype_name) not in probes:  # can it run at all here? (once per dtype)
                    probes[(name, dtype_name)] = probe(prov, name, dtype_name, device)
                if isinstance(probes[(name, dtype_name)], Exception):
                    raise probes[(name, dtype_name)]
                forwards[name] = prov.forward(name, dtype_name, T, N)
                runnable.append(name)
            except Exception as e:  # the library's own reason, printed once, recorded per row
                status = "skipped: " + skips.skip(name, C.describe_error(e), where)
                rows.extend(dict(base_rows[name], pass_=p, status=status) for p in PASSES)
        if not runnable:
            continue
        x0 = (torch.randn(T, N, generator=gen) * neuron.x_scale).to(device=device, dtype=dtype)
        grad = torch.randn(T, N, generator=gen).to(device=device, dtype=dtype)
        reference = None
        if not args.no_check:
            import tks_kernels

            xr = x0.detach().clone().requires_grad_(True)
            ref_spikes = tks_kernels.lif_multistep(xr, backend="torch", **neuron.kwargs)[0]
            reference = (ref_spikes.detach(), torch.autograd.grad(ref_spikes, xr, grad)[0])
            del xr, ref_spikes
        for name in runnable:
            try:
                rows_p = measure(name, forwards[name], x0, grad, reference, device, warmup_ms, rep_ms)
            except Exception as e:
                if C.is_out_of_memory(e):
                    status = "error: " + C.describe_error(e, 160)
                    print(f"[error] {name} ({where}): {status}", flush=True)
                else:
                    status = "skipped: " + skips.skip(name, C.describe_error(e), where)
                    if name == "compile":
                        prov.compile_errors[(dtype_name, T)] = e
                C.free_memory(device)
                rows.extend(dict(base_rows[name], pass_=p, status=status) for p in PASSES)
                continue
            for r in rows_p:
                r.update(base_rows[name])
                print(f"   {name:<10} {r['pass_']:<8} {r['median_ms']:10.4f} ms  [{r['q20_ms']:.4f}, {r['q80_ms']:.4f}]"
                      f"  saved {r['saved_per_neuron_step']:.2f} B/neuron/step", flush=True)
            rows.extend(rows_p)
        del x0, grad, reference, forwards
        C.free_memory(device)
    return [{("pass" if k == "pass_" else k): v for k, v in r.items()} for r in rows]


def probe(prov: Providers, name: str, dtype_name: str, device):
    """None when provider ``name`` runs a tiny fwd+bwd in ``dtype_name``, else the exception.
    torch.compile is not probed (a probe would compile); its plan is checked per point."""
    if name == "compile":
        return None
    try:
        forward = prov.forward(name, dtype_name, 2, 256)
        x = torch.randn(2, 256, device=device).to(C.DTYPES[dtype_name]).requires_grad_(True)
        spikes = forward(x)
        torch.autograd.grad(spikes, x, torch.ones_like(spikes))
        return None
    except Exception as e:
        return e


# --------------------------------------------------------------------------------------------
# spikingjelly implementations in subprocesses (CUDA)


def run_sj_workers(args, device, wanted: list[str], neuron: Neuron) -> tuple[list[dict], dict]:
    """Run each requested sj-<impl> provider in its own process with spikingjelly's implementation
    variable (SJ_LIF_CUDA_IMPLEMENTATION, SJ_ILIF_CUDA_IMPLEMENTATION) set."""
    rows, skip_reasons = [], {}
    for name in wanted:
        impl = name[3:]
        with tempfile.TemporaryDirectory() as tmp:
            out_json = os.path.join(tmp, "rows.json")
            cmd = [sys.executable, os.path.abspath(__file__)] + _forwarded_argv() + [
                "--providers", name, "--neuron", neuron.name, "--sj-worker", out_json]
            env = dict(os.environ, **{neuron.sj_env: impl})
            print(f"== {name}: subprocess with {neuron.sj_env}={impl}", flush=True)
            proc = subprocess.run(cmd, env=env)
            if proc.returncode != 0 or not os.path.exists(out_json):
                reason = f"worker exited with status {proc.returncode} (its output is above)"
                print(f"[error] {name}: {reason}", flush=True)
                skip_reasons[f"{name}: error: {reason}"] = ""
                continue
            with open(out_json) as f:
                payload = json.load(f)
            rows.extend(payload["rows"])
            skip_reasons.update(payload["skips"])
    return rows, skip_reasons


def _forwarded_argv() -> list[str]:
    """This process's arguments minus --providers / --out (the worker writes JSON only)."""
    argv, skip_next = [], False
    for a in sys.argv[1:]:
        if skip_next:
            skip_next = False
            continue
        if a in ("--providers", "--out", "--sj-worker", "--neuron"):
            skip_next = True
            continue
        if a.startswith(("--providers=", "--out=", "--sj-worker=", "--neuron=")):
            continue
        argv.append(a)
    return argv


def sj_auto_choice(device, neuron: Neuron) -> str:
    try:
        from spikingjelly.activation_based.functional import neuron_implementation

        info = neuron_implementation(neuron.name, device)
        unavailable = "; ".join(f"{k}: {v}" for k, v in info.get("unavailable", {}).items())
        return f"{info['implementation']}" + (f" (unavailable: {unavailable})" if unavailable else "")
    except Exception as e:
        return f"unknown ({C.describe_error(e, 200)})"


# --------------------------------------------------------------------------------------------
# derived columns, report, plot, targets


def add_derived(rows: list[dict], copy_gbps: float) -> None:
    groups: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["dtype"], r["T"], r["N"], r["pass"]), {})[r["provider"]] = r["median_ms"]
    for r in rows:
        b = C.DTYPES[r["dtype"]].itemsize
        r["bytes"] = pass_bytes(r["pass"], r["T"], r["N"], b, recompute=r["provider"] in RECOMPUTE)
        r["copy_gbps"] = copy_gbps
        if r["status"] != "ok":
            continue
        r["gbps"] = r["bytes"] / (r["median_ms"] * 1e-3) / 1e9
        r["pct_copy"] = 100.0 * r["gbps"] / copy_gbps
        # memory held for backward per neuron-step: the new tensors, plus x where the graph keeps it
        r["held_per_neuron_step"] = r["saved_per_neuron_step"] + (b if r["x_saved"] else 0)
        times = groups[(r["dtype"], r["T"], r["N"], r["pass"])]
        if r["provider"] in RECOMPUTE and RECOMPUTE[r["provider"]] in times:
            r["speedup_vs_save_h"] = times[RECOMPUTE[r["provider"]]] / r["median_ms"]
        sj = {p: t for p, t in times.items() if p.startswith("sj-")}
        if sj:
            times = dict(times, **{"sj-best": min(sj.values())})
        for peer in PEERS:
            if peer in times:
                r[f"speedup_vs_{peer.replace('-', '_')}"] = times[peer] / r["median_ms"]


def _row(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and r["status"] == "ok":
            return r
    return None


def targets(rows: list[dict], device, neuron: Neuron) -> list[C.Target]:
    cpu, gpu = device.type == "cpu", device.type == "cuda"
    what = "LIF" if neuron.name == "lif" else "I-LIF"
    out = []
    r = _row(rows, provider="cpp", dtype="fp32", T=8, N=1 << 20, **{"pass": "fwd+bwd"})
    where = "fp32, T=8, N=2^20, fwd+bwd"
    out.append(C.Target(f"CPU: cpp {what} fwd+bwd speedup vs spikingjelly 2.0.0", r and r.get("speedup_vs_sj_best"),
                        neuron.cpu_speedup_target, "x", where=where if r else "cpp or sj-torch did not run at " + where,
                        applies=cpu))
    out.append(C.Target(f"CPU: cpp {what} fwd+bwd % of copy bandwidth", r and r.get("pct_copy"), 60.0, "%",
                        where=where if r else "cpp did not run at " + where, applies=cpu))
    for dtype_name, goal in (("fp32", 1.15), ("bf16", 1.3)):
        r = _row(rows, provider="cpp-x", dtype=dtype_name, T=8, N=1 << 20, **{"pass": "fwd+bwd"})
        where = f"{dtype_name}, T=8, N=2^20, fwd+bwd"
        out.append(C.Target(f"CPU: cpp-x {what} (save='x') fwd+bwd speedup vs cpp (save='h')",
                            r and r.get("speedup_vs_save_h"), goal, "x",
                            where=where if r else "cpp-x or cpp did not run at " + where, applies=cpu))
    r = _row(rows, provider="cpp-x", dtype="fp32", T=8, N=1 << 20, **{"pass": "fwd+bwd"})
    out.append(C.Target(f"CPU: cpp-x {what} fwd+bwd % of copy bandwidth (its own bytes, T*N*5b + 8N)",
                        r and r.get("pct_copy"), 70.0, "%",
                        where="fp32, T=8, N=2^20" if r else "cpp-x did not run at fp32, T=8, N=2^20", applies=cpu))
    if neuron.name != "lif":  # the GPU targets are the binary LIF's
        return out
    n_gpu = 1 << 24
    for dtype_name, goal in (("fp32", 1.15), ("bf16", 1.4)):
        pts = [r for r in rows if r["provider"] == "cuda-x" and r["status"] == "ok" and r["pass"] == "fwd+bwd"
               and r["dtype"] == dtype_name and r["T"] in (4, 8, 16) and r["N"] == n_gpu
               and r.get("speedup_vs_sj_best") not in (None, "")]
        worst = min(pts, key=lambda r: r["speedup_vs_sj_best"], default=None)
        out.append(C.Target(f"GPU: cuda-x LIF (save='x') fwd+bwd speedup vs spikingjelly's fastest "
                            f"({dtype_name}, worst T in 4, 8, 16, N=2^24)", worst and worst["speedup_vs_sj_best"],
                            goal, "x", where=f"T={worst['T']}" if worst else "cuda-x or spikingjelly did not run",
                            applies=gpu))
    held = [r for r in rows if r["provider"] == "cuda-x" and r["status"] == "ok" and r["dtype"] == "bf16"
            and r["pass"] == "fwd"]
    worst = max(held, key=lambda r: r["held_per_neuron_step"], default=None)
    out.append(C.Target("GPU: cuda-x memory held for backward per neuron-step, bf16 (max, x included)",
                        worst and worst["held_per_neuron_step"], 2.0, " B", at_most=True,
                        where=f"T={worst['T']}, N={worst['N']}" if worst else "cuda-x did not run with bf16",
                        applies=gpu))
    for name in ("triton", "cuda"):
        ok = [r for r in rows
              if r["provider"] == name and r["status"] == "ok" and r["pass"] == "fwd+bwd" and r["T"] >= 4]
        n_max = max((r["N"] for r in ok), default=None)
        big = [r for r in ok if r["N"] == n_max]
        fp32 = [r for r in big if r["dtype"] == "fp32"]
        worst = min(fp32, key=lambda r: r["pct_copy"], default=None)
        out.append(C.Target(f"GPU: {name} LIF fwd+bwd % of copy bandwidth (fp32, worst T>=4, largest N)",
                            worst and worst["pct_copy"], 85.0, "%",
                            where=f"T={worst['T']}, N={worst['N']}" if worst else f"{name} did not run", applies=gpu))
        with_sj = [r for r in big if r.get("speedup_vs_sj_best") not in (None, "")]
        worst = min(with_sj, key=lambda r: r["speedup_vs_sj_best"], default=None)
        out.append(C.Target(f"GPU: {name} LIF fwd+bwd speedup vs spikingjelly's fastest "
                            "(worst T>=4, any dtype, largest N)",
                            worst and worst["speedup_vs_sj_best"], 1.25, "x",
                            where=f"{worst['dtype']}, T={worst['T']}, N={worst['N']}" if worst
                            else f"{name} or spikingjelly did not run", applies=gpu))
        bf16 = [r for r in rows if r["provider"] == name and r["status"] == "ok" and r["dtype"] == "bf16"]
        worst = max(bf16, key=lambda r: r["saved_per_neuron_step"], default=None)
        out.append(C.Target(f"GPU: {name} bytes saved for backward per neuron per step, bf16 input (max)",
                            worst and worst["saved_per_neuron_step"], 2.0, " B", at_most=True,
                            where=f"T={worst['T']}, N={worst['N']}" + (", x referenced too" if worst["x_saved"] else "")
                            if worst else f"{name} did not run with bf16", applies=gpu))
    return out


def write_outputs(out_dir, rows, tag, copy_gbps, copy_ms, copy_bytes, providers, skip_reasons, target_md, sj_auto,
                  neuron: Neuron):
    os.makedirs(out_dir, exist_ok=True)
    stem = neuron.name
    C.write_csv(os.path.join(out_dir, f"{stem}.csv"), rows, COLUMNS, tag)
    md = [C.md_header(f"{neuron.title} benchmark: fused vs eager vs spikingjelly", tag, C.command_line())]
    md.append(f"- copy bandwidth: **{copy_gbps:.1f} GB/s** (`dst.copy_(src)` of {copy_bytes / 2**20:.0f} MiB, "
              f"read + written, median {copy_ms:.3f} ms)")
    if sj_auto:
        md.append(f"- spikingjelly's own pick on this device ({neuron.sj_env}=auto): {sj_auto}")
    scale = "" if neuron.x_scale == 1.0 else f" x {neuron.x_scale:g}"
    md.append(f"- settings: {neuron.settings}; x ~ N(0,1){scale} [T, N]; upstream gradient on the spikes only")
    md.append("- times: median ms [20%, 80% quantiles]; GB/s = bytes / median time, bytes "
              "(b = bytes per element of x):")
    for p in PASSES:
        md.append(f"  - {p}: {BYTE_FORMULAS[p]}")
    md.append("  - save='x' providers (cuda-x, cpp-x), their own bytes:")
    for p in PASSES:
        md.append(f"    - {p}: {BYTE_FORMULAS_X[p]}")
    md.append("- x speedup columns: the peer's median / this provider's median (>1: this one is faster); "
              "sj-best = the fastest spikingjelly implementation at that point\n")
    present = C.providers_that_ran(rows, providers)
    fused = [p for p in OUR_FUSED if p in present]
    keys = sorted({(r["dtype"], r["N"]) for r in rows}, key=lambda k: (list(C.DTYPES).index(k[0]), k[1]))
    for dtype_name, N in keys:
        for pass_name in PASSES:
            md.append(f"### {pass_name}, {dtype_name}, N={N} (2^{N.bit_length() - 1}): median ms\n")
            recompute = [p for p in RECOMPUTE if p in present]
            header = (["T"] + present + [f"{p} % copy" for p in fused] + [f"{p} x sj-best" for p in fused]
                      + [f"{p} x {RECOMPUTE[p]}" for p in recompute])
            table = []
            for T in sorted({r["T"] for r in rows if r["dtype"] == dtype_name and r["N"] == N}):
                line = [str(T)]
                for p in present:
                    r = _row(rows, provider=p, dtype=dtype_name, T=T, N=N, **{"pass": pass_name})
                    line.append(f"{C.fmt(r['median_ms'])} [{C.fmt(r['q20_ms'])}, {C.fmt(r['q80_ms'])}]" if r else "-")
                for key in ("pct_copy", "speedup_vs_sj_best"):
                    for p in fused:
                        r = _row(rows, provider=p, dtype=dtype_name, T=T, N=N, **{"pass": pass_name})
                        line.append(C.fmt(r.get(key)) if r else "-")
                for p in recompute:
                    r = _row(rows, provider=p, dtype=dtype_name, T=T, N=N, **{"pass": pass_name})
                    line.append(C.fmt(r.get("speedup_vs_save_h")) if r else "-")
                table.append(line)
            md.append(C.md_table(header, table) + "\n")
    md.append("### Memory and agreement with the eager reference (largest N per dtype)\n")
    md.append("saved B/n/s: bytes saved for backward per neuron per step (unique storages, x excluded); "
              "x saved: the graph also keeps x alive; peaks: CUDA max_memory_allocated above the inputs "
              "(blank on CPU); spike mismatch: fraction of spikes that differ from the eager reference; "
              "grad rel err: ||grad_x - ref|| / ||ref||.\n")
    table = []
    for dtype_name in sorted({r["dtype"] for r in rows}, key=list(C.DTYPES).index):
        n_max = max(r["N"] for r in rows if r["dtype"] == dtype_name)
        for T in sorted({r["T"] for r in rows if r["dtype"] == dtype_name}):
            for p in present:
                r = _row(rows, provider=p, dtype=dtype_name, T=T, N=n_max, **{"pass": "fwd"})
                if r:
                    table.append((dtype_name, str(T), str(n_max), p, C.fmt(r["saved_per_neuron_step"]),
                                  C.fmt(r["x_saved"]),
                                  C.fmt(r["peak_fwd_mb"]), C.fmt(r["peak_fwdbwd_mb"]), C.fmt(r.get("spike_mismatch")),
                                  C.fmt(r.get("grad_rel_err"))))
    md.append(C.md_table(("dtype", "T", "N", "provider", "saved B/n/s", "x saved", "peak fwd MB", "peak fwd+bwd MB",
                          "spike mismatch", "grad rel err"), table) + "\n")
    md.extend(C.md_skipped(skip_reasons))
    md.append(target_md)
    C.write_markdown(os.path.join(out_dir, f"{stem}.md"), md)
    C.try_plot(plot, os.path.join(out_dir, f"{stem}.png"), rows, present, tag, neuron.title)


def plot(path, rows, providers, tag, title="LIF"):
    dtypes = sorted({r["dtype"] for r in rows}, key=list(C.DTYPES).index)
    fig, axes = C.new_figure(len(PASSES), len(dtypes))
    for j, dtype_name in enumerate(dtypes):
        n_max = max(r["N"] for r in rows if r["dtype"] == dtype_name)
        for i, pass_name in enumerate(PASSES):
            ax = axes[i][j]
            for p in providers:
                pts = sorted((r["T"], r["median_ms"]) for r in rows if r["provider"] == p and r["dtype"] == dtype_name
                             and r["N"] == n_max and r["pass"] == pass_name and r["status"] == "ok")
                if pts:
                    ax.plot([t for t, _ in pts], [m for _, m in pts], marker="o", label=p, color=C.provider_color(p))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("T")
            ax.set_ylabel("median ms")
            ax.set_title(f"{pass_name}, {dtype_name}, N=2^{n_max.bit_length() - 1}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            C.finish_axis(ax)
    C.save_figure(fig, path, title, tag)


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--neuron", default="lif,ilif",
                   help="comma-separated: lif (binary spikes), ilif (integer spike counts); each writes <name>.csv/md/png")
    p.add_argument("--T", default=None, help="comma-separated T values (overrides the sweep)")
    p.add_argument("--N", default=None, help="comma-separated N values, e.g. 2^16,2^20 (overrides the sweep)")
    p.add_argument("--dtypes", default=None, help="comma-separated: fp32,bf16,fp16 (overrides the sweep)")
    p.add_argument("--compile-t", default=None, help="T values where torch.compile runs ('' for none)")
    p.add_argument("--compile-dtypes", default=None, help="dtypes where torch.compile runs")
    p.add_argument("--copy-mib", type=float, default=None, help="size of the copy-bandwidth buffer (MiB)")
    p.add_argument("--no-check", action="store_true", help="skip the agreement check against the eager reference")
    p.add_argument("--sj-worker", default=None, help=argparse_hidden())
    args = p.parse_args(argv)
    neurons = C.parse_list(args.neuron) or ["lif"]
    unknown = [n for n in neurons if n not in NEURONS]
    if unknown:
        raise SystemExit(f"--neuron: unknown {unknown}; choose from {', '.join(NEURONS)}")
    if args.replot:
        rows, tag = C.read_rows(args.replot)
        stem = os.path.splitext(os.path.basename(args.replot))[0]
        title = NEURONS[stem].title if stem in NEURONS else "LIF"
        plot(C.png_beside(args.replot), rows, C.providers_that_ran(rows, ALL_PROVIDERS), tag, title)
        return 0
    device = C.pick_device(args)
    wanted = C.wanted_providers(args, ALL_PROVIDERS)

    if args.sj_worker:  # a subprocess timing one spikingjelly implementation; writes JSON rows
        skips = C.SkipLog()
        rows = run_sweep(args, device, wanted, skips, NEURONS[neurons[0]])
        with open(args.sj_worker, "w") as f:
            json.dump({"rows": rows, "skips": skips.reasons}, f)
        return 0

    tag = C.announce_device(device, args.note)
    warmup_ms, rep_ms = C.timing_budget(args, device)
    print("bytes per pass (b = bytes per element of x; the same for both neurons):")
    for k in PASSES:
        print(f"  {k}: {BYTE_FORMULAS[k]}")
    # one copy bandwidth for every neuron of this run
    copy_bytes = int((args.copy_mib or (16 if args.smoke else 1024 if device.type == "cuda" else 256)) * 2**20)
    copy_gbps, copy_ms = C.copy_bandwidth(device, copy_bytes, warmup_ms, max(rep_ms, 50.0))
    print(f"copy bandwidth: {copy_gbps:.1f} GB/s ({copy_bytes / 2**20:.0f} MiB copy, read + written)", flush=True)
    for name in neurons:
        neuron = NEURONS[name]
        print(f"\n==== {neuron.title} ({name})", flush=True)
        run_neuron(args, device, wanted, neuron, tag, copy_gbps, copy_ms, copy_bytes)
    return 0


def run_neuron(args, device, wanted, neuron: Neuron, tag, copy_gbps, copy_ms, copy_bytes) -> str:
    """Sweep, derive, report and write the files of one neuron; returns the output folder."""
    skips = C.SkipLog()
    rows = []
    sj_auto = ""
    in_process = [w for w in wanted if not (w.startswith("sj-") and device.type == "cuda")]
    if device.type == "cuda":
        sj_wanted = [w for w in wanted if w.startswith("sj-")]
        if sj_wanted:  # before this process allocates anything large
            sj_rows, sj_skips = run_sj_workers(args, device, sj_wanted, neuron)
            rows.extend(sj_rows)
            skips.reasons.update(sj_skips)
            sj_auto = sj_auto_choice(device, neuron)
            print(f"spikingjelly's own pick here: {sj_auto}", flush=True)
    else:
        for w in [w for w in wanted if w.startswith("sj-") and w != "sj-torch"]:
            skips.skip(w, "spikingjelly runs only its torch reference on CPU (that is sj-torch)")
        in_process = [w for w in in_process if not (w.startswith("sj-") and w != "sj-torch")]

    rows.extend(run_sweep(args, device, in_process, skips, neuron))
    add_derived(rows, copy_gbps)
    rows.sort(key=lambda r: (list(C.DTYPES).index(r["dtype"]), r["N"], r["T"], PASSES.index(r["pass"]),
                             list(ALL_PROVIDERS).index(r["provider"])))
    tag.finish()
    target_list = targets(rows, device, neuron)
    target_md = C.report_targets(target_list)
    out_dir = args.out or C.default_out_dir(tag)
    write_outputs(out_dir, rows, tag, copy_gbps, copy_ms, copy_bytes, wanted, skips.reasons, target_md, sj_auto,
                  neuron)
    print(f"\nwrote {out_dir}/{neuron.name}.csv, {neuron.name}.md, {neuron.name}.png", flush=True)
    return out_dir


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
