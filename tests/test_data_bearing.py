"""Bearing vibration datasets: MFPT and JNU on small files written in their published formats
(MATLAB struct ``bearing`` via scipy's savemat, one-column CSV) in nested archive folders, the
bearing-sim simulator, and white noise at a requested SNR."""
import math

import numpy as np
import pytest
import torch
from scipy.io import savemat

from tks.data import bearing as bg
from tks.data import DataInfo, DatasetNotFoundError, build_datasets

L = bg.WINDOW


def _tone(c, n, rate, rng):
    """Class c's signal: a tone at 500 + 300 c Hz plus a little noise (the label is readable back)."""
    t = np.arange(n) / rate
    return np.sin(2 * np.pi * (500 + 300 * c) * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(n)


def _peak_hz(window, rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(window).reshape(-1)))
    return np.fft.rfftfreq(L, 1 / rate)[spectrum.argmax()]


def _check_split(train, test, info, n_classes, per_class, rate):
    assert (info.num_classes, info.in_channels, info.static, info.signal_length, info.image_size) == \
        (n_classes, 1, True, L, 0)
    assert info.is_signal and info.input_shape == (1, L)
    n_test = round(bg.TEST_FRACTION * per_class)
    assert (len(train), len(test)) == (n_classes * (per_class - n_test), n_classes * n_test)
    assert np.bincount(test.targets, minlength=n_classes).tolist() == [n_test] * n_classes  # stratified
    x, y = train[0]
    assert x.shape == (1, L) and x.dtype == torch.float32 and isinstance(y, int)
    for ds in (train, test):
        peak = ds.windows.abs().amax(-1)
        assert torch.allclose(peak, torch.ones_like(peak))  # max-abs: each window reaches +-1 exactly
        for i in range(0, len(ds), 7):  # each window is its class's file (its tone)
            assert abs(_peak_hz(ds.windows[i], rate) - (500 + 300 * ds.targets[i])) < rate / L


# ---------------------------------------------------------------------------------------------- MFPT

def _write_mfpt(root, n_windows=10, skip=()):
    """The 15 protocol files in the archive's folders; the baseline at twice the rate, 20% longer."""
    rng = np.random.default_rng(0)
    folders = {"baseline": "1 - Three Baseline Conditions", "OuterRaceFault_vload": "3 - Seven More Outer Race Fault "
               "Conditions", "InnerRaceFault_vload": "4 - Seven Inner Race Fault Conditions"}
    signals = {}
    for c, (_, file) in enumerate(bg.MFPT_CLASSES):
        if file in skip:
            continue
        baseline = file.startswith("baseline")
        rate = 2 * bg.MFPT_RATE if baseline else bg.MFPT_RATE
        n = (int(1.2 * n_windows) * L * 2) if baseline else n_windows * L + 100
        gs = _tone(c, n, rate, rng)
        signals[file] = gs
        folder = root / "MFPT Fault Data Sets" / folders[file.rsplit("_", 1)[0]]
        folder.mkdir(parents=True, exist_ok=True)
        savemat(folder / file, {"bearing": {"sr": float(rate), "gs": gs[:, None], "load": 0.0, "rate": 25.0}})
    return signals


def test_mfpt_reads_mat_files_anywhere_under_mfpt(tmp_path):
    signals = _write_mfpt(tmp_path / "MFPT")
    train, test, info = build_datasets("mfpt", T=4, data_dir=str(tmp_path))
    assert info.name == "mfpt" and train.classes[0] == "normal" and train.classes[-1] == "inner-300lbs"
    _check_split(train, test, info, 15, 10, bg.MFPT_RATE)  # the baseline's 12 windows cut to 10
    # non-overlapping windows of the file, in order, normalised: class 14 holds exactly these
    c = 14
    raw = signals[bg.MFPT_CLASSES[c][1]][:10 * L].reshape(10, L)
    expected = raw / np.abs(raw).max(1, keepdims=True)  # max-abs, by hand
    ours = torch.cat([ds.windows[[i for i, y in enumerate(ds.targets) if y == c]] for ds in (train, test)])
    ours = ours.squeeze(1).double().numpy()
    order = [int(np.argmin(np.abs(expected - w).sum(1))) for w in ours]
    assert sorted(order) == list(range(10))
    np.testing.assert_allclose(ours, expected[order], rtol=0, atol=1e-6)
    # determinism: the same split and windows again (from the cache here)
    train2, test2, _ = build_datasets("mfpt", T=4, data_dir=str(tmp_path))
    assert train2.targets == train.targets and torch.equal(test2.windows, test.windows)
    assert len(list((tmp_path / "cache").glob("mfpt-*.npz"))) == 1


def test_mfpt_missing_files_and_bad_rate(tmp_path):
    _write_mfpt(tmp_path / "MFPT", n_windows=2, skip=("baseline_1.mat", "InnerRaceFault_vload_3.mat"))
    with pytest.raises(DatasetNotFoundError) as e:
        build_datasets("mfpt", T=4, data_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "baseline_1.mat, InnerRaceFault_vload_3.mat" in msg and "MFPT" in msg
    assert "mfpt.org" in msg and "--data-dir" in msg
    path = tmp_path / "odd.mat"
    savemat(path, {"bearing": {"sr": 12000.0, "gs": np.zeros((2048, 1)), "load": 0.0, "rate": 25.0}})
    with pytest.raises(ValueError, match="sr=12000"):
        bg.read_mfpt(str(path))


# ---------------------------------------------------------------------------------------------- JNU

def test_jnu_reads_csv_columns_anywhere_under_jnu(tmp_path):
    rng = np.random.default_rng(1)
    for c, (name, file) in enumerate(bg.JNU_CLASSES):
        n = (3 if name.startswith("normal") else 1) * 5 * L + 17  # normal recordings 3x longer
        folder = tmp_path / "JNU" / "JNU-Bearing-Dataset-main" / ("normal" if c < 3 else "fault")
        folder.mkdir(parents=True, exist_ok=True)
        x = _tone(c, n, bg.JNU_RATE, rng)
        lines = "\n".join(f"{v:.6f}" for v in x) + "\n"
        if c == 4:
            lines = "vibration\n" + lines  # a header line is skipped
        (folder / file).write_text(lines)
    train, test, info = build_datasets("jnu", T=4, data_dir=str(tmp_path))
    assert train.classes[:4] == ("normal-600rpm", "normal-800rpm", "normal-1000rpm", "inner-600rpm")
    _check_split(train, test, info, 12, 5, bg.JNU_RATE)  # normal classes cut to the 5 windows of the others
    train2, _, _ = build_datasets("jnu", T=4, data_dir=str(tmp_path))
    assert torch.equal(train2.windows, train.windows)


def test_jnu_missing_names_every_file(tmp_path):
    (tmp_path / "JNU").mkdir()
    with pytest.raises(DatasetNotFoundError, match="12 of its 12 files") as e:
        build_datasets("jnu", T=4, data_dir=str(tmp_path))
    assert "n600_3_2.csv" in str(e.value) and "tb1000_2.csv" in str(e.value)


# ---------------------------------------------------------------------------------------------- bearing-sim

def test_bearing_sim_dataset_deterministic_and_cached(tmp_path, monkeypatch):
    train, test, info = build_datasets("bearing-sim", T=4, data_dir=str(tmp_path / "a"))
    assert info == DataInfo("bearing-sim", 4, 1, 0, True, "mra_snn", lam=0.7, temperature=3.0, signal_length=L)
    assert train.classes == ("normal", "inner", "outer", "ball")
    assert (len(train), len(test)) == (1440, 360) and np.bincount(test.targets).tolist() == [90] * 4
    assert train[0][0].shape == (1, L) and float(train.windows.abs().max()) == 1.0
    other, _, _ = build_datasets("bearing-sim", T=4, data_dir=str(tmp_path / "b"))  # generated again
    assert torch.equal(other.windows, train.windows) and other.targets == train.targets
    monkeypatch.setattr(bg, "_simulate_dataset", lambda config: pytest.fail("re-simulated a cached dataset"))
    again, _, _ = build_datasets("bearing-sim", T=4, data_dir=str(tmp_path / "a"))
    assert torch.equal(again.windows, train.windows)


def _envelope_spectrum(x, fs, band=(2000.0, 4000.0)):
    """Envelope analysis: band-pass around the resonance (FFT mask), |analytic signal|, its spectrum."""
    n = len(x)
    spectrum = np.fft.fft(x)
    f = np.fft.fftfreq(n, 1 / fs)
    analytic = np.where((f >= band[0]) & (f <= band[1]), 2 * spectrum, 0)  # positive band only
    envelope = np.abs(np.fft.ifft(analytic))
    return np.fft.rfftfreq(n, 1 / fs), np.abs(np.fft.rfft(envelope - envelope.mean()))


def test_bearing_sim_fault_frequencies_in_envelope_spectrum():
    config = bg.BearingSimConfig()
    fs, rpm = config.sample_rate, 1500.0
    freqs = config.geometry.frequencies(rpm / 60)
    assert freqs["bpfo"] / 25 == pytest.approx(3.585, abs=1e-3) and freqs["bpfi"] / 25 == pytest.approx(5.415, abs=1e-3)
    assert 2 * freqs["bsf"] / 25 == pytest.approx(4.713, abs=1e-3)  # the SKF 6205's published multiples
    expected = {"outer": freqs["bpfo"], "inner": freqs["bpfi"], "ball": freqs["bsf"]}

    def strength(f, spec, at):  # the peak within 2% of `at`, over the spectrum's median in 5..500 Hz
        near = np.abs(f - at) <= 0.02 * at
        return spec[near].max() / np.median(spec[(f > 5) & (f < 500)])

    for k, fault in enumerate(bg.BEARING_SIM_CLASSES):
        x = bg.simulate_bearing_signal(fault, rpm, int(2 * fs), np.random.default_rng(k), config)
        f, spec = _envelope_spectrum(x, fs)
        for other, at in expected.items():
            if other == fault:
                assert strength(f, spec, at) > 10, (fault, at)
            else:
                assert strength(f, spec, at) < 5, (fault, other, at)
        if fault == "inner":  # sidebands at BPFI +- the shaft rate (the modulation)
            assert strength(f, spec, freqs["bpfi"] + rpm / 60) > 5 and strength(f, spec, freqs["bpfi"] - rpm / 60) > 5
        if fault == "ball":  # the cage rate (its modulation)
            assert strength(f, spec, freqs["ftf"]) > 5


def test_simulate_bearing_signal_rejects_unknown_fault():
    with pytest.raises(ValueError, match="normal"):
        bg.simulate_bearing_signal("cage", 1500, 100, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- noise

@pytest.mark.parametrize("snr_db", [-4.0, 0.0, 8.0])
def test_add_noise_snr_measures_as_asked(snr_db):
    torch.manual_seed(0)
    t = torch.arange(L) / 12000.0
    amp = torch.rand(256, 1, 1) * 3 + 0.1  # windows of different power
    clean = amp * torch.sin(2 * torch.pi * 700 * t + torch.rand(256, 1, 1) * 6)
    noisy = bg.add_noise_snr(clean, snr_db, generator=torch.Generator().manual_seed(1))
    noise = (noisy - clean).double()
    measured = 10 * torch.log10(clean.double().pow(2).mean(-1) / noise.pow(2).mean(-1))  # per window
    assert abs(float(measured.mean()) - snr_db) < 0.1
    assert 0.05 < float(measured.std()) < 0.5  # Gaussian noise: each window scatters by ~0.2 dB
    again = bg.add_noise_snr(clean, snr_db, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, noisy)  # deterministic for a generator
    assert not torch.equal(bg.add_noise_snr(clean, snr_db, generator=torch.Generator().manual_seed(2)), noisy)


def test_add_noise_snr_dtypes_and_errors():
    x = torch.randn(4, 1, L).to(torch.bfloat16)
    x[0] = 0
    out = bg.add_noise_snr(x, 3.0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.equal(out[0], x[0])  # silence stays
    assert torch.isfinite(out.float()).all()
    with pytest.raises(TypeError, match="floating-point"):
        bg.add_noise_snr(torch.ones(2, 3, dtype=torch.int64), 0.0)
    with pytest.raises(ValueError, match="finite"):
        bg.add_noise_snr(torch.ones(2, 3), math.nan)
    with pytest.raises(ValueError, match="batch first"):
        bg.add_noise_snr(torch.ones(3), 0.0)


def test_data_info_signal_fields():
    image = DataInfo("digits", 10, 1, 8, True, "convsnn", 0.7, 3.0)  # positional, as before
    assert not image.is_signal and image.input_shape == (1, 8, 8) and image.signal_length is None
    with pytest.raises(ValueError, match="image_size=0"):
        DataInfo("x", 4, 1, 8, True, "m", 0.7, 3.0, signal_length=1024)
    with pytest.raises(ValueError, match="signal_length"):
        DataInfo("x", 4, 1, 0, True, "m", 0.7, 3.0)

