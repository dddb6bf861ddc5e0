"""Pieces shared by the benchmark scripts: device tag, timer, copy bandwidth, memory probes,
CSV / Markdown / PNG writers and the targets report.

Timing: on CUDA ``triton.testing.do_bench`` (it flushes L2 between runs and times with CUDA
events); on CPU :func:`cpu_bench`, a wall-clock loop with warm-up. Both return the median and
the 20% / 80% quantiles in milliseconds.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
QUANTILES = (0.5, 0.2, 0.8)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------
# command line


def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every script takes; each script adds its own sweep options."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available, else cpu")
    p.add_argument("--quick", action="store_true", help="a small sweep (under a minute on a 2-core CPU)")
    p.add_argument("--smoke", action="store_true", help="a tiny sweep that only checks the script runs (tests)")
    p.add_argument("--out", default=None,
                   help="output folder for CSV / Markdown / PNG (default bench/results/<device-slug>)")
    p.add_argument("--providers", default=None,
                   help="comma-separated subset of providers to run (default: all)")
    p.add_argument("--warmup-ms", type=float, default=None, help="warm-up per measurement (ms)")
    p.add_argument("--rep-ms", type=float, default=None, help="timed repetitions per measurement (ms)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: torch.set_num_threads (default: torch's own choice); on a machine shared with "
                        "other jobs 1 thread gives steadier numbers than threads that wait for a busy core")
    p.add_argument("--note", default="", help="free text added to the results header (e.g. machine load)")
    p.add_argument("--replot", default=None, metavar="CSV",
                   help="only draw the PNG from a CSV this script wrote (next to it), e.g. one from a machine "
                        "without matplotlib")
    return p


def pick_device(args) -> torch.device:
    """The device of ``--device``; on CPU also the thread count (``--threads``; 1 for --smoke,
    whose numbers only show that the script runs)."""
    threads = args.threads if args.threads is not None else (1 if args.smoke else None)
    if threads is not None:
        torch.set_num_threads(threads)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    return torch.device(name)


def timing_budget(args, device: torch.device, scale: float = 1.0) -> tuple[float, float]:
    """(warm-up ms, rep ms) for one measurement, from the flags or per device and sweep size;
    ``scale`` multiplies the defaults (slow measurements such as a training step)."""
    if args.smoke:
        default = (2.0, 10.0)
    elif args.quick:
        default = (10.0, 50.0) if device.type == "cuda" else (20.0, 150.0)
    else:
        default = (10.0, 40.0) if device.type == "cuda" else (50.0, 400.0)
    default = (default[0] * scale, default[1] * scale)
    return (args.warmup_ms if args.warmup_ms is not None else default[0],
            args.rep_ms if args.rep_ms is not None else default[1])


def wanted_providers(args, all_providers: Sequence[str]) -> list[str]:
    """The providers named by ``--providers`` (default: all of ``all_providers``); an unknown
    name stops the script with the list to choose from."""
    wanted = parse_list(args.providers) or list(all_providers)
    unknown = [w for w in wanted if w not in all_providers]
    if unknown:
        raise SystemExit(f"--providers: unknown {unknown}; choose from {', '.join(all_providers)}")
    return wanted


def parse_list(text: Optional[str], cast=str) -> Optional[list]:
    if text is None or text == "":
        return None
    return [cast(t.strip()) for t in text.split(",") if t.strip()]


def size_arg(text: str) -> int:
    """'65536', '2^16' or '1<<16' -> int."""
    text = text.strip()
    if "^" in text:
        base, exp = text.split("^")
        return int(base) ** int(exp)
    if "<<" in text:
        base, exp = text.split("<<")
        return int(base) << int(exp)
    return int(text)


# --------------------------------------------------------------------------------------------
# device tag


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        try:
            return getattr(importlib.import_module(module), "__version__", "unknown")
        except Exception:
            return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:
        pass
    return "unknown"


def _last_level_cache() -> str:
    """Size of the largest CPU cache level (working sets below it beat the DRAM copy bandwidth)."""
    best = (0, "unknown")
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = [e for e in os.listdir(base) if e.startswith("index")]
    except OSError:
        return best[1]
    for entry in entries:
        try:
            with open(os.path.join(base, entry, "level")) as f:
                level = int(f.read())
            with open(os.path.join(base, entry, "size")) as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if level > best[0]:
            best = (level, f"L{level} {size}")
    return best[1]


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


@dataclass
class DeviceTag:
    """Where and with what a result was measured; printed at the top of every output."""

    device: torch.device
    name: str
    slug: str
    versions: dict
    date: str
    extra: dict = field(default_factory=dict)

    @classmethod
    def create(cls, device: torch.device, note: str = "") -> "DeviceTag":
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            # "NVIDIA H100 80GB HBM3" -> "nvidia-h100": the memory size/type suffix goes
            slug = re.sub(r"-\d+gb(-.*)?$", "", _slug(name))
            capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
            extra = {"cuda": torch.version.cuda, "capability": capability}
        else:
            name = cpu_model()
            slug = "cpu-" + _slug(name)
            extra = {"cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "last_level_cache": _last_level_cache(), "loadavg_at_start": _loadavg()}
        versions = {
            "torch": torch.__version__,
            "triton": _version("triton"),
            "spikingjelly": _version("spikingjelly"),
            "tks_kernels": _tks_version(),
            "python": platform.python_version(),
            "git": _git_commit(),
        }
        if note:
            extra["note"] = note
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return cls(device, name, slug, versions, date, extra)

    def finish(self) -> None:
        if self.device.type == "cpu":
            self.extra["loadavg_at_end"] = _loadavg()

    def line(self) -> str:
        vers = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        extra = ", ".join(f"{k} {v}" for k, v in self.extra.items())
        return f"{self.name} ({self.device.type}); {vers}; {self.date}" + (f"; {extra}" if extra else "")


def _tks_version() -> str:
    try:
        import tks_kernels

        return tks_kernels.__version__
    except Exception as e:  # the package itself failing to import is worth seeing
        return f"import failed ({type(e).__name__})"


def announce_device(device: torch.device, note: str = "") -> DeviceTag:
    """The tag of this run, printed first so a log says where its numbers come from."""
    tag = DeviceTag.create(device, note)
    print(f"device: {tag.line()}", flush=True)
    return tag


def default_out_dir(tag: DeviceTag) -> str:
    return os.path.join(HERE, "results", tag.slug)


# --------------------------------------------------------------------------------------------
# timing


def cpu_bench(fn: Callable[[], object], warmup_ms: float, rep_ms: float, min_reps: int = 3,
              max_reps: int = 10_000) -> tuple[float, float, float]:
    """Median, 20% and 80% quantiles (ms) of ``fn()`` wall time: one untimed call, warm-up for
    ``warmup_ms``, then repeats until ``rep_ms`` have passed (at least ``min_reps``)."""
    fn()
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or ((time.perf_counter() - start) * 1e3 < rep_ms and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return _quantiles(times)


def _quantiles(times: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(times)

    def q(p):  # linear interpolation, as numpy's default
        pos = p * (len(ordered) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return tuple(q(p) for p in QUANTILES)


def bench(fn: Callable[[], object], device: torch.device, warmup_ms: float, rep_ms: float,
          min_reps: int = 5) -> tuple[float, float, float]:
    """(median, q20, q80) in ms of ``fn`` on ``device``, from at least ``min_reps`` timed calls:
    the repetition budget grows to ``min_reps`` times one call for slow functions (do_bench
    would otherwise time a single call)."""
    if device.type == "cuda":
        import triton.testing

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        rep_ms = max(rep_ms, min_reps * start.elapsed_time(end))
        res = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
        return tuple(float(r) for r in res)
    return cpu_bench(fn, warmup_ms, rep_ms, min_reps=min_reps)


def graph_replay_time(step: Callable[[], object], device: torch.device, warmup_ms: float, rep_ms: float,
                      warmup_calls: int = 3) -> tuple[float, float, float]:
    """(median, q20, q80) ms of replaying ``step()`` captured in one CUDA graph: the GPU time of
    its kernels without the host's per-call work (Python, dispatch, launches), which is what a
    step costs when the host runs ahead of the GPU, as in a training loop. ``step`` is warmed up
    (compiled, caches filled) on a side stream first, as torch.cuda.graph requires."""
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup_calls):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    try:
        return bench(graph.replay, device, warmup_ms, rep_ms)
    finally:
        del graph
        free_memory(device)


def copy_bandwidth(device: torch.device, nbytes: int, warmup_ms: float, rep_ms: float) -> tuple[float, float]:
    """GB/s (1e9 bytes/s) of a device-to-device ``dst.copy_(src)`` of ``nbytes``, counting bytes read
    plus bytes written (2 * nbytes). Returns (GB/s at the median, median ms)."""
    n = max(nbytes // 4, 1)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    med, _, _ = bench(lambda: dst.copy_(src), device, warmup_ms, rep_ms)
    del src, dst
    return 2 * n * 4 / (med * 1e-3) / 1e9, med


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# memory


def saved_for_backward(forward: Callable[[], object], x: Optional[torch.Tensor] = None):
    """Run ``forward()`` with grad enabled and count what autograd saves for backward.

    Returns ``(out, saved_bytes, x_referenced)``: the bytes of the unique storages saved by any
    node of the graph, excluding the storage of ``x`` (the caller's input, alive anyway), and
    whether ``x`` itself is among the saved tensors (kept alive by the graph)."""
    storages: dict[int, int] = {}
    x_ptr = x.untyped_storage().data_ptr() if x is not None else None
    x_referenced = False

    def pack(t):
        nonlocal x_referenced
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if x_ptr is not None and ptr == x_ptr:
            x_referenced = True
        elif ptr != 0:
            storages[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return out, sum(storages.values()), x_referenced


def peak_bytes(fn: Callable[[], object], device: torch.device):
    """``(out, peak)``: peak bytes allocated on CUDA during ``fn()`` above what was allocated
    when it started (outputs, saved tensors and temporaries). ``peak`` is NaN on CPU, where
    torch keeps no allocator statistics."""
    if device.type != "cuda":
        return fn(), float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    return out, float(torch.cuda.max_memory_allocated(device) - base)


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


PASSES = ("fwd", "bwd", "fwd+bwd")


def measure_passes(forward: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, grad_out: torch.Tensor,
                   device: torch.device, warmup_ms: float, rep_ms: float,
                   check: Optional[Callable[[torch.Tensor, torch.Tensor], dict]] = None) -> tuple[dict, dict]:
    """Time ``forward(x)`` (one differentiable output) in three passes and probe its memory.

    - fwd: ``forward(x)`` with grad enabled (it saves what backward needs, as in training);
    - bwd: forward once, then ``torch.autograd.grad(out, x, grad_out, retain_graph=True)``;
    - fwd+bwd: both, the graph freed each time.
    Before timing, one fwd+bwd call (it also compiles / warms caches) is passed to
    ``check(out, grad_x)``, whose dict goes into the returned fields, with ``first_call_s``;
    then the bytes saved for backward (x excluded) and, on CUDA, peak memory.
    Returns ``(fields, {pass: (median, q20, q80) ms})``.
    """
    T_N = x0.numel()
    x = x0.detach().clone().requires_grad_(True)
    fields: dict = {}
    t0 = time.perf_counter()
    out = forward(x)
    (gx,) = torch.autograd.grad(out, x, grad_out)
    sync(device)
    fields["first_call_s"] = time.perf_counter() - t0
    if check is not None:
        fields.update(check(out.detach(), gx))
    del out, gx
    out, saved, x_saved = saved_for_backward(lambda: forward(x), x)
    del out
    fields.update(saved_bytes=saved, saved_per_element=saved / max(T_N, 1), x_saved=x_saved)
    out, peak = peak_bytes(lambda: forward(x), device)
    del out
    fields["peak_fwd_mb"] = peak / 1e6
    _, peak = peak_bytes(lambda: torch.autograd.grad(forward(x), x, grad_out), device)
    fields["peak_fwdbwd_mb"] = peak / 1e6
    free_memory(device)

    times = {"fwd": bench(lambda: forward(x), device, warmup_ms, rep_ms)}
    out = forward(x)
    times["bwd"] = bench(lambda: torch.autograd.grad(out, x, grad_out, retain_graph=True), device, warmup_ms, rep_ms)
    del out
    times["fwd+bwd"] = bench(lambda: torch.autograd.grad(forward(x), x, grad_out), device, warmup_ms, rep_ms)
    free_memory(device)
    return fields, times


def prepare_compile() -> None:
    """torch.compile settings for the benchmarks: room for one graph per shape group, and no
    donated buffers, because the backward-only pass reruns one graph with retain_graph=True
    (donation only lets the compiled backward reuse saved buffers; it changes no kernel)."""
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, attr):
            setattr(torch._dynamo.config, attr, 256)
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp32."""
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def describe_error(e: BaseException, limit: int = 400) -> str:
    """One line: the library's own message, first line(s), trimmed."""
    msg = " ".join(str(e).split())
    if len(msg) > limit:
        msg = msg[:limit] + "..."
    return f"{type(e).__name__}: {msg}"


class SkipLog:
    """Prints each skip reason once per provider and remembers them for the report."""

    def __init__(self):
        self.reasons: dict[str, str] = {}

    def skip(self, provider: str, reason: str, where: str = "") -> str:
        key = f"{provider}: {reason}"
        if key not in self.reasons:
            self.reasons[key] = where
            print(f"[skip] {provider}{(' (' + where + ')') if where else ''}: {reason}", flush=True)
        return reason


# --------------------------------------------------------------------------------------------
# writers


def fmt(value, digits: int = 4) -> str:
    """Numbers for tables: 4 significant digits, no exponent below 1e6; '' for missing."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        if abs(value) >= 10 ** digits:
            return f"{value:.0f}" if abs(value) < 1e6 else f"{value:.3e}"
        return f"{value:.{digits}g}"
    return str(value)


def write_csv(path: str, rows: Iterable[dict], columns: Sequence[str], tag: DeviceTag) -> None:
    """Rows as CSV; every row also carries the device tag columns so files can be concatenated."""
    tag_cols = {"device_name": tag.name, "torch": tag.versions["torch"], "triton": tag.versions["triton"],
                "spikingjelly": tag.versions["spikingjelly"], "tks_kernels": tag.versions["tks_kernels"],
                "git": tag.versions["git"], "date": tag.date}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns) + list(tag_cols), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            out = {c: row.get(c, "") for c in columns}
            for c, v in out.items():
                if isinstance(v, float) and math.isnan(v):
                    out[c] = ""
            out.update(tag_cols)
            w.writerow(out)


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in r) + " |")
    return "\n".join(lines)


def providers_that_ran(rows: Iterable[dict], providers: Sequence[str]) -> list[str]:
    """``providers``, in their order, that have at least one row with status ok."""
    rows = list(rows)
    return [p for p in providers if any(r["provider"] == p and r["status"] == "ok" for r in rows)]


def md_skipped(skip_reasons: dict) -> list[str]:
    """Lines of the Markdown section that lists the skipped providers (none when none was)."""
    if not skip_reasons:
        return []
    return (["### Skipped providers\n"]
            + [f"- {reason}" + (f" (first at {where})" if where else "") for reason, where in skip_reasons.items()]
            + [""])


def write_markdown(path: str, lines: Sequence[str]) -> None:
    with open(path, "w") as f:
        f.write("\n".join(lines))


def md_header(title: str, tag: DeviceTag, command: str) -> str:
    lines = [f"# {title}", "", f"- device: **{tag.name}** ({tag.device.type})"]
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in tag.versions.items()))
    lines.append(f"- date: {tag.date}")
    for k, v in tag.extra.items():
        lines.append(f"- {k}: {v}")
    lines.append(f"- command: `{command}`")
    return "\n".join(lines) + "\n"


def command_line() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO) if sys.argv else "?"
    return " ".join(["python", script] + sys.argv[1:])


# --------------------------------------------------------------------------------------------
# targets


@dataclass
class Target:
    """A published goal: ``measured`` against ``threshold`` (>= unless ``at_most``)."""

    text: str
    measured: Optional[float]
    threshold: float
    unit: str = "x"
    at_most: bool = False
    where: str = ""
    applies: bool = True  # False: a target for another device class

    def status(self) -> str:
        if not self.applies:
            return "N/A"
        if self.measured is None or (isinstance(self.measured, float) and math.isnan(self.measured)):
            return "NOT MEASURED"
        ok = self.measured <= self.threshold if self.at_most else self.measured >= self.threshold
        return "PASS" if ok else "MISS"

    def ratio(self) -> Optional[float]:
        if self.measured is None or not self.threshold or self.status() in ("N/A", "NOT MEASURED"):
            return None
        return self.threshold / self.measured if self.at_most else self.measured / self.threshold

    def line(self) -> str:
        status = self.status()
        if status == "N/A":
            return f"N/A   {self.text} (not this device class)"
        if status == "NOT MEASURED":
            return f"NOT MEASURED  {self.text}: {self.where or 'provider did not run'}"
        sign = "<=" if self.at_most else ">="
        return (f"{status:<5} {self.text}: measured {fmt(self.measured)}{self.unit} ({sign} {fmt(self.threshold)}"
                f"{self.unit}; measured/target {fmt(self.ratio())}){' at ' + self.where if self.where else ''}")


def report_targets(targets: Sequence[Target]) -> str:
    """Print the targets section and return it as Markdown."""
    print("\n== targets ==")
    for t in targets:
        print(t.line())
    rows = []
    for t in targets:
        sign = "<=" if t.at_most else ">="
        measured = "" if t.measured is None else f"{fmt(t.measured)}{t.unit}"
        rows.append((t.text, f"{sign} {fmt(t.threshold)}{t.unit}", measured, t.status(),
                     fmt(t.ratio()) if t.ratio() is not None else "", t.where))
    return "## Targets\n\n" + md_table(("target", "goal", "measured", "status", "measured/goal", "where"), rows) + "\n"


def read_rows(path: str) -> tuple[list[dict], "DeviceTag"]:
    """Rows of a CSV written by :func:`write_csv` (numbers and booleans parsed back) and a tag
    rebuilt from its columns: for ``--replot`` where the run had no matplotlib."""

    def parse(v: str):
        if v == "":
            return float("nan")
        if v in ("True", "False"):
            return v == "True"
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    if not raw:
        raise SystemExit(f"{path} has no rows")
    first = raw[0]
    rows = [{k: (v if k in ("provider", "dtype", "pass", "status", "model") else parse(v)) for k, v in r.items()}
            for r in raw]
    versions = {k: first.get(k, "") for k in ("torch", "triton", "spikingjelly", "tks_kernels", "git")}
    device = torch.device("cuda" if "cpu" not in first.get("device_name", "").lower() else "cpu")
    tag = DeviceTag(device, first.get("device_name", "?"), _slug(first.get("device_name", "?")), versions,
                    first.get("date", ""))
    return rows, tag


def png_beside(csv_path: str) -> str:
    """Where ``--replot CSV`` draws: the same name with .png."""
    return os.path.splitext(csv_path)[0] + ".png"


def try_plot(plot_fn: Callable[..., None], path: str, *args) -> None:
    """``plot_fn(path, *args)``, or a printed note when matplotlib is not installed (the CSV and
    Markdown are written already)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"[note] matplotlib is not installed: no {os.path.basename(path)} (pip install matplotlib)", flush=True)
        return
    plot_fn(path, *args)


def new_figure(nrows: int, ncols: int, size=(5.0, 3.6)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes


PROVIDER_ORDER = ("eager", "compile", "triton", "cuda", "cpp", "tks", "sj-torch", "sj-cuda", "sj-triton", "sj")


def provider_color(name: str):
    """One colour per provider in every panel and plot."""
    import matplotlib

    index = PROVIDER_ORDER.index(name) if name in PROVIDER_ORDER else len(PROVIDER_ORDER)
    return matplotlib.colormaps["tab10"](index % 10)


def finish_axis(ax, empty_text: str = "no provider ran") -> None:
    """Legend when something was drawn, else say why the panel is empty."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)


def save_figure(fig, path: str, what: str, tag: DeviceTag) -> None:
    """Title ``fig`` with what it shows and where it was measured, write it to ``path`` and close it."""
    import matplotlib.pyplot as plt

    fig.suptitle(f"{what} on {tag.name} (torch {tag.versions['torch']}, {tag.date})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
