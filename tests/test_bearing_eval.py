"""Bearing faults end to end: tks-train on bearing-sim (mra_snn by default, cnn1d), then tks-eval with
--noise-snr and --energy; the noise the evaluation adds measures at the SNR asked for."""
import csv
import math

import pytest
import torch
from torch import nn

from tks import eval as tks_eval
from tks import robustness, train

TINY = ["--dataset", "bearing-sim", "--width", "0.125", "--T", "2", "--batch-size", "32", "--max-batches", "2",
        "--epochs", "1", "--method", "ce"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bearing_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bearing")
    data = str(root / "data")
    assert train.main(TINY + ["--data-dir", data, "--out", str(root / "mra")]) == 0  # the default model
    assert train.main(TINY + ["--data-dir", data, "--model", "cnn1d", "--out", str(root / "cnn")]) == 0
    return root


def test_train_and_evaluate_accuracy_noise_energy(bearing_runs, capsys):
    root = bearing_runs
    assert _rows(root / "mra" / "metrics.csv")[0]["epoch"] == "1"
    out = root / "eval"
    assert tks_eval.main([str(root / "mra"), str(root / "cnn"), "--out", str(out), "--noise-snr", "-4,8",
                          "--energy", "--energy-samples", "32"]) == 0
    printed = capsys.readouterr().out
    assert "T'=2" in printed and "-4 dB" in printed and "8 dB" in printed and "x cnn" in printed
    noise = _rows(out / robustness.NOISE_CSV)
    assert [(r["run"].rsplit("/", 1)[-1], r["snr_db"]) for r in noise] == \
        [("mra", "clean"), ("cnn", "clean")] + [(run, s) for run in ("mra", "cnn") for s in ("-4", "8")]
    assert all(0 <= float(r["top1"]) <= 1 for r in noise)
    assert (out / robustness.NOISE_PLOT).stat().st_size > 0
    totals = {r["model"]: r for r in _rows(out / tks_eval.ENERGY_FILE)}
    assert set(totals) == {"mra_snn", "cnn1d"}
    assert float(totals["cnn1d"]["acs"]) == 0 and float(totals["cnn1d"]["macs"]) > 0
    assert float(totals["mra_snn"]["energy_pj"]) > 0
    layers = _rows(out / tks_eval.ENERGY_LAYERS_FILE)
    cnn_layers = [r for r in layers if r["run"].endswith("cnn")]
    assert cnn_layers and all(r["steps"] == "1" and r["fed_by_spikes"] == "0" for r in cnn_layers)  # one evaluation
    mra_convs = [r for r in layers if r["run"].endswith("mra") and r["layer"].startswith("stages.")
                 and r["kind"] == "Conv1d" and ".attention." not in r["layer"]]
    assert mra_convs and all(r["fed_by_spikes"] == "1" and r["steps"] == "2" for r in mra_convs)


class Recorder(nn.Module):
    """Records the inputs it is run on; constant logits."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, T=None):
        self.seen.append(x.clone())
        return torch.zeros(T, x.shape[0], 4)


@pytest.mark.parametrize("snr", [-4.0, 2.0, 8.0])
def test_evaluation_noise_measures_the_snr_asked_for(snr):
    g = torch.Generator().manual_seed(0)
    windows = torch.sin(torch.linspace(0, 200, 1024)).repeat(48, 1, 1) * torch.rand(48, 1, 1, generator=g)
    loader = [(windows[i:i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 48, 16)]
    model = Recorder()
    noise_accuracy = robustness.noise_accuracy(model, loader, T=2, snrs=[snr], device="cpu", seed=3)
    assert noise_accuracy == [(snr, 1.0)]  # constant logits: class 0, every label 0
    noisy = torch.cat(model.seen)
    measured = 10 * math.log10(windows.pow(2).sum() / (noisy - windows).pow(2).sum())
    assert abs(measured - snr) < 0.1, (measured, snr)
    # the same noise for every run and every call (seeded by the seed and the SNR's index)
    again = Recorder()
    robustness.noise_accuracy(again, loader, T=2, snrs=[snr], device="cpu", seed=3)
    assert torch.equal(torch.cat(again.seen), noisy)


def test_noise_snr_option_errors(bearing_runs, capsys):
    with pytest.raises(SystemExit):
        tks_eval.main([str(bearing_runs / "mra"), "--noise-snr", "-4,x"])
    assert "'x' is not a number" in capsys.readouterr().err
    assert robustness.parse_snrs(" -4, -2,0 ,8") == [-4.0, -2.0, 0.0, 8.0]
    with pytest.raises(ValueError, match="finite"):
        robustness.parse_snrs("-4,inf")
