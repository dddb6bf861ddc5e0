"""Smoke tests of the benchmark scripts: each runs its --smoke sweep (a few seconds) and must
write its CSV, Markdown and PNG with the documented columns, and measure the providers that can
run here (the eager references at least)."""
import csv
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG_COLUMNS = ["device_name", "torch", "triton", "spikingjelly", "tks_kernels", "git", "date"]


def _has(module: str, attr: str = None) -> bool:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return False
    return attr is None or hasattr(mod, attr)


def run_script(name: str, out_dir, *extra) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "python")] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", name), "--smoke", "--out", str(out_dir), *extra],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def read_outputs(out_dir, stem: str, columns):
    has_matplotlib = _has("matplotlib")  # without it the scripts say so and write no PNG
    for ext in ("csv", "md") + (("png",) if has_matplotlib else ()):
        path = out_dir / f"{stem}.{ext}"
        assert path.exists() and path.stat().st_size > 0, f"{path} was not written"
    with open(out_dir / f"{stem}.csv", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in list(columns) + TAG_COLUMNS if c not in reader.fieldnames]
        assert not missing, f"{stem}.csv lacks columns {missing}; has {reader.fieldnames}"
        rows = list(reader)
    assert rows, f"{stem}.csv has no rows"
    md = (out_dir / f"{stem}.md").read_text()
    assert "Targets" in md and "device:" in md, f"{stem}.md lacks its header or targets section"
    if has_matplotlib:
        assert (out_dir / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return rows, md


def ok_rows(rows, provider):
    return [r for r in rows if r["provider"] == provider and r["status"] == "ok"]


def test_bench_lif_smoke(tmp_path):
    proc = run_script("bench_lif.py", tmp_path)
    rows, md = read_outputs(tmp_path, "lif", [
        "provider", "dtype", "T", "N", "pass", "status", "median_ms", "q20_ms", "q80_ms", "bytes", "gbps",
        "pct_copy", "copy_gbps", "saved_bytes", "saved_per_neuron_step", "x_saved", "peak_fwd_mb",
        "peak_fwdbwd_mb", "spike_mismatch", "grad_rel_err", "speedup_vs_eager", "speedup_vs_sj_best",
    ])
    eager = ok_rows(rows, "eager")
    assert sorted(r["pass"] for r in eager) == ["bwd", "fwd", "fwd+bwd"]
    for r in eager:
        assert 0 < float(r["q20_ms"]) <= float(r["median_ms"]) <= float(r["q80_ms"])
        assert float(r["gbps"]) > 0 and float(r["speedup_vs_eager"]) == 1.0
        # the reference saves h - v_th, h and 1 - s per step: 12 bytes per neuron per step
        assert float(r["saved_per_neuron_step"]) == pytest.approx(12.0, rel=0.01)
    for r in rows:  # a provider is measured or says why not; never silently absent
        assert r["status"] == "ok" or r["status"].startswith(("skipped: ", "error: ")), r
        if r["status"] == "ok":
            assert float(r["spike_mismatch"]) == 0.0, r  # fp32: every provider fires exactly as the reference
    if _has("spikingjelly"):
        assert ok_rows(rows, "sj-torch") or any(r["provider"].startswith("sj-") and r["status"] == "ok" for r in rows)
    assert "copy bandwidth" in md and "== targets ==" in proc.stdout


def test_bench_tks_loss_smoke(tmp_path):
    proc = run_script("bench_tks_loss.py", tmp_path)
    rows, _ = read_outputs(tmp_path, "tks_loss", [
        "provider", "dtype", "T", "B", "C", "pass", "status", "median_ms", "q20_ms", "q80_ms", "speedup_vs_eager",
        "saved_bytes", "peak_fwd_mb", "loss_rel_err", "grad_rel_err",
    ])
    if _has("tks_kernels", "tks_loss"):
        assert len(ok_rows(rows, "eager")) == 3
        for r in rows:
            if r["status"] == "ok":
                assert float(r["loss_rel_err"]) < 1e-5 and float(r["grad_rel_err"]) < 1e-4, r
    else:
        assert all(r["status"].startswith("skipped: ") for r in rows)
    assert "== targets ==" in proc.stdout


def test_bench_train_step_smoke(tmp_path):
    proc = run_script("bench_train_step.py", tmp_path)
    rows, _ = read_outputs(tmp_path, "train_step", [
        "model", "provider", "T", "batch", "status", "median_ms", "q20_ms", "q80_ms", "samples_per_s",
        "speedup_vs_sj", "peak_step_mb", "logits_rel_err",
    ])
    if _has("tks.models", "build_model") and _has("tks_kernels", "tks_loss"):
        assert {r["model"] for r in ok_rows(rows, "tks")} == {"vggsnn", "resnet19"}
    else:
        assert all(r["status"].startswith("skipped: ") for r in rows)
    assert "== targets ==" in proc.stdout


def test_bench_kd_loss_smoke(tmp_path):
    proc = run_script("bench_kd_loss.py", tmp_path)
    rows, _ = read_outputs(tmp_path, "kd_loss", [
        "provider", "dtype", "Ts", "Tt", "B", "C", "pass", "status", "median_ms", "q20_ms", "q80_ms",
    ])
    assert sorted(r["pass"] for r in ok_rows(rows, "eager")) == ["bwd", "fwd", "fwd+bwd"]
    assert all(r["status"] == "ok" or r["status"].startswith(("skipped: ", "error: ")) for r in rows)
    assert "== targets ==" in proc.stdout


def test_bench_train_step_methods_smoke(tmp_path):
    """--method: one step of each training method against ce on the same model."""
    run_script("bench_train_step.py", tmp_path, "--method", "tssd,trt,ssnn", "--models", "resnet19")
    rows, md = read_outputs(tmp_path, "train_step_methods", [
        "model", "method", "T", "data_T", "batch", "status", "median_ms", "overhead_vs_ce", "saved_mb", "parts",
    ])
    assert [r["method"] for r in rows] == ["ce", "tssd", "trt", "ssnn"]
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    assert float(rows[0]["overhead_vs_ce"]) == 1.0 and "kd_temporal" in rows[1]["parts"]
