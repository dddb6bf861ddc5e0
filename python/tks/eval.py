"""tks-eval: accuracy when testing at fewer timesteps than trained, per-step accuracy and AURC.

    tks-eval runs/digits-ce runs/digits-tks --out runs/compare

For each run (a ``tks-train`` folder) on its test set:

- top-1 accuracy at every T' = 1..T: the model run on the first T' steps of the input only (static
  images: repeated T' times; event frames: the first T' of the T frames), prediction = argmax of
  the mean output over those T' steps;
- the accuracy of each single step's output t = 1..T, from the run on all T steps;
- AURC x 1000 at every T' (confidence = the largest logit of the mean output, as the TKS authors).

A method whose deployed model runs at a fixed schedule reports its own (``Method.evaluate``): an
``ssnn`` run is tested at its stage T's only (its top-1 and AURC in the T' = T1 column, the
input's steps; plotted at its average timesteps), with its early-exit table and relative cost in
``ssnn_schedule.csv`` and ``early_exits.csv``.

Writes ``timesteps.csv`` (run, T', top-1, AURC), ``steps.csv`` (run, step, top-1) and
``accuracy_vs_timesteps.png`` (one line per run) into ``--out``, and prints the table.

Options that add an evaluation (each its own table, CSV and, where it helps, plot):

- ``--noise-snr -4,-2,0,2,4,6,8``: top-1 at the run's T with white Gaussian noise added to every
  test input at each SNR in dB (static data; ``tks.robustness``): ``noise.csv``,
  ``accuracy_vs_snr.png``.
- ``--energy``: per layer of every run its firing rate (spikes per input per step), synaptic
  operations (accumulates of spike-driven layers, MACs of layers fed by real values) and the 45 nm
  energy estimate (0.9 pJ per accumulate, 4.6 pJ per MAC; ``tks.energy``), per sample, on a fixed
  subset of ``--energy-samples`` test inputs; the totals side by side, with the ratio to each
  non-spiking run (``cnn1d``, counted as one evaluation): ``energy.csv``, ``energy_layers.csv``.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from typing import Optional

import torch
from torch.utils.data import DataLoader

from . import runs
from .data import DatasetNotFoundError, build_datasets
from .methods import METHODS

PLOT_FILE = "accuracy_vs_timesteps.png"
TIMESTEPS_FILE = "timesteps.csv"
STEPS_FILE = "steps.csv"
ENERGY_FILE = "energy.csv"
ENERGY_LAYERS_FILE = "energy_layers.csv"


class EvalOptionError(ValueError):
    """An option that does not fit the run (e.g. T' larger than the training T)."""


def aurc(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Area under the risk-coverage curve (Geifman et al.), in [0, 1]; lower is better.

    Samples sorted by ``confidence`` descending (ties keep the input order); the risk at coverage
    k/n is the error rate among the k most confident; AURC is the mean of the n risks.
    """
    confidence = torch.as_tensor(confidence).flatten().double()
    correct = torch.as_tensor(correct).flatten()
    if confidence.numel() != correct.numel() or confidence.numel() == 0:
        raise ValueError(f"confidence ({confidence.numel()}) and correct ({correct.numel()}) must be equal, non-empty")
    order = torch.sort(confidence, descending=True, stable=True).indices
    errors = (~correct.bool()[order]).double().cumsum(0)
    k = torch.arange(1, confidence.numel() + 1, dtype=torch.float64)
    return float((errors / k).mean())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tks-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=runs.HelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="tks-train run folders (or their checkpoint.pt)")
    p.add_argument("--T-max", type=int, default=None, help="test T' = 1..T_max (default: each run's training T)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/eval for one run, else ./tks-eval)")
    p.add_argument("--batch-size", type=int, default=256, help="test batch size")
    p.add_argument("--data-dir", default=None, help="where the dataset is (default: the run's --data-dir)")
    p.add_argument("--device", default="auto", help="auto (CUDA if there is one), cpu, cuda, ...")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--noise-snr", default=None, metavar="DB,DB,...",
                   help="also test with white Gaussian noise at these SNRs in dB, e.g. -4,-2,0,2,4,6,8 (static data)")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the --noise-snr noise (the same for every run)")
    p.add_argument("--energy", action="store_true",
                   help="also count per-layer firing rates, synaptic operations and the energy estimate")
    p.add_argument("--energy-samples", type=int, default=1000,
                   help="--energy counts on this many test inputs (a fixed random subset; all if fewer)")
    return p


def _fail(message: str) -> SystemExit:
    print(f"tks-eval: error: {message}", file=sys.stderr)
    return SystemExit(2)


@torch.no_grad()
def evaluate_run(run: str, *, T_max: Optional[int] = None, batch_size: int = 256, data_dir: Optional[str] = None,
                 device: str | torch.device = "cpu", num_workers: int = 0) -> dict:
    """Metrics of one run: ``{"label", "T", "timesteps": [(T', top1, aurc)], "steps": [(t, top1)]}``."""
    run_dir, ckpt_file = runs.find_run(run)
    ckpt = runs.load_checkpoint(ckpt_file or runs.checkpoint_path(run_dir))
    config = ckpt["config"]
    T = int(config["T"])
    T_max_given = T_max
    T_max = T if T_max is None else int(T_max)
    if not 1 <= T_max <= T:
        raise EvalOptionError(f"--T-max {T_max}: {run_dir} was trained with T={T}; test T' in 1..{T} (the input has "
                         f"{T} steps), so pass --T-max between 1 and {T}")
    _, test_set, _ = build_datasets(config["dataset"], T=T, data_dir=data_dir or config["data_dir"], augment=False)
    model = runs.model_from_config(config)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    about = {"run": run_dir, "label": _label(run_dir, _method(config)), "loss": _method(config), "T": T,
             "epoch": ckpt["epoch"], "n": len(test_set)}
    own = METHODS[_method(config)].evaluate(model, ckpt, loader, device=device, T_max=T_max_given)
    if own is not None:  # a method with its own evaluation (ssnn: its schedule, early exits, cost)
        return {**about, **own}

    prefix_logits = {t: [] for t in range(1, T_max + 1)}  # mean logits of the truncated runs
    step_correct, labels = [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        full = runs.model_outputs(model, x, T, config["static"]).float()  # [T, B, C]
        step_correct.append((full.argmax(-1) == y).cpu())  # [T, B]
        for t in range(1, T_max + 1):
            out = full if t == T else runs.model_outputs(model, x, t, config["static"]).float()
            prefix_logits[t].append(out.mean(0).cpu())
        labels.append(y.cpu())
    y = torch.cat(labels)
    timesteps = []
    for t in range(1, T_max + 1):
        mean = torch.cat(prefix_logits[t])
        correct = mean.argmax(-1) == y
        timesteps.append((t, correct.double().mean().item(), aurc(mean.max(-1).values, correct)))
    per_step = torch.cat(step_correct, 1).double().mean(1)
    return {**about, "timesteps": timesteps, "steps": [(t + 1, per_step[t].item()) for t in range(T)]}


def _checkpoint(run: str) -> tuple[str, dict, dict]:
    """``(run_dir, checkpoint, config)`` of a run folder (or its checkpoint file), for the added
    evaluations (``evaluate_run`` reads its own)."""
    run_dir, ckpt_file = runs.find_run(run)
    ckpt = runs.load_checkpoint(ckpt_file or runs.checkpoint_path(run_dir))
    return run_dir, ckpt, ckpt["config"]


def _model_and_test_set(ckpt: dict, config: dict, data_dir: Optional[str], device):
    """The run's trained model (eval mode, on ``device``) and its test set (no augmentation)."""
    _, test_set, _ = build_datasets(config["dataset"], T=int(config["T"]), data_dir=data_dir or config["data_dir"],
                                    augment=False)
    model = runs.model_from_config(config)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, test_set


@torch.no_grad()
def evaluate_noise(run: str, snrs: list[float], *, batch_size: int = 256, data_dir: Optional[str] = None,
                   device: str | torch.device = "cpu", num_workers: int = 0, seed: int = 0) -> dict:
    """Top-1 of one run at its T, clean and with white Gaussian noise at each SNR (dB):
    ``{"run", "label", "T", "clean", "noise": [(snr, top1)]}`` (``tks.robustness``)."""
    from . import robustness

    run_dir, ckpt, config = _checkpoint(run)
    if not config["static"]:
        raise EvalOptionError(f"--noise-snr: {run_dir} was trained on {config['dataset']}, event frames; the noise "
                              f"test adds white Gaussian noise to static inputs (signal windows, images)")
    model, test_set = _model_and_test_set(ckpt, config, data_dir, device)
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    T = int(config["T"])
    clean = _clean_accuracy(model, loader, T, device)
    noise = robustness.noise_accuracy(model, loader, T=T, snrs=snrs, device=device, seed=seed)
    return {"run": run_dir, "label": _label(run_dir, _method(config)), "T": T, "clean": clean, "noise": noise}


def _clean_accuracy(model, loader, T: int, device) -> float:
    correct = count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += int((runs.model_outputs(model, x, T, True).float().mean(0).argmax(-1) == y).sum())
        count += y.numel()
    return correct / max(count, 1)


@torch.no_grad()
def evaluate_energy(run: str, *, samples: int = 1000, batch_size: int = 256, data_dir: Optional[str] = None,
                    device: str | torch.device = "cpu") -> dict:
    """Per-layer operations of one run at its T on ``samples`` test inputs (a fixed random subset,
    all when the test set is smaller): ``{"run", "label", "model", "T", "ops": [LayerOps]}`` (``tks.energy``)."""
    from torch.utils.data import Subset

    from . import energy

    run_dir, ckpt, config = _checkpoint(run)
    model, test_set = _model_and_test_set(ckpt, config, data_dir, device)
    if len(test_set) > samples:
        idx = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))[:samples].sort().values
        test_set = Subset(test_set, idx.tolist())
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False)
    T, static = int(config["T"]), config["static"]

    def batches():
        for x, _ in loader:
            x = x.to(device)
            yield (lambda x=x: runs.model_outputs(model, x, T, static)), x.shape[0]

    ops = energy.count_dataset_operations(model, batches())
    return {"run": run_dir, "label": _label(run_dir, _method(config)), "model": config["model"], "T": T, "ops": ops}


def _method(config: dict) -> str:
    """The run's training method (``loss`` in runs written before methods had their own key)."""
    return config.get("method", config.get("loss"))


def _label(run_dir: str, loss: str) -> str:
    """The run folder's name, with the loss when the name does not say it."""
    name = os.path.basename(os.path.abspath(run_dir))
    return name if loss in name.split("-") or loss == name else f"{name} ({loss})"


def _write_csv(path: str, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    runs.atomic_write_bytes(path, buf.getvalue().encode())


def plot(results: list[dict], path: str) -> None:
    """Accuracy vs test timesteps T' (left) and per-step accuracy (right), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        # a method's own points (ssnn: its accuracy at its average timesteps) where it gives them
        ts = r.get("plot_timesteps") or [t for t, _, _ in r["timesteps"]]
        own = "plot_timesteps" in r
        ax_t.plot(ts, [100 * a for _, a, _ in r["timesteps"]], marker="*" if own else "o", markersize=12 if own else 6,
                  label=f"{r['label']}, " + (r.get("plot_label") or f"trained T={r['T']}"))
        ax_s.plot([t for t, _ in r["steps"]], [100 * a for _, a in r["steps"]], marker="s", label=r["label"])
    ax_t.set(xlabel="test timesteps T' (ssnn: average timesteps)", ylabel="top-1 accuracy (%)",
             title="Testing at fewer timesteps than trained")
    ax_s.set(xlabel="timestep t", ylabel="top-1 accuracy (%)", title="Accuracy of each step's output")
    for ax in (ax_t, ax_s):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def format_table(results: list[dict]) -> str:
    """One row per run: top-1 (%) at every T' (blank where T' is beyond what the run was tested
    at), then AURC x 1000 at the run's largest T', in its own column."""
    t_max = max(t for r in results for t, _, _ in r["timesteps"])
    width = max(len(r["label"]) for r in results)
    head = f"{'run':<{width}}  " + "  ".join(f"T'={t:<3}" for t in range(1, t_max + 1)) + "  AURCx1000"
    lines = [head, "-" * len(head)]
    for r in results:
        by_t = {t: a for t, a, _ in r["timesteps"]}
        accs = "  ".join(f"{100 * by_t[t]:6.2f}" if t in by_t else " " * 6 for t in range(1, t_max + 1))
        lines.append(f"{r['label']:<{width}}  {accs}  {1000 * r['timesteps'][-1][2]:9.2f}")
    return "\n".join(lines)


def method_tables(results: list[dict]) -> dict[str, dict]:
    """The tables methods add to their runs' results (``Method.evaluate``: ssnn's schedule and early
    exits), by name: ``{"title", "header", "rows": [(result, row)]}``, every run's rows in order."""
    tables: dict[str, dict] = {}
    for r in results:
        for t in r.get("tables", ()):
            table = tables.setdefault(t["name"], {"title": t["title"], "header": list(t["header"]), "rows": []})
            table["rows"] += [(r, list(row)) for row in t["rows"]]
    return tables


def format_rows(header: list[str], rows: list[list]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--noise-snr -4,-2,0`` as ``--noise-snr=-4,-2,0``: argparse takes a value that starts with
    ``-`` (and is not one number) for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--noise-snr" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"--noise-snr={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(_join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.T_max is not None and args.T_max < 1:
        raise _fail(f"--T-max {args.T_max}: must be >= 1")
    snrs = None
    if args.noise_snr is not None:
        from .robustness import parse_snrs

        try:
            snrs = parse_snrs(args.noise_snr)
        except ValueError as e:
            raise _fail(str(e))
    if args.energy_samples < 1:
        raise _fail(f"--energy-samples {args.energy_samples}: must be >= 1")
    out = args.out or (os.path.join(args.runs[0], "eval") if len(args.runs) == 1 else "tks-eval")
    results = []
    for run in args.runs:
        try:
            results.append(evaluate_run(run, T_max=args.T_max, batch_size=args.batch_size, data_dir=args.data_dir,
                                        device=device, num_workers=args.num_workers))
        except (runs.CheckpointError, DatasetNotFoundError, FileNotFoundError, EvalOptionError) as e:
            raise _fail(f"{run}: {e}")
    os.makedirs(out, exist_ok=True)
    _write_csv(os.path.join(out, TIMESTEPS_FILE), ["run", "loss", "T_train", "T_test", "top1", "aurc_x1000"],
               [[r["run"], r["loss"], r["T"], t, f"{a:.6f}", f"{1000 * u:.4f}"] for r in results
                for t, a, u in r["timesteps"]])
    _write_csv(os.path.join(out, STEPS_FILE), ["run", "loss", "T_train", "step", "top1"],
               [[r["run"], r["loss"], r["T"], t, f"{a:.6f}"] for r in results for t, a in r["steps"]])
    plot(results, os.path.join(out, PLOT_FILE))
    sizes = ", ".join(sorted({str(r["n"]) for r in results}))
    print(f"top-1 accuracy (%) at test timesteps T' (the first T' steps of the input; {sizes} test samples)")
    print(format_table(results))
    for r in results:
        if r.get("note"):
            print(f"{r['label']}: {r['note']}")
    written = [os.path.join(out, TIMESTEPS_FILE), os.path.join(out, STEPS_FILE)]
    for name, table in method_tables(results).items():
        written.append(os.path.join(out, f"{name}.csv"))
        _write_csv(written[-1], ["run", "loss", *table["header"]],
                   [[r["run"], r["loss"], *row] for r, row in table["rows"]])
        shown = format_rows(["run", *table["header"]], [[r["label"], *row] for r, row in table["rows"]])
        print(f"\n{table['title']}\n{shown}")
    print(f"\nwritten: {', '.join(written)}, plot {os.path.join(out, PLOT_FILE)}")
    if snrs is not None:
        _report_noise(args, snrs, device, out)
    if args.energy:
        _report_energy(args, device, out)
    return 0


def _report_noise(args, snrs: list[float], device, out: str) -> None:
    """``--noise-snr``: every run's top-1 at each SNR; table, ``noise.csv``, ``accuracy_vs_snr.png``."""
    from . import robustness

    results = []
    for run in args.runs:
        try:
            results.append(evaluate_noise(run, snrs, batch_size=args.batch_size, data_dir=args.data_dir, device=device,
                                          num_workers=args.num_workers, seed=args.noise_seed))
        except (runs.CheckpointError, DatasetNotFoundError, FileNotFoundError, EvalOptionError) as e:
            raise _fail(f"{run}: {e}")
    csv_path, plot_path = os.path.join(out, robustness.NOISE_CSV), os.path.join(out, robustness.NOISE_PLOT)
    _write_csv(csv_path, ["run", "T", "snr_db", "top1"],
               [[r["run"], r["T"], "clean", f"{r['clean']:.6f}"] for r in results]
               + [[r["run"], r["T"], f"{s:g}", f"{a:.6f}"] for r in results for s, a in r["noise"]])
    robustness.plot_noise(results, plot_path)
    print(f"\ntop-1 accuracy (%) with white Gaussian noise at each SNR (at the training T; noise seed {args.noise_seed})")
    print(robustness.format_noise_table(results))
    print(f"\nwritten: {csv_path}, plot {plot_path}")


def _report_energy(args, device, out: str) -> None:
    """``--energy``: per-layer firing rates, synaptic operations and energy of every run; tables,
    ``energy.csv`` (totals) and ``energy_layers.csv``."""
    from . import energy

    results = []
    for run in args.runs:
        try:
            results.append(evaluate_energy(run, samples=args.energy_samples, batch_size=args.batch_size,
                                           data_dir=args.data_dir, device=device))
        except (runs.CheckpointError, DatasetNotFoundError, FileNotFoundError, EvalOptionError) as e:
            raise _fail(f"{run}: {e}")
    totals_path, layers_path = os.path.join(out, ENERGY_FILE), os.path.join(out, ENERGY_LAYERS_FILE)
    rows = []
    for r in results:
        t = energy.summarize(r["ops"])
        rows.append([r["run"], r["model"], r["T"], f"{t['acs']:.1f}", f"{t['macs']:.1f}", f"{t['dense_ops']:.1f}",
                     f"{energy.mean_firing_rate(r['ops']):.6f}", f"{t['energy_pj']:.1f}"])
    _write_csv(totals_path, ["run", "model", "T", "acs", "macs", "dense_ops", "firing_rate", "energy_pj"], rows)
    _write_csv(layers_path, ["run", "layer", "kind", "fed_by_spikes", "firing_rate", "steps", "acs", "macs",
                             "dense_ops", "energy_pj"],
               [[r["run"], o.name, o.kind, int(o.fed_by_spikes), f"{o.firing_rate:.6f}", f"{o.steps:g}", f"{o.acs:.1f}",
                 f"{o.macs:.1f}", f"{o.dense_ops:.1f}", f"{o.energy_pj:.1f}"] for r in results for o in r["ops"]])
    print("\nenergy per sample at the training T (45 nm: 0.9 pJ per accumulate, 4.6 pJ per MAC; "
          "rate: spikes per input per step of the layers fed by spikes)")
    for r in results:
        print()
        print(energy.format_layer_table(r["label"], r["ops"]))
    print()
    print(energy.format_energy_table(results))
    print(f"\nwritten: {totals_path}, {layers_path}")


if __name__ == "__main__":
    sys.exit(main())
