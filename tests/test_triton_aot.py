"""The Triton kernels compiled for the GPU (sm_80 and sm_90 PTX through triton's own ptxas), on any
machine: the other tests run them through the interpreter, which never compiles the GPU code path.

What the compiled code must show: every specialisation compiles; no FMA contraction anywhere
(``COMPILE_OPTIONS``: fp32 spikes bit-equal to the reference, and the TKS loss's recomputed
maxima, see tks_kernels/tks_loss/triton.py); every fp32 division correctly rounded (div.rn, not
the approximate div.full that Triton's "/" gives); the TKS and KD losses' log from libdevice, not
the lg2.approx hardware approximation.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the Triton kernels need triton (it comes with CUDA builds of torch)")

SCRIPT = Path(__file__).with_name("_triton_aot.py")


def compile_all(capability: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the real compiler
    proc = subprocess.run([sys.executable, str(SCRIPT), str(capability)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module", params=[80, 90], ids=["sm80", "sm90"])
def variants(request):
    return compile_all(request.param)


def test_every_variant_compiles(variants):
    names = [v["name"] for v in variants]
    from tks_kernels.lif.surrogate import SURROGATES

    for surrogate in SURROGATES:
        assert any(f"surrogate={surrogate}" in n for n in names), surrogate
    assert sum(n.startswith("tks_loss_") for n in names) == 6
    assert sum(n.startswith("kd_loss_") for n in names) == 6
    assert all(v["cubin_bytes"] > 0 for v in variants), [v["name"] for v in variants if not v["cubin_bytes"]]


def test_no_fma_contraction(variants):
    bad = {v["name"]: v["ptx"]["fma.rn.f32"] for v in variants if v["ptx"]["fma.rn.f32"]}
    assert not bad, f"fused multiply-adds in {bad}: launch with COMPILE_OPTIONS (enable_fp_fusion=False)"


def test_divisions_rounded_to_nearest(variants):
    bad = {v["name"]: v["ptx"] for v in variants if v["ptx"]["div.full.f32"] or v["ptx"]["div.approx.f32"]}
    assert not bad, f"approximate fp32 divisions in {sorted(bad)}: use tl.math.div_rn"
    # and the leak 1/tau division is really there (the check above looks at the right PTX)
    assert any(v["ptx"]["div.rn.f32"] for v in variants if v["name"] == "lif_forward leak=1")


def test_spike_count_rounding_survives(variants):
    """The counts round with (y + 2^23) - 2^23 (adds of 0f4B000000 and 0fCB000000 in PTX), which a
    compiler allowed to reassociate would fold to y: the forward and the backward that recomputes
    V[t-1] (learnable leak) keep it; every count variant divides H / v_threshold correctly rounded."""
    count = {v["name"]: v["ptx"] for v in variants if " count " in v["name"]}
    assert len(count) == 4, [v["name"] for v in variants]
    assert all(ptx["div.rn.f32"] for ptx in count.values()), count
    rounds = [name for name, ptx in count.items() if ptx["round_2_23"]]
    assert sorted(rounds) == ["lif_backward count leak=2", "lif_forward count leak=1", "lif_forward count leak=2"], count


def test_loss_log_is_libdevice(variants):
    """The TKS and KD loss kernels take log from libdevice (tks_kernels/_softmax_triton.py), not the
    lg2.approx hardware approximation (libdevice's exp itself uses ex2.approx after its own range
    reduction, so exp cannot be told apart this way)."""
    loss = [v for v in variants if v["name"].startswith(("tks_loss_", "kd_loss_"))]
    bad = [v["name"] for v in loss if v["ptx"]["lg2.approx"]]
    assert len(loss) == 12 and not bad, bad
