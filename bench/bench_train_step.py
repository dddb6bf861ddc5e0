"""Benchmark one training step (forward, TKS loss, backward, optimizer step) of the TKS models:
our model vs the same architecture, same weights, with spikingjelly 2.0.0's neurons.

Models: VGG-SNN (T=10, 2x48x48 event frames, 10 classes) and ResNet-19 (T=4, 3x32x32 static
images repeated over T, 10 classes), built by ``tks.models.build_model`` with the TKS authors'
neuron settings (LIF, tau 2, threshold 0.5, hard reset to 0, piecewise-quadratic surrogate, alpha 2).

Providers (each skipped, with the reason printed, when it cannot run here):
  tks    the model as built (neurons: tks_kernels.lif_multistep, backend "auto": cuda or triton on
         a GPU, cpp or torch on a CPU)
  eager  the same model with the neurons on the eager reference (backend "torch")
  sj     the same model with every neuron swapped for spikingjelly's LIFNode(step_mode='m') with
         identical settings (spikingjelly picks its own fastest implementation; its state is
         reset before each step, as spikingjelly requires)
The loss is tks_kernels.tks_loss(lam=0.7, temperature=3, backend="auto") for every provider, so
the comparison isolates the neurons. Optimizer: SGD, momentum 0.9.

With ``--method ce,tks,tssd,trt,ssnn`` the script instead measures one training step of each
training method of ``tks.methods`` (its whole forward: TSSD's teacher pass and weak classifier,
TRT's reversed pass and star, SSNN's shrinking stages and early classifiers; its loss; backward;
AdamW step) on our neurons, against ``ce`` on the same model, weights and T (SSNN: its default
schedule from T1 = T, in the ``stage_T`` column): step time, the bytes autograd saves for
backward (any device) and the CUDA peak (GPU only). Each method's model is built as its runs
build it (``Method.build_model``). Results go to ``train_step_methods.csv`` / ``.md`` / ``.png``.

Usage:  python bench/bench_train_step.py [--quick] [--out DIR] [--method ce,tssd,trt]   (see bench/README.md)
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import common as C  # noqa: E402

ALL_PROVIDERS = ("tks", "eager", "sj")
LOSS_KWARGS = dict(lam=0.7, temperature=3.0)
# name -> (T, in_channels, image size, classes, input is a sequence of frames)
MODELS = {
    "vggsnn": dict(T=10, in_channels=2, image_size=48, num_classes=10, sequence=True),
    "resnet19": dict(T=4, in_channels=3, image_size=32, num_classes=10, sequence=False),
}
METHOD_COLUMNS = ["model", "method", "T", "data_T", "stage_T", "batch", "image_size", "width", "status", "median_ms", "q20_ms",
                  "q80_ms", "overhead_vs_ce", "saved_mb", "saved_vs_ce", "peak_step_mb", "parts"]
COLUMNS = ["model", "provider", "T", "batch", "image_size", "width", "status", "median_ms", "q20_ms", "q80_ms",
           "samples_per_s", "speedup_vs_sj", "speedup_vs_eager", "peak_step_mb", "logits_rel_err",
           "neurons", "neuron_backend", "loss_backend"]
# our surrogate names -> spikingjelly 2.0.0 surrogate classes (activation_based.surrogate)
SJ_SURROGATES = {
    "sigmoid": "Sigmoid", "atan": "ATan", "piecewise_quadratic": "PiecewiseQuadratic", "erf": "Erf",
    "piecewise_exp": "PiecewiseExp", "soft_sign": "SoftSign", "super_spike": "SuperSpike", "rect": "Rect",
}


def load_build_model():
    """``tks.models.build_model`` or the reason it is not there."""
    try:
        from tks.models import build_model
    except ImportError as e:
        raise RuntimeError(f"tks.models.build_model is not in this build of tks (merge the train branch): {e}") from e
    return build_model


# --------------------------------------------------------------------------------------------
# neuron surgery


def _neuron_settings(module: nn.Module):
    """LIF settings of one of our neuron modules as a dict, or None when ``module`` is not one.

    Knows ``tks.models.MultiStepLIF`` (a ``NeuronConfig`` in ``.neuron``) and ``tks.LIFNode``."""
    cfg = getattr(module, "neuron", None)
    if cfg is not None and dataclasses.is_dataclass(cfg) and hasattr(cfg, "surrogate"):
        return dict(tau=cfg.tau, v_threshold=cfg.v_threshold, v_reset=cfg.v_reset, decay_input=cfg.decay_input,
                    detach_reset=cfg.detach_reset, surrogate=(cfg.surrogate, cfg.alpha))
    try:
        import tks

        lif_cls = getattr(tks, "LIFNode", None)
    except ImportError:
        lif_cls = None
    if lif_cls is not None and type(module) is lif_cls:
        sg = module.surrogate_function
        if isinstance(sg, str):
            sg = (sg, None)
        return dict(tau=module.tau, v_threshold=module.v_threshold, v_reset=module.v_reset,
                    decay_input=module.decay_input, detach_reset=module.detach_reset, surrogate=sg)
    return None


def _set_backend(module: nn.Module, backend: str) -> bool:
    cfg = getattr(module, "neuron", None)
    if cfg is not None and dataclasses.is_dataclass(cfg) and hasattr(cfg, "backend"):
        module.neuron = dataclasses.replace(cfg, backend=backend)
        return True
    if _neuron_settings(module) is not None and hasattr(module, "backend"):
        module.backend = backend
        return True
    return False


def set_neuron_backend(model: nn.Module, backend: str) -> int:
    return sum(_set_backend(m, backend) for m in model.modules())


def to_spikingjelly(model: nn.Module) -> int:
    """Swap, in place, every one of our LIF neurons for spikingjelly's ``LIFNode(step_mode='m')``
    with identical settings (the inverse of ``tks.replace_neurons``). Returns how many."""
    from spikingjelly.activation_based import neuron, surrogate
    from tks_kernels.lif.surrogate import default_alpha

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            s = _neuron_settings(child) if child is not None else None
            if s is None:
                continue
            sg = s["surrogate"]
            if isinstance(sg, tuple):
                sg_name, alpha = sg
                alpha = alpha if alpha is not None else default_alpha(sg_name)
                sg = getattr(surrogate, SJ_SURROGATES[sg_name])(alpha=alpha)
            if s["tau"] is None:
                raise RuntimeError("an IF neuron (tau=None) in the model; this benchmark swaps LIF neurons only")
            parent._modules[name] = neuron.LIFNode(
                tau=float(s["tau"]), decay_input=s["decay_input"], v_threshold=s["v_threshold"], v_reset=s["v_reset"],
                surrogate_function=sg, detach_reset=s["detach_reset"], step_mode="m",
            )
            count += 1
    return count


def count_neurons(model: nn.Module) -> int:
    return sum(_neuron_settings(m) is not None for m in model.modules())


# --------------------------------------------------------------------------------------------


def build_sweep(args, device):
    """[(model, batch, width)]."""
    gpu = device.type == "cuda"
    if args.smoke:
        plan = [("vggsnn", 1, 1 / 32), ("resnet19", 1, 1 / 32)]
    elif args.quick:
        plan = [("vggsnn", 8, 1.0), ("resnet19", 16, 1.0)] if gpu else [("vggsnn", 1, 0.125), ("resnet19", 2, 0.125)]
    else:
        plan = [("vggsnn", 32, 1.0), ("resnet19", 64, 1.0)] if gpu else [("vggsnn", 2, 1.0), ("resnet19", 4, 1.0)]
    models = C.parse_list(args.models)
    if models:
        for m in models:
            if m not in MODELS:
                raise SystemExit(f"--models: unknown {m!r}; choose from {', '.join(MODELS)}")
        plan = [p for p in plan if p[0] in models] or [(m, plan[0][1], plan[0][2]) for m in models]
    if args.batch:
        plan = [(m, args.batch, w) for m, _, w in plan]
    if args.width:
        plan = [(m, b, args.width) for m, b, _ in plan]
    return plan


def make_inputs(spec, batch, device, gen):
    T, c, s = spec["T"], spec["in_channels"], spec["image_size"]
    if spec["sequence"]:  # event frames: sparse non-negative counts
        x = (torch.rand(T, batch, c, s, s, generator=gen) < 0.1).float()
    else:
        x = torch.randn(batch, c, s, s, generator=gen)
    y = torch.randint(0, spec["num_classes"], (batch,), generator=gen)
    return x.to(device), y.to(device)


def run_model(model_name, batch, width, args, device, providers, skips, warmup_ms, rep_ms):
    spec = MODELS[model_name]
    where = f"{model_name}, batch {batch}, width {width:g}"
    print(f"-- {where}", flush=True)
    base_row = dict(model=model_name, T=spec["T"], batch=batch, image_size=spec["image_size"], width=width)
    try:
        build_model = load_build_model()
        import tks_kernels

        if not hasattr(tks_kernels, "tks_loss"):
            raise RuntimeError("tks_kernels.tks_loss is not in this build of tks_kernels (merge the tksloss branch)")
        torch.manual_seed(0)
        base = build_model(model_name, num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                           image_size=spec["image_size"], width=width).to(device)
    except Exception as e:
        reason = skips.skip("all providers", C.describe_error(e), where)
        return [dict(base_row, provider=p, status="skipped: " + reason) for p in providers]
    gen = torch.Generator(device="cpu").manual_seed(1)
    x, y = make_inputs(spec, batch, device, gen)
    T_arg = None if spec["sequence"] else spec["T"]

    def loss_fn(logits):
        return tks_kernels.tks_loss(logits, y, backend="auto", **LOSS_KWARGS)

    loss_backend = _auto_backend("tks_loss", x.device)
    neuron_backend = {"tks": _auto_backend("lif", x.device), "eager": "torch", "sj": None}
    rows, ref_logits = [], None
    for name in providers:
        row = dict(base_row, provider=name, loss_backend=loss_backend, neuron_backend=neuron_backend[name])
        model = None
        try:
            model = copy.deepcopy(base)
            reset = None
            if name == "eager":
                row["neurons"] = set_neuron_backend(model, "torch")
            elif name == "sj":
                try:
                    from spikingjelly.activation_based import functional as sj_functional
                except ImportError as e:
                    raise RuntimeError(f"spikingjelly is not installed ({e}); pip install spikingjelly==2.0.0") from e
                row["neurons"] = to_spikingjelly(model)
                row["neuron_backend"] = _sj_backend(device)
                reset = sj_functional.reset_net
            else:
                row["neurons"] = count_neurons(model)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

            def step():
                if reset is not None:
                    reset(model)
                opt.zero_grad(set_to_none=True)
                logits = model(x, T=T_arg)
                loss_fn(logits).backward()
                opt.step()
                return logits

            # agreement: logits of the first forward (same weights, same input) vs the tks provider
            with torch.no_grad():
                if reset is not None:
                    reset(model)
                logits = model(x, T=T_arg).float()
            if name == "tks":
                ref_logits = logits
            elif ref_logits is not None:
                row["logits_rel_err"] = C.rel_err(logits, ref_logits)
            del logits
            step()  # allocates the optimizer state and warms caches / kernels
            _, peak = C.peak_bytes(step, device)
            row["peak_step_mb"] = peak / 1e6
            med, q20, q80 = C.bench(step, device, warmup_ms, rep_ms)
            row.update(status="ok", median_ms=med, q20_ms=q20, q80_ms=q80, samples_per_s=batch / (med * 1e-3))
            print(f"   {name:<6} {med:10.3f} ms  [{q20:.3f}, {q80:.3f}]  {row['samples_per_s']:.1f} samples/s"
                  f"  peak {C.fmt(row['peak_step_mb'])} MB  ({row['neurons']} neurons)", flush=True)
        except Exception as e:
            if C.is_out_of_memory(e):
                row["status"] = "error: " + C.describe_error(e, 160)
                print(f"[error] {name} ({where}): {row['status']}", flush=True)
            else:
                row["status"] = "skipped: " + skips.skip(name, C.describe_error(e), where)
        del model
        C.free_memory(device)
        rows.append(row)
    ok = {r["provider"]: r["median_ms"] for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok":
            for peer in ("sj", "eager"):
                if peer in ok:
                    r[f"speedup_vs_{peer}"] = ok[peer] / r["median_ms"]
    return rows


def run_methods(model_name, batch, width, methods, device, skips, warmup_ms, rep_ms):
    """One training step of each method in ``methods`` on our neurons: rows of METHOD_COLUMNS."""
    from tks.data.common import DataInfo
    from tks.methods import METHODS, MethodNet, build_method, resolve_hparams
    from tks.models import NeuronConfig

    spec = MODELS[model_name]
    T, static = spec["T"], not spec["sequence"]
    info = DataInfo(model_name, spec["num_classes"], spec["in_channels"], spec["image_size"], static, model_name,
                    lam=0.7 if static else 0.3, temperature=3.0 if static else 5.0)
    where = f"{model_name}, batch {batch}, width {width:g}"
    print(f"-- {where}: training methods", flush=True)
    load_build_model()  # the reason it is missing, if it is
    rows = []
    for name in methods:
        row = dict(model=model_name, method=name, T=T, batch=batch, image_size=spec["image_size"], width=width)
        try:
            hparams = resolve_hparams(name, {}, info, T)
            method = build_method(name, hparams, epochs=10, T=T, static=static)
            method.set_epoch(5)  # mid-schedule (TKS's lambda > 0): the speed does not depend on it
            torch.manual_seed(0)  # the same weights for every method (the zoo model's come first)
            # the model as a run of this method builds it (ssnn: the shrinking network at its schedule)
            config = dict(model=model_name, num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                          image_size=spec["image_size"], width=width, T=T,
                          neuron=dataclasses.asdict(NeuronConfig()), **hparams)
            model = METHODS[name].build_model(config)
            net = MethodNet(model, method, info).to(device).train()
            row["data_T"] = method.data_T()
            row["stage_T"] = ",".join(map(str, getattr(model, "stage_T", ())))
            gen = torch.Generator(device="cpu").manual_seed(1)
            x, y = make_inputs(dict(spec, T=method.data_T()), batch, device, gen)
            if not static:
                x = x.transpose(0, 1).contiguous()  # the loader's layout [B, T, ...]
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

            def forward_loss():
                return method.loss(net(x), y)

            def step():
                opt.zero_grad(set_to_none=True)
                loss, _ = forward_loss()
                loss.backward()
                opt.step()

            (loss, parts), saved, _ = C.saved_for_backward(forward_loss)
            row["saved_mb"] = saved / 1e6
            row["parts"] = " ".join(sorted(parts))
            del loss, parts
            step()
            _, peak = C.peak_bytes(step, device)
            row["peak_step_mb"] = peak / 1e6
            med, q20, q80 = C.bench(step, device, warmup_ms, rep_ms)
            row.update(status="ok", median_ms=med, q20_ms=q20, q80_ms=q80)
            print(f"   {name:<5} {med:10.3f} ms  [{q20:.3f}, {q80:.3f}]  saved {row['saved_mb']:.1f} MB"
                  f"  peak {C.fmt(row['peak_step_mb'])} MB", flush=True)

        except Exception as e:
            row["status"] = "skipped: " + skips.skip(name, C.describe_error(e), where)
        C.free_memory(device)
        rows.append(row)
    ce = next((r for r in rows if r["method"] == "ce" and r["status"] == "ok"), None)
    for r in rows:
        if ce is not None and r["status"] == "ok":
            r["overhead_vs_ce"] = r["median_ms"] / ce["median_ms"]
            r["saved_vs_ce"] = r["saved_mb"] / ce["saved_mb"]
    return rows


def write_method_outputs(out_dir, rows, tag, skip_reasons):
    os.makedirs(out_dir, exist_ok=True)
    C.write_csv(os.path.join(out_dir, "train_step_methods.csv"), rows, METHOD_COLUMNS, tag)
    md = [C.md_header("Training step of each training method (tks.methods) against ce", tag, C.command_line())]
    md.append("- one step = the method's forward (every pass it makes), its loss, backward, AdamW step, on our "
              "neurons (backend auto); median ms [20%, 80%]; x ce: time over ce's on the same model, weights and T; "
              "saved: bytes autograd keeps for backward (unique storages); peak: CUDA only\n")
    table = [(r["model"], r["method"], str(r["T"]), str(r.get("data_T", "")), r.get("stage_T", ""), str(r["batch"]),
              C.fmt(r["width"]),
              f"{C.fmt(r.get('median_ms'))} [{C.fmt(r.get('q20_ms'))}, {C.fmt(r.get('q80_ms'))}]" if r["status"] == "ok"
              else r["status"][:80], C.fmt(r.get("overhead_vs_ce")), C.fmt(r.get("saved_mb")),
              C.fmt(r.get("saved_vs_ce")), C.fmt(r.get("peak_step_mb")), r.get("parts", ""))
             for r in rows]
    md.append(C.md_table(("model", "method", "T", "data T", "stage T", "batch", "width", "step ms", "x ce", "saved MB",
                          "saved x ce", "peak MB", "loss parts"), table) + "\n")
    md.extend(C.md_skipped(skip_reasons))
    md.append("## Targets\n\nNone set; the abstracts claim TRT's overhead is small and TSSD's is not: the table "
              "measures it.\n")
    C.write_markdown(os.path.join(out_dir, "train_step_methods.md"), md)
    C.try_plot(plot_methods, os.path.join(out_dir, "train_step_methods.png"), rows, tag)


def plot_methods(path, rows, tag):
    fig, axes = C.new_figure(1, 2, size=(5.0, 3.6))
    models = sorted({r["model"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(len(methods), 1)
    for col, key, label in ((0, "overhead_vs_ce", "step time / ce's"), (1, "saved_vs_ce", "saved for backward / ce's")):
        ax = axes[0][col]
        for k, m in enumerate(methods):
            vals = [next((r.get(key) for r in rows if r["model"] == mo and r["method"] == m and r["status"] == "ok"),
                         None) for mo in models]
            ax.bar([i + k * width for i in range(len(models))], [float("nan") if v is None else v for v in vals],
                   width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))])
        ax.set_xticklabels(models)
        ax.set_ylabel(label)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.grid(True, axis="y", alpha=0.3)
        C.finish_axis(ax, "no method ran")
    C.save_figure(fig, path, "Training step per method", tag)


def _auto_backend(op: str, device) -> str:
    """What backend="auto" resolves to for ``op`` ("lif" or "tks_loss") on ``device``."""
    try:
        import importlib

        from tks_kernels._backends import resolve_backend

        module = importlib.import_module(f"tks_kernels.{op}")
        name = resolve_backend("auto", torch.zeros(2, 2, 2, device=device), op, module._extension_reason)
        return f"auto ({name})"
    except Exception as e:
        return f"auto (unknown: {type(e).__name__})"


def _sj_backend(device) -> str:
    if device.type != "cuda":
        return "spikingjelly (torch reference on CPU)"
    try:
        from spikingjelly.activation_based.functional import neuron_implementation

        return f"spikingjelly ({neuron_implementation('lif', device)['implementation']})"
    except Exception as e:
        return f"spikingjelly (unknown: {type(e).__name__})"


def write_outputs(out_dir, rows, tag, skip_reasons):
    os.makedirs(out_dir, exist_ok=True)
    C.write_csv(os.path.join(out_dir, "train_step.csv"), rows, COLUMNS, tag)
    md = [C.md_header("Training step benchmark: tks models vs the same models on spikingjelly neurons", tag,
                      C.command_line())]
    md.append("- one step = forward, tks_loss (lam 0.7, temperature 3), backward, SGD step; median ms "
              "[20%, 80%]; peak: CUDA memory above parameters + optimizer state (blank on CPU); logits rel err: "
              "first forward vs the tks provider, same weights and input\n")
    table = [(r["model"], str(r["T"]), str(r["batch"]), C.fmt(r["width"]), r["provider"],
              f"{C.fmt(r.get('median_ms'))} [{C.fmt(r.get('q20_ms'))}, {C.fmt(r.get('q80_ms'))}]" if r["status"] == "ok"
              else r["status"][:80],
              C.fmt(r.get("samples_per_s")), C.fmt(r.get("speedup_vs_sj")), C.fmt(r.get("speedup_vs_eager")),
              C.fmt(r.get("peak_step_mb")), C.fmt(r.get("logits_rel_err")), str(r.get("neurons", "")),
              r.get("neuron_backend") or "", r.get("loss_backend") or "")
             for r in rows]
    md.append(C.md_table(("model", "T", "batch", "width", "provider", "step ms", "samples/s", "x sj", "x eager",
                          "peak MB", "logits rel err", "neurons", "neuron backend", "loss backend"), table) + "\n")
    md.extend(C.md_skipped(skip_reasons))
    md.append("## Targets\n\nNone set for the training step; reported for information.\n")
    C.write_markdown(os.path.join(out_dir, "train_step.md"), md)
    C.try_plot(plot, os.path.join(out_dir, "train_step.png"), rows, tag)


def plot(path, rows, tag):
    fig, axes = C.new_figure(1, 2, size=(5.0, 3.6))
    models = sorted({r["model"] for r in rows})
    providers = [p for p in ALL_PROVIDERS if any(r["provider"] == p for r in rows)]
    width = 0.8 / max(len(providers), 1)
    for col, key, label in ((0, "median_ms", "step time (ms, median)"), (1, "peak_step_mb", "peak memory (MB)")):
        ax = axes[0][col]
        for k, p in enumerate(providers):
            vals = []
            for m in models:
                r = next((r for r in rows if r["model"] == m and r["provider"] == p and r["status"] == "ok"), None)
                v = r.get(key) if r else None
                vals.append(float("nan") if v in (None, "") else v)
            if all(v != v for v in vals):  # all NaN: nothing measured (peak memory on CPU)
                continue
            ax.bar([i + k * width for i in range(len(models))], vals, width, label=p, color=C.provider_color(p))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))])
        ax.set_xticklabels(models)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        C.finish_axis(ax, "not measured (CUDA only)" if key == "peak_step_mb" else "no provider ran")
    C.save_figure(fig, path, "Training step", tag)


def main(argv=None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated: vggsnn,resnet19")
    p.add_argument("--batch", type=int, default=None, help="batch size (overrides the sweep)")
    p.add_argument("--width", type=float, default=None, help="channel width multiplier (1.0 = the paper's models)")
    p.add_argument("--method", default=None,
                   help="comma-separated training methods of tks.methods (e.g. ce,tks,tssd,trt): time each one's "
                        "step against ce instead of comparing neuron providers")
    args = p.parse_args(argv)
    if args.replot:
        rows, tag = C.read_rows(args.replot)
        (plot_methods if "method" in (rows[0] if rows else {}) else plot)(C.png_beside(args.replot), rows, tag)
        return 0
    if args.method:
        return main_methods(args)
    device = C.pick_device(args)
    wanted = C.wanted_providers(args, ALL_PROVIDERS)
    if "tks" in wanted:  # first: the reference logits of the agreement check
        wanted = ["tks"] + [w for w in wanted if w != "tks"]
    tag = C.announce_device(device, args.note)
    # a step takes 10-1000 ms: a longer budget than the kernels' (at least 5 timed steps anyway)
    warmup_ms, rep_ms = C.timing_budget(args, device, scale=1.0 if args.smoke else 2.0 if args.quick else 5.0)
    skips = C.SkipLog()
    rows = []
    for model_name, batch, width in build_sweep(args, device):
        rows.extend(run_model(model_name, batch, width, args, device, wanted, skips, warmup_ms, rep_ms))
    tag.finish()
    print("\n== targets ==\nnone set for the training step; reported for information")
    out_dir = args.out or C.default_out_dir(tag)
    write_outputs(out_dir, rows, tag, skips.reasons)
    print(f"\nwrote {out_dir}/train_step.csv, train_step.md, train_step.png", flush=True)
    return 0


def main_methods(args) -> int:
    from tks.methods import METHODS

    methods = C.parse_list(args.method)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--method: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if "ce" not in methods:
        methods = ["ce"] + methods  # the reference of every ratio
    device = C.pick_device(args)
    tag = C.announce_device(device, args.note)
    warmup_ms, rep_ms = C.timing_budget(args, device, scale=1.0 if args.smoke else 2.0 if args.quick else 5.0)
    skips = C.SkipLog()
    rows = []
    for model_name, batch, width in build_sweep(args, device):
        rows.extend(run_methods(model_name, batch, width, methods, device, skips, warmup_ms, rep_ms))
    tag.finish()
    print("\n== targets ==\nnone set; the method overheads are reported for information")
    out_dir = args.out or C.default_out_dir(tag)
    write_method_outputs(out_dir, rows, tag, skips.reasons)
    print(f"\nwrote {out_dir}/train_step_methods.csv, train_step_methods.md, train_step_methods.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
