"""Benchmark the distillation loss: fused kernels vs the eager reference vs torch.compile of the
reference; forward, backward and forward+backward, and on CUDA forward+backward replayed from a
CUDA graph (the GPU time alone).

Providers (each skipped, with the library's own reason printed, when it cannot run here):
  eager    tks_kernels.kd_loss(backend="torch"): the package's eager reference
  compile  torch.compile of that call (dynamic shapes)
  triton   tks_kernels.kd_loss(backend="triton")   (CUDA)
  cpp      tks_kernels.kd_loss(backend="cpp")      (CPU)

Settings: temperature=2, detach_teacher=True, reduction="mean" (how TSSD and TRT use it); student
logits [Ts, B, C] and teacher logits [Tt, B, C] ~ N(0, 2), Tt = 2 Ts (TSSD's longer teacher) or
Tt = Ts (TRT); the gradient is the student's (the loss is a scalar: upstream gradient 1). There
is no speed target for this op: the script reports what it measures.

Usage:  python bench/bench_kd_loss.py [--quick] [--out DIR]   (see bench/README.md)
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import common as C  # noqa: E402
from bench_tks_loss import GRAPH_PASS, graph_fwd_bwd_time, passes_in  # noqa: E402

LOSS_KWARGS = dict(temperature=2.0, detach_teacher=True, reduction="mean")
PASSES = C.PASSES
FUSED = ("triton", "cpp")
ALL_PROVIDERS = ("eager", "compile") + FUSED
COLUMNS = ["provider", "dtype", "Ts", "Tt", "B", "C", "pass", "status", "median_ms", "q20_ms", "q80_ms",
           "speedup_vs_eager", "speedup_vs_compile", "saved_bytes", "x_saved", "peak_fwd_mb", "peak_fwdbwd_mb",
           "loss_rel_err", "grad_rel_err", "compile_s"]


def build_sweep(args, device) -> list[tuple[str, int, int, int, int]]:
    if args.smoke:
        dtypes, steps, Bs, Cs = ["fp32"], [(4, 8)], [8], [10]
    elif args.quick:
        dtypes, steps, Bs, Cs = ["fp32"], [(4, 8), (10, 10)], [64], [10, 1000]
    else:
        dtypes = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
        steps, Bs, Cs = [(4, 8), (10, 10)], [64, 128, 256], [10, 100, 1000]
    dtypes = C.parse_list(args.dtypes) or dtypes
    if args.steps:
        steps = [tuple(int(v) for v in pair.split(":")) for pair in C.parse_list(args.steps)]
    Bs = C.parse_list(args.B, int) or Bs
    Cs = C.parse_list(args.C, int) or Cs
    return [(d, Ts, Tt, B, n_cls) for d in dtypes for Ts, Tt in steps for B in Bs for n_cls in Cs]


class Providers:
    def __init__(self, device, args):
        self.device = device
        self.args = args
        self.compile_enabled = args.compile if args.compile is not None else not (args.smoke or args.quick)
        self._compiled = None
        self.compile_error = None  # a failed compile is not retried for every shape

    def forward(self, name: str, teacher: torch.Tensor):
        import tks_kernels

        if not hasattr(tks_kernels, "kd_loss"):
            raise RuntimeError("tks_kernels.kd_loss is not in this build of tks_kernels (merge the loss-kernels branch)")
        if name == "eager":
            return lambda s: tks_kernels.kd_loss(s, teacher, backend="torch", **LOSS_KWARGS)
        if name in FUSED:
            if name == "triton" and self.device.type == "cpu" and not self.args.smoke:
                raise RuntimeError(
                    "Triton runs on CUDA tensors; on CPU only through TRITON_INTERPRET=1, whose timings "
                    "measure the interpreter, not a kernel"
                )
            return lambda s: tks_kernels.kd_loss(s, teacher, backend=name, **LOSS_KWARGS)
        if name == "compile":
            if not self.compile_enabled:
                raise RuntimeError("torch.compile is off in --quick / --smoke sweeps (turn it on with --compile)")
            if self.compile_error is not None:
                raise self.compile_error
            if self._compiled is None:
                C.prepare_compile()

                def reference(s, t):
                    return tks_kernels.kd_loss(s, t, backend="torch", **LOSS_KWARGS)

                self._compiled = torch.compile(reference, dynamic=True)
            compiled = self._compiled
            return lambda s: compiled(s, teacher)
        raise ValueError(f"unknown provider {name!r}")


def run_sweep(args, device, providers, skips: C.SkipLog) -> list[dict]:
    warmup_ms, rep_ms = C.timing_budget(args, device)
    prov = Providers(device, args)
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows = []
    graph_passes = (GRAPH_PASS,) if device.type == "cuda" else ()
    for dtype_name, Ts, Tt, B, n_cls in build_sweep(args, device):
        dtype = C.DTYPES[dtype_name]
        student = (2.0 * torch.randn(Ts, B, n_cls, generator=gen)).to(device=device, dtype=dtype)
        teacher = (2.0 * torch.randn(Tt, B, n_cls, generator=gen)).to(device=device, dtype=dtype)
        grad = torch.ones((), device=device)
        where = f"{dtype_name}, Ts={Ts}, Tt={Tt}, B={B}, C={n_cls}"
        print(f"-- {where}", flush=True)
        reference = None
        try:
            s = student.detach().clone().requires_grad_(True)
            loss = prov.forward("eager", teacher)(s)
            reference = (loss.detach(), torch.autograd.grad(loss, s)[0])
        except Exception as e:
            print(f"[note] no eager reference for the agreement check ({C.describe_error(e, 200)})", flush=True)

        def check(loss, gs):
            if reference is None:
                return {}
            return {"loss_rel_err": C.rel_err(loss, reference[0]), "grad_rel_err": C.rel_err(gs, reference[1])}

        for name in providers:
            base = dict(provider=name, dtype=dtype_name, Ts=Ts, Tt=Tt, B=B, C=n_cls)
            try:
                fields, times = C.measure_passes(prov.forward(name, teacher), student, grad, device, warmup_ms,
                                                 rep_ms, check)
            except Exception as e:
                if C.is_out_of_memory(e):
                    status = "error: " + C.describe_error(e, 160)
                    print(f"[error] {name} ({where}): {status}", flush=True)
                else:
                    status = "skipped: " + skips.skip(name, C.describe_error(e), where)
                    if name == "compile":
                        prov.compile_error = e
                C.free_memory(device)
                rows.extend(dict(base, **{"pass": p, "status": status}) for p in PASSES + graph_passes)
                continue
            first = fields.pop("first_call_s")
            fields["compile_s"] = first if name == "compile" else float("nan")
            graph_status = None
            if device.type == "cuda":
                try:
                    times[GRAPH_PASS] = graph_fwd_bwd_time(prov.forward(name, teacher), student, grad, device,
                                                           warmup_ms, rep_ms)
                except Exception as e:
                    graph_status = "skipped: " + skips.skip(f"{name} ({GRAPH_PASS})", C.describe_error(e), where)
                    C.free_memory(device)
            for p in PASSES + graph_passes:
                if p not in times:
                    rows.append(dict(base, **{"pass": p, "status": graph_status}))
                    continue
                med, q20, q80 = times[p]
                rows.append(dict(base, **fields, **{"pass": p, "status": "ok", "median_ms": med, "q20_ms": q20,
                                                    "q80_ms": q80}))
                print(f"   {name:<8} {p:<13} {med:10.4f} ms  [{q20:.4f}, {q80:.4f}]", flush=True)
    return rows


def _key(r):
    return (r["dtype"], r["Ts"], r["Tt"], r["B"], r["C"], r["pass"])


def add_derived(rows):
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(_key(r), {})[r["provider"]] = r["median_ms"]
    for r in rows:
        if r["status"] != "ok":
            continue
        times = groups[_key(r)]
        for peer in ("eager", "compile"):
            if peer in times:
                r[f"speedup_vs_{peer}"] = times[peer] / r["median_ms"]


def write_outputs(out_dir, rows, tag, providers, skip_reasons, target_md):
    os.makedirs(out_dir, exist_ok=True)
    C.write_csv(os.path.join(out_dir, "kd_loss.csv"), rows, COLUMNS, tag)
    md = [C.md_header("Distillation (KD) loss benchmark: fused vs eager vs torch.compile", tag, C.command_line())]
    md.append("- settings: temperature=2, detach_teacher=True, reduction='mean'; student [Ts, B, C] and teacher "
              "[Tt, B, C] ~ N(0, 2); the student's gradient")
    md.append("- cells: median ms [20%, 80% quantiles]; `x eager` = eager median / this median")
    md.append(f"- `{GRAPH_PASS}` (CUDA only): fwd+bwd captured once in a CUDA graph and replayed: the GPU time of "
              "the kernels without the host's per-call work\n")
    present = C.providers_that_ran(rows, providers)
    others = [p for p in present if p != "eager"]
    for dtype_name in sorted({r["dtype"] for r in rows}, key=list(C.DTYPES).index):
        for pass_name in passes_in(rows):
            md.append(f"### {pass_name}, {dtype_name}\n")
            header = ["Ts", "Tt", "B", "C"] + present + [f"{p} x eager" for p in others]
            table = []
            for Ts, Tt, B, n_cls in sorted({(r["Ts"], r["Tt"], r["B"], r["C"]) for r in rows
                                            if r["dtype"] == dtype_name}):
                line = [str(Ts), str(Tt), str(B), str(n_cls)]
                found = {r["provider"]: r for r in rows if r["status"] == "ok"
                         and _key(r) == (dtype_name, Ts, Tt, B, n_cls, pass_name)}
                for p in present:
                    r = found.get(p)
                    line.append(f"{C.fmt(r['median_ms'])} [{C.fmt(r['q20_ms'])}, {C.fmt(r['q80_ms'])}]" if r else "-")
                for p in others:
                    r = found.get(p)
                    line.append(C.fmt(r.get("speedup_vs_eager")) if r else "-")
                table.append(line)
            md.append(C.md_table(header, table) + "\n")
    md.append("### Memory and agreement with the eager reference\n")
    md.append("saved KB: bytes saved for backward (unique storages, the student logits excluded; `logits saved`: "
              "the graph also keeps them alive); peaks: CUDA only; rel err: ||a - ref|| / ||ref||.\n")
    table = [(r["dtype"], str(r["Ts"]), str(r["Tt"]), str(r["B"]), str(r["C"]), r["provider"],
              C.fmt(r["saved_bytes"] / 1e3), C.fmt(r["x_saved"]), C.fmt(r["peak_fwd_mb"]), C.fmt(r["peak_fwdbwd_mb"]),
              C.fmt(r.get("loss_rel_err")), C.fmt(r.get("grad_rel_err")))
             for r in rows if r["status"] == "ok" and r["pass"] == "fwd"]
    md.append(C.md_table(("dtype", "Ts", "Tt", "B", "C", "provider", "saved KB", "logits saved", "peak fwd MB",
                          "peak fwd+bwd MB", "loss rel err", "grad rel err"), table) + "\n")
    md.extend(C.md_skipped(skip_reasons))
    md.append(target_md)
    C.write_markdown(os.path.join(out_dir, "kd_loss.md"), md)
    C.try_plot(plot, os.path.join(out_dir, "kd_loss.png"), rows, present, tag)


def plot(path, rows, providers, tag):
    dtypes = sorted({r["dtype"] for r in rows}, key=list(C.DTYPES).index)
    passes = passes_in(rows)
    fig, axes = C.new_figure(len(passes), len(dtypes), size=(6.5, 3.6))
    for j, dtype_name in enumerate(dtypes):
        configs = sorted({(r["Ts"], r["Tt"], r["B"], r["C"]) for r in rows if r["dtype"] == dtype_name})
        labels = [f"{Ts}:{Tt}/{B}/{n}" for Ts, Tt, B, n in configs]
        for i, pass_name in enumerate(passes):
            ax = axes[i][j]
            width = 0.8 / max(len(providers), 1)
            for k, p in enumerate(providers):
                vals = []
                for config in configs:
                    r = next((r for r in rows if r["provider"] == p and r["status"] == "ok"
                              and _key(r) == (dtype_name, *config, pass_name)), None)
                    vals.append(r["median_ms"] if r else float("nan"))
                ax.bar([x + k * width for x in range(len(configs))], vals, width, label=p, color=C.provider_color(p))
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(configs))])
            ax.set_xticklabels(labels, rotation=60, fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel("median ms")
            ax.set_xlabel("Ts:Tt / B / C")
            ax.set_title(f"{pass_name}, {dtype_name}", fontsize=9)
            ax.grid(True, axis="y", which="both", alpha=0.3)
            C.finish_axis(ax)
    C.save_figure(fig, path, "KD loss", tag)


def main(argv=None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", default=None, help="comma-separated Ts:Tt pairs, e.g. 4:8,10:10")
    p.add_argument("--B", default=None, help="comma-separated batch sizes")
    p.add_argument("--C", default=None, help="comma-separated class counts")
    p.add_argument("--dtypes", default=None, help="comma-separated logits dtypes: fp32,bf16,fp16")
    p.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="run the torch.compile provider (default: on, except in --quick / --smoke)")
    args = p.parse_args(argv)
    if args.replot:
        rows, tag = C.read_rows(args.replot)
        plot(C.png_beside(args.replot), rows, C.providers_that_ran(rows, ALL_PROVIDERS), tag)
        return 0
    device = C.pick_device(args)
    wanted = C.wanted_providers(args, ALL_PROVIDERS)
    tag = C.announce_device(device, args.note)
    skips = C.SkipLog()
    rows = run_sweep(args, device, wanted, skips)
    add_derived(rows)
    tag.finish()
    print("\n== targets ==\nnone: the issue sets no speed target for kd_loss (the tables report what was measured)")
    target_md = "## Targets\n\nNone: no speed target is set for kd_loss; the tables above are what was measured.\n"
    out_dir = args.out or C.default_out_dir(tag)
    write_outputs(out_dir, rows, tag, wanted, skips.reasons, target_md)
    print(f"\nwrote {out_dir}/kd_loss.csv, kd_loss.md, kd_loss.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
