"""digits-events (the bundled digits recorded by a simulated event camera) and the nesting of time
bins (``sum_adjacent_bins``). Small subsets: each test runs in well under a second or two."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from tks import data
from tks.data import digits_events as de
from tks.data import build_datasets, sum_adjacent_bins

CAM = de.DigitEventCamera()


@pytest.fixture(scope="module")
def digits():
    with np.load(data.DIGITS_FILE) as f:
        return {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}


def _frames(events, offsets, T, cam=CAM):
    return de.events_to_frames(events, offsets, T, cam.duration_us, cam.size)


# ---------------------------------------------------------------------------------------------- the simulator

def test_simulation_is_deterministic_per_recording(digits):
    x = digits["x_train"][:6]
    ev1, off1 = de.simulate_digit_events(x, keys=range(6))
    ev2, off2 = de.simulate_digit_events(x, keys=range(6))
    assert np.array_equal(off1, off2) and np.array_equal(ev1, ev2)
    # a recording depends on its own key only: a subset (other neighbours) gives the same events
    sub, sub_off = de.simulate_digit_events(x[2:4], keys=[2, 3])
    assert np.array_equal(sub, ev1[off1[2]:off1[4]])
    other, _ = de.simulate_digit_events(x, keys=range(6), seed=1)
    assert not np.array_equal(other, ev1)
    for i in range(6):  # each recording sorted in time, inside the sensor and the recording
        rec = ev1[off1[i]:off1[i + 1]]
        assert len(rec) > 100 and np.all(np.diff(rec["t"]) >= 0)
        assert rec["t"].min() >= 0 and rec["t"].max() < CAM.duration_us
        assert rec["x"].max() < CAM.size and rec["y"].max() < CAM.size and set(np.unique(rec["p"])) <= {0, 1}


def test_pixel_model_tracks_log_intensity(digits):
    """Without mismatch, noise and refractory losses a pixel's reference stays within one threshold of
    its log intensity; the path ends where it starts, so each pixel's ON and OFF counts differ by at
    most 1. A still, blank picture gives no events but noise, at the asked rate."""
    exact = replace(CAM, threshold_sigma=0.0, noise_hz=0.0, refractory_ms=0.0)
    ev, off = de.simulate_digit_events(digits["x_train"][:4], keys=range(4), cam=exact)
    frames = _frames(ev, off, 1, exact)[:, 0]  # [N, 2, H, W]
    net = frames[:, 1] - frames[:, 0]
    assert frames.sum() > 1000 and np.abs(net).max() <= 1
    # a refractory period: no two events of a pixel closer than it
    refractory = replace(exact, refractory_ms=2.0)
    ev, off = de.simulate_digit_events(digits["x_train"][:4], keys=range(4), cam=refractory)
    for i in range(4):
        rec = ev[off[i]:off[i + 1]]
        order = np.lexsort((rec["t"], rec["x"], rec["y"]))
        r = rec[order]
        same = (np.diff(r["x"]) == 0) & (np.diff(r["y"]) == 0)
        assert np.diff(r["t"])[same].min() >= 2000 - 1  # us, timestamps floored
    blank = np.zeros((20, 8, 8), np.uint8)
    ev, _ = de.simulate_digit_events(blank, keys=range(20), cam=replace(CAM, noise_hz=0.0))
    assert len(ev) == 0
    ev, _ = de.simulate_digit_events(blank, keys=range(20))
    expected = 20 * CAM.noise_hz * CAM.size ** 2 * CAM.duration_us * 1e-6
    assert abs(len(ev) - expected) < 4 * np.sqrt(expected)


# ---------------------------------------------------------------------------------------------- binning

def test_time_bins_nest_and_frames_count_every_event(digits):
    ev, off = de.simulate_digit_events(digits["x_test"][:5], keys=range(5))
    f4, f8, f12 = (_frames(ev, off, T) for T in (4, 8, 12))
    assert f8.shape == (5, 8, 2, CAM.size, CAM.size) and f8.dtype == np.float32
    assert np.array_equal(sum_adjacent_bins(f8, 4, dim=1), f4)
    assert np.array_equal(sum_adjacent_bins(f12, 4, dim=1), f4)
    assert torch.equal(sum_adjacent_bins(torch.from_numpy(f12[0]), 4), torch.from_numpy(f4[0]))  # an item
    for i in range(5):  # every event in exactly one bin, at its pixel and polarity
        rec = ev[off[i]:off[i + 1]]
        assert f8[i].sum() == len(rec) and f8[i, :, 1].sum() == rec["p"].sum()
        j = len(rec) // 2
        b = rec["t"][j] * 8 // CAM.duration_us
        assert f8[i, b, rec["p"][j], rec["y"][j], rec["x"][j]] >= 1


def test_sum_adjacent_bins_axes_and_errors():
    x = torch.arange(2 * 6 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 6, 3, 2, 2)  # [B, Tt, C, H, W]
    out = sum_adjacent_bins(x, 2)
    assert out.shape == (2, 2, 3, 2, 2)
    assert torch.equal(out[:, 1], x[:, 3] + x[:, 4] + x[:, 5])
    tb = x.transpose(0, 1).contiguous()  # [Tt, B, C, H, W]
    assert torch.equal(sum_adjacent_bins(tb, 2, dim=0), out.transpose(0, 1))
    assert torch.equal(sum_adjacent_bins(x, 6), x)  # T = Tt: unchanged
    with pytest.raises(ValueError, match="not a multiple of T=4"):
        sum_adjacent_bins(x, 4)
    with pytest.raises(ValueError, match="integer >= 1"):
        sum_adjacent_bins(x, True)
    with pytest.raises(ValueError, match="out of range"):
        sum_adjacent_bins(x, 2, dim=5)


def test_one_frame_holds_part_of_the_information(digits):
    """A linear classifier (ridge on the frame pixels) does clearly worse on the first of 8 frames
    (what the model sees at T'=1) than on all 8; the first frame also holds fewer events."""
    n_train, n_test = 400, 200
    xs = {}
    for code, split, n in ((0, "train", n_train), (1, "test", n_test)):
        keys = [code * 1_000_000 + i for i in range(n)]  # as the dataset: the same recordings
        ev, off = de.simulate_digit_events(digits[f"x_{split}"][:n], keys=keys)
        xs[split] = _frames(ev, off, 8)
    y_train, y_test = digits["y_train"][:n_train], digits["y_test"][:n_test]

    def accuracy(train, test):
        a, b = train.reshape(len(train), -1), test.reshape(len(test), -1)
        mean, scale = a.mean(0), a.std() + 1e-6
        a, b = (a - mean) / scale, (b - mean) / scale
        # ridge in its dual form (fewer samples than features): w = a^T (a a^T + lam I)^-1 Y
        alpha = np.linalg.solve(a @ a.T + 500.0 * np.eye(len(a)), np.eye(10)[y_train])
        return float(((b @ (a.T @ alpha)).argmax(1) == y_test).mean())

    first, full = accuracy(xs["train"][:, :1], xs["test"][:, :1]), accuracy(xs["train"], xs["test"])
    assert full > 0.8 and full - first > 0.15, (first, full)
    counts = xs["train"].sum((0, 2, 3, 4))
    assert counts[0] < counts.mean()


# ---------------------------------------------------------------------------------------------- the dataset

@pytest.fixture
def small_digits(tmp_path, monkeypatch, digits):
    """A digits file of 30 + 10 images in place of the bundled one (the builder reads only it)."""
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=digits["x_train"][:30], y_train=digits["y_train"][:30],
             x_test=digits["x_test"][:10], y_test=digits["y_test"][:10])
    monkeypatch.setattr(de, "DIGITS_FILE", str(path))
    return {k: v for k, v in np.load(path).items()}


def test_dataset_split_shapes_and_cache(tmp_path, monkeypatch, small_digits):
    train, test, info = build_datasets("digits-events", T=8, data_dir=str(tmp_path / "d"))
    assert (len(train), len(test)) == (30, 10)
    assert train.targets == small_digits["y_train"].tolist() and test.targets == small_digits["y_test"].tolist()
    assert info == data.DataInfo("digits-events", 10, 2, 16, False, "convsnn", lam=0.3, temperature=5.0)
    assert info.input_shape == (2, 16, 16) and not info.is_signal
    frames, label = test[3]
    assert frames.shape == (8, 2, 16, 16) and frames.dtype == torch.float32 and isinstance(label, int)
    # the frames are the test digits' recordings (keys: split, index)
    ev, off = de.simulate_digit_events(small_digits["x_test"][3:4], keys=[1_000_000 + 3])
    assert torch.equal(frames, torch.from_numpy(_frames(ev, off, 8)[0]))
    assert np.array_equal(test.events(3), ev)
    caches = list((tmp_path / "d" / "cache").glob("digits-events-*.npz"))
    assert len(caches) == 1
    # a second build (any T) reads the cache and simulates nothing
    monkeypatch.setattr(de, "simulate_digit_events", lambda *a, **k: pytest.fail("re-simulated a cached dataset"))
    train16, _, _ = build_datasets("digits-events", T=16, data_dir=str(tmp_path / "d"))
    assert torch.equal(sum_adjacent_bins(train16[0][0], 8), train[0][0])
    # a changed parameter or seed is another cache file
    assert de._cache_key(replace(CAM, threshold=0.3), 0) != de._cache_key(CAM, 0) != de._cache_key(CAM, 1)

