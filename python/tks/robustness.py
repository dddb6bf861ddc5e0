"""Accuracy under additive white Gaussian noise, for ``tks-eval --noise-snr`` (bearing signals, issue 15).

For each requested SNR (dB) every test input gets white Gaussian noise of power ``P / 10^(SNR/10)``,
``P`` the input's own mean square (``tks.data.add_noise_snr``, input by input), and the run is
tested at its training T (prediction: the argmax of the mean output over the T steps). The noise
is drawn from a generator seeded by ``(seed, SNR index)`` in the loader's fixed order, so every run
compared in one ``tks-eval`` call sees the same noisy inputs, and a rerun the same numbers.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterable

import torch

from . import runs
from .data import add_noise_snr

NOISE_CSV = "noise.csv"
NOISE_PLOT = "accuracy_vs_snr.png"


def parse_snrs(text: str) -> list[float]:
    """``"-4,-2,0"`` -> ``[-4.0, -2.0, 0.0]``; ValueError naming the bad item otherwise."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ValueError(f"--noise-snr {text!r}: give SNRs in dB separated by commas, e.g. -4,-2,0,2,4,6,8")
    out = []
    for s in items:
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"--noise-snr {text!r}: {s!r} is not a number (SNRs in dB, e.g. -4,-2,0,2,4,6,8)") from None
        if not math.isfinite(v):
            raise ValueError(f"--noise-snr {text!r}: {s!r} must be a finite SNR in dB")
        out.append(v)
    return out


@torch.no_grad()
def noise_accuracy(model: torch.nn.Module, loader: Iterable, *, T: int, snrs: list[float], device,
                   seed: int = 0, model_input: Callable = lambda x: x) -> list[tuple[float, float]]:
    """``[(snr_db, top-1)]`` of ``model`` (static inputs, run for ``T`` steps) on ``loader`` with
    noise at each SNR. ``model_input`` maps a loader batch to the model's input (identity)."""
    model.eval()
    out = []
    for i, snr in enumerate(snrs):
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
        correct = count = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            noisy = add_noise_snr(model_input(x), snr, generator=gen)
            mean = runs.model_outputs(model, noisy, T, True).float().mean(0)
            correct += int((mean.argmax(-1) == y).sum())
            count += y.numel()
        out.append((snr, correct / max(count, 1)))
    return out


def format_noise_table(results: list[dict]) -> str:
    """One row per run (``{"label", "T", "clean", "noise": [(snr, top1)]}``): top-1 (%) clean and at each SNR."""
    snrs = [s for s, _ in results[0]["noise"]]
    width = max(len(r["label"]) for r in results)
    head = f"{'run':<{width}}  {'T':>2}  {'clean':>6}  " + "  ".join(f"{f'{s:g} dB':>6}" for s in snrs)
    lines = [head, "-" * len(head)]
    for r in results:
        accs = "  ".join(f"{100 * a:6.2f}" for _, a in r["noise"])
        lines.append(f"{r['label']:<{width}}  {r['T']:>2}  {100 * r['clean']:6.2f}  {accs}")
    return "\n".join(lines)


def plot_noise(results: list[dict], path: str) -> None:
    """Top-1 accuracy against the SNR, one line per run (its clean accuracy dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in results:
        line, = ax.plot([s for s, _ in r["noise"]], [100 * a for _, a in r["noise"]], marker="o",
                        label=f"{r['label']}, T={r['T']}")
        ax.axhline(100 * r["clean"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set(xlabel="SNR of the test inputs (dB)", ylabel="top-1 accuracy (%)",
           title="Accuracy under white Gaussian noise (dotted: clean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = ["parse_snrs", "noise_accuracy", "format_noise_table", "plot_noise", "NOISE_CSV", "NOISE_PLOT"]
