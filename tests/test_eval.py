"""tks-eval: AURC, accuracy at fewer timesteps than trained, per-step accuracy, outputs, bad input."""
import csv

import pytest
import torch

from tks import eval as tks_eval
from tks import train
from tks.eval import aurc

TINY = ["--dataset", "digits", "--model", "convsnn", "--width", "0.25", "--T", "3", "--batch-size", "32",
        "--max-batches", "4", "--epochs", "2"]


def test_aurc_hand_computed():
    # sorted by confidence: correct, wrong, correct, wrong -> risks 0/1, 1/2, 1/3, 2/4
    confidence = torch.tensor([0.6, 0.9, 0.7, 0.8])  # unsorted on purpose
    correct = torch.tensor([False, True, True, False])
    assert aurc(confidence, correct) == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)


def test_aurc_orderings_and_bounds():
    correct = torch.tensor([True, True, True, False])
    best = aurc(torch.tensor([4.0, 3.0, 2.0, 1.0]), correct)  # the error is the least confident
    worst = aurc(torch.tensor([1.0, 2.0, 3.0, 4.0]), correct)  # the error is the most confident
    assert best == pytest.approx((0 + 0 + 0 + 1 / 4) / 4) and worst == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert aurc(torch.rand(10), torch.ones(10, dtype=torch.bool)) == 0.0
    assert aurc(torch.rand(10), torch.zeros(10, dtype=torch.bool)) == 1.0
    # ties keep the input order (a stable sort)
    assert aurc(torch.zeros(2), torch.tensor([False, True])) == pytest.approx((1 + 1 / 2) / 2)
    with pytest.raises(ValueError):
        aurc(torch.rand(3), torch.ones(2, dtype=torch.bool))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for loss in ("ce", "tks"):
        assert train.main(TINY + ["--loss", loss, "--out", str(root / loss)]) == 0
    return root


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_eval_two_runs_side_by_side(two_runs, capsys):
    out = two_runs / "compare"
    assert tks_eval.main([str(two_runs / "ce"), str(two_runs / "tks"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "\nce " in printed and "\ntks " in printed and "T'=3" in printed and "AURCx1000" in printed
    rows = _rows(out / tks_eval.TIMESTEPS_FILE)
    assert [(r["loss"], r["T_test"]) for r in rows] == [(loss, str(t)) for loss in ("ce", "tks") for t in (1, 2, 3)]
    steps = _rows(out / tks_eval.STEPS_FILE)
    assert [(r["loss"], r["step"]) for r in steps] == [(loss, str(t)) for loss in ("ce", "tks") for t in (1, 2, 3)]
    for loss in ("ce", "tks"):
        by_t = {int(r["T_test"]): r for r in rows if r["loss"] == loss}
        by_step = {int(r["step"]): r for r in steps if r["loss"] == loss}
        # one step: the mean over T'=1 steps is step 1's output
        assert by_t[1]["top1"] == by_step[1]["top1"]
        # T' = T is what training measured on the test set after the last epoch
        final = _rows(two_runs / loss / "metrics.csv")[-1]
        assert float(by_t[3]["top1"]) == pytest.approx(float(final["test_acc"]), abs=1e-6)
        assert all(0 <= float(r["aurc_x1000"]) <= 1000 for r in by_t.values())
    png = (out / tks_eval.PLOT_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_truncated_runs_match_direct_computation(two_runs):
    """Accuracy at T' = argmax of the mean of the model's outputs on T' steps, computed here by hand."""
    from tks import runs
    from tks.data import build_datasets

    result = tks_eval.evaluate_run(str(two_runs / "tks"), T_max=2)
    assert [t for t, _, _ in result["timesteps"]] == [1, 2] and len(result["steps"]) == 3
    ckpt = runs.load_checkpoint(runs.checkpoint_path(str(two_runs / "tks")))
    model = runs.model_from_config(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    _, test, _ = build_datasets("digits", T=3)
    x, y = test.tensors
    with torch.no_grad():
        mean = model(x, T=2).mean(0)
    correct = mean.argmax(-1) == y
    assert result["timesteps"][1][1] == pytest.approx(correct.double().mean().item())
    assert result["timesteps"][1][2] == pytest.approx(aurc(mean.max(-1).values, correct))


def test_default_out_is_inside_the_run(two_runs):
    assert tks_eval.main([str(two_runs / "ce"), "--T-max", "1"]) == 0
    assert len(_rows(two_runs / "ce" / "eval" / tks_eval.TIMESTEPS_FILE)) == 1


def test_T_prime_larger_than_T(two_runs, capsys):
    with pytest.raises(SystemExit) as e:
        tks_eval.main([str(two_runs / "ce"), "--T-max", "4", "--out", str(two_runs / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "trained with T=3" in err and "between 1 and 3" in err


def test_corrupt_checkpoint_and_not_a_run(tmp_path, two_runs, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(two_runs / "ce", bad)
    data = (bad / "checkpoint.pt").read_bytes()
    (bad / "checkpoint.pt").write_bytes(data[: len(data) - 100])
    with pytest.raises(SystemExit):
        tks_eval.main([str(bad), "--out", str(tmp_path / "o")])
    assert "corrupt or truncated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tks_eval.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert "no checkpoint" in capsys.readouterr().err


def test_table_leaves_cells_blank_beyond_a_runs_T():
    """Runs trained with different T line up: T' columns beyond a run's T are blank and the AURC
    stays in its own column."""
    short = {"label": "short", "timesteps": [(1, 0.5, 0.1), (2, 0.6, 0.2)]}
    long = {"label": "long", "timesteps": [(t, 0.1 * t, 0.3) for t in range(1, 5)]}
    lines = tks_eval.format_table([short, long]).splitlines()
    head, row_short, row_long = lines[0], lines[2], lines[3]
    assert len(row_short) == len(row_long) == len(head)
    aurc_col = head.index("AURCx1000")
    assert row_short[aurc_col:].strip() == "200.00" and row_long[aurc_col:].strip() == "300.00"
    t3 = head.index("T'=3")
    assert row_short[t3:t3 + 6].strip() == "" and row_long[t3:t3 + 6].strip() == "30.00"


def test_a_file_that_is_not_a_checkpoint_says_pass_the_run_folder(two_runs, capsys):
    with pytest.raises(SystemExit) as e:
        tks_eval.main([str(two_runs / "ce" / "config.json"), "--out", str(two_runs / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "is not a tks-train checkpoint" in err and "pass the run folder" in err
    assert "delete" not in err and "corrupt" not in err and len(err.strip().splitlines()) == 1
