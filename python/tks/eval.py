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


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.T_max is not None and args.T_max < 1:
        raise _fail(f"--T-max {args.T_max}: must be >= 1")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
