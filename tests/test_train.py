"""tks-train end to end on CPU: run folder, exact resume, atomic checkpoints, DDP, bad input."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from tks import runs, train
from tks.runs import CheckpointError, load_checkpoint

from test_data import _write_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# digits, the small ConvSNN at a quarter width, a few batches per epoch: seconds on a CPU
TINY = ["--dataset", "digits", "--model", "convsnn", "--width", "0.25", "--T", "2", "--batch-size", "32",
        "--max-batches", "3"]


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_end_to_end_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TINY + ["--epochs", "2", "--loss", "tks", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "digits" and config["loss"] == "tks" and config["T"] == 2
    assert (config["lam"], config["temperature"]) == (0.7, 3.0)  # the static-data defaults
    assert config["neuron"]["v_threshold"] == 0.5 and config["neuron"]["surrogate"] == "piecewise_quadratic"
    rows = _read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "lr", "lam", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
                            "train_ce", "train_kd", "train_selected"}  # the method's parts
    assert [float(r["lam"]) for r in rows] == [0.0, 0.35]  # lam_max * epoch / epochs (tks_kernels.tks_lambda)
    assert float(rows[-1]["lr"]) == 0.0  # cosine down to 0 at the end
    for r in rows:
        assert 0 <= float(r["test_acc"]) <= 1 and float(r["train_loss"]) > 0
    ckpt = load_checkpoint(str(out / "checkpoint.pt"))
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"] == "convsnn" and len(ckpt["history"]) == 2
    assert not [p for p in os.listdir(out) if ".tmp" in p]
    assert "tks-eval" in capsys.readouterr().err
    before = (out / "checkpoint.pt").read_bytes()
    assert train.main(["--out", str(out), "--resume"]) == 0  # a finished run: nothing left to train
    assert (out / "checkpoint.pt").read_bytes() == before


def _cifar_args(data_dir):
    # fake CIFAR-10: random crop + flip draw from the RNG, so an exact resume needs the RNG states
    return ["--dataset", "cifar10", "--data-dir", str(data_dir), "--model", "convsnn", "--width", "0.25",
            "--T", "2", "--batch-size", "5", "--epochs", "2", "--loss", "tet", "--seed", "7"]


def _assert_same_run(a, b):
    ca, cb = load_checkpoint(str(a / "checkpoint.pt")), load_checkpoint(str(b / "checkpoint.pt"))
    assert ca["epoch"] == cb["epoch"] == 2
    strip = [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in ca["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in cb["history"]]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(_read_csv(b / "metrics.csv")) == 2


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_equals_uninterrupted_run(tmp_path, workers):
    _write_cifar(str(tmp_path / "data"), "cifar10")
    args = _cifar_args(tmp_path / "data") + ["--num-workers", str(workers)]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(args + ["--out", str(straight)])
    train.main(args + ["--out", str(resumed), "--stop-after-epoch", "1"])
    assert load_checkpoint(str(resumed / "checkpoint.pt"))["epoch"] == 1
    torch.manual_seed(1234)  # the resumed process starts from another RNG state: the checkpoint's must win
    train.main(["--out", str(resumed), "--resume", "--num-workers", str(workers)])  # options from the run
    _assert_same_run(straight, resumed)


def test_resume_without_rng_states_differs(tmp_path, monkeypatch):
    """The resume test can fail: dropping the RNG restore changes the augmentation and the weights."""
    _write_cifar(str(tmp_path / "data"), "cifar10")
    args = _cifar_args(tmp_path / "data")
    train.main(args + ["--out", str(tmp_path / "a")])
    train.main(args + ["--out", str(tmp_path / "b"), "--stop-after-epoch", "1"])
    monkeypatch.setattr(train, "_set_rng_state", lambda state: None)
    torch.manual_seed(1234)
    train.main(["--out", str(tmp_path / "b"), "--resume"])
    with pytest.raises(AssertionError):
        _assert_same_run(tmp_path / "a", tmp_path / "b")


def test_failed_save_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save_then_fail(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 2:  # epoch 2: half a file, then the disk is full
            f.write(b"PK\x03\x04 partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(SystemExit):
        train.main(TINY + ["--epochs", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert "No space left on device" in err and "epoch 1 is kept" in err and "--resume" in err
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 1  # untouched by the failed write
    assert not [p for p in os.listdir(out) if ".tmp" in p]
    assert len(_read_csv(out / "metrics.csv")) == 1
    monkeypatch.setattr(torch, "save", real_save)
    assert train.main(["--out", str(out), "--resume"]) == 0
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 3


def test_atomic_save_failure_leaves_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    runs.atomic_torch_save({"a": torch.ones(3)}, path)
    before = open(path, "rb").read()

    def broken(obj, f, *a, **kw):
        f.write(b"garbage")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="killed"):
        runs.atomic_torch_save({"a": torch.zeros(3)}, path)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_clear_error(tmp_path, capsys, damage):
    out = tmp_path / "run"
    train.main(TINY + ["--epochs", "1", "--out", str(out)])
    path = out / "checkpoint.pt"
    good = path.read_bytes()
    path.write_bytes(b"not a checkpoint at all" if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(str(path))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(["--out", str(out), "--resume"])
    assert "corrupt or truncated" in capsys.readouterr().err


@pytest.mark.parametrize("option,value,choices", [
    ("--dataset", "mnist", ["digits", "cifar10", "cifar10-dvs", "ncaltech101"]),
    ("--model", "resnet18", ["convsnn", "vggsnn", "resnet19", "sew_resnet19"]),
    ("--loss", "kd", ["ce", "tet", "tks", "ls"]),
])
def test_unknown_choice_lists_choices(capsys, option, value, choices):
    with pytest.raises(SystemExit) as e:
        train.main([option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert value in err and all(c in err for c in choices)


def test_missing_data_says_download(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    assert "--download" in capsys.readouterr().err


def test_existing_run_and_changed_options(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(TINY + ["--epochs", "1", "--out", str(out)])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(TINY + ["--epochs", "1", "--out", str(out)])
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--out", str(out), "--resume", "--T", "4"])
    assert "--T 4 (the run has 2)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "none"), "--resume"])
    assert "no checkpoint.pt" in capsys.readouterr().err


def _torchrun(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "python")]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tks.train",
           *args, "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchrun_two_processes_gloo_and_resume(tmp_path):
    _write_cifar(str(tmp_path / "data"), "cifar10")
    args = _cifar_args(tmp_path / "data") + ["--batch-size", "4"]  # 2 per process
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _torchrun(args + ["--out", str(straight)], tmp_path)
    ckpt = load_checkpoint(str(straight / "checkpoint.pt"))
    assert ckpt["config"]["world_size"] == 2 and len(ckpt["rng"]) == 2  # every process's RNG states
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # augmentation differs per process
    rows = _read_csv(straight / "metrics.csv")
    assert len(rows) == 2 and all(0 <= float(r["test_acc"]) <= 1 for r in rows)
    _torchrun(args + ["--out", str(resumed), "--stop-after-epoch", "1"], tmp_path)
    _torchrun(["--out", str(resumed), "--resume"], tmp_path)
    _assert_same_run(straight, resumed)


def test_label_smoothing_run(tmp_path):
    out = tmp_path / "ls"
    assert train.main(TINY + ["--epochs", "1", "--loss", "ls", "--label-smoothing", "0.2", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["label_smoothing"] == 0.2


@pytest.mark.parametrize("option,value,message", [
    ("--lam", "1.5", "in [0, 1]"), ("--temperature", "0", "must be > 0"), ("--T", "0", "must be >= 1"),
    ("--label-smoothing", "-0.1", "must be"), ("--warmup-epochs", "9", "must be in [0, epochs=2)"),
])
def test_bad_numbers(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--epochs", "2", option, value, "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and message in err


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: trains with the CUDA/Triton LIF and fp16 AMP")
def test_cuda_amp_train_and_eval(tmp_path):
    from tks import eval as tks_eval

    out = tmp_path / "cuda"
    assert train.main(TINY + ["--epochs", "2", "--device", "cuda", "--amp", "--out", str(out)]) == 0
    rows = _read_csv(out / "metrics.csv")
    assert all(torch.isfinite(torch.tensor(float(r["train_loss"]))) for r in rows)
    assert train.main(["--out", str(out), "--resume"]) == 0  # finished: nothing left to do
    assert tks_eval.main([str(out), "--device", "cuda"]) == 0
    final = _read_csv(out / "eval" / "timesteps.csv")[-1]
    assert float(final["top1"]) == pytest.approx(float(rows[-1]["test_acc"]), abs=0.01)  # fp32 eval vs fp16


def _one_line_error(capsys, argv, *needles):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tks-train: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("device, needle", [("tpu0", "not a device"), ("meta", "runs on cpu or cuda"),
                                             ("cuda:7", "cuda")])
def test_bad_device_is_one_line(tmp_path, capsys, device, needle):
    _one_line_error(capsys, TINY + ["--device", device, "--out", str(tmp_path / "r")], f"--device {device}", needle)


def test_a_model_that_does_not_fit_the_dataset_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, TINY + ["--model", "vggsnn", "--out", str(tmp_path / "r")],
                    "--model vggsnn does not fit --dataset digits (1x8x8 inputs)", "default for digits is convsnn")


def test_download_without_network_names_the_url_and_the_folder(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "__init__", offline)
    _one_line_error(capsys, ["--dataset", "cifar10", "--download", "--data-dir", str(tmp_path / "d"), "--out",
                             str(tmp_path / "r")],
                    "--download of cifar10 failed", torchvision.datasets.CIFAR10.url, "cifar-10-batches-py")


def test_interrupt_says_what_is_saved_and_how_to_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    from tks.methods import MethodNet

    calls = {"n": 0}
    real = MethodNet.forward

    def interrupt_in_epoch_two(self, x):
        calls["n"] += 1
        if calls["n"] > 3:  # the 3 training batches of epoch 1 pass
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(MethodNet, "forward", interrupt_in_epoch_two)
    assert train.main(TINY + ["--epochs", "3", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"tks-train: interrupted (SIGINT) during epoch 2/3; epoch 1 is saved in {out / 'checkpoint.pt'}; "
                   f"continue with: tks-train --out {out} --resume")
    monkeypatch.setattr(MethodNet, "forward", real)
    assert train.main(["--out", str(out), "--resume"]) == 0
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 3


def test_sigterm_says_what_is_saved(tmp_path):
    """A killed job (SIGTERM, as schedulers send) stops with the same one line, exit 143."""
    import signal
    import time

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "python")]))
    proc = subprocess.Popen([sys.executable, "-m", "tks.train", *TINY, "--epochs", "1000", "--out", str(out)],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("tks-train: interrupted (SIGTERM) during epoch ") and "is saved in" in last, last
    assert f"continue with: tks-train --out {out} --resume" in last and "Traceback" not in err
