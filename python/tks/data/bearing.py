"""Bearing-fault vibration signals: MFPT and JNU (real recordings, read from disk) and
``bearing-sim`` (simulated, offline). Items are ``(window [1, 1024] float32, label)``: a raw
vibration window the model presents at every one of its T steps (direct encoding; ``static=True``).

All three share one protocol:

- each recording is cut into non-overlapping windows of ``WINDOW = 1024`` samples (the remainder
  is dropped);
- classes are balanced: every class keeps as many windows as the class with the fewest (its first
  ones in time), so the longer normal recordings do not dominate;
- a stratified 80/20 train/test split (``split_per_class``, seed 0, the same for every run). As in
  the usual protocol, windows of one recording fall on both sides of the split;
- each window is divided by its maximum absolute value (max-abs, to ``[-1, 1]``; a window of
  zeros stays zero). Max-abs rather than min-max keeps the zero level and the sign, so the window
  stays a zero-mean vibration and noise added for the robustness test stays symmetric;
- no training augmentation.

Datasets (folders under ``data_dir``; files are found by name anywhere below them, so the published
archives can be unpacked as they are):

- ``mfpt``: the Society for Machinery Failure Prevention Technology bearing data
  (https://www.mfpt.org/fault-data-sets/), ``DATA/MFPT/``: MATLAB files with a struct ``bearing``
  holding ``sr`` (sample rate), ``gs`` (the signal, g), ``load`` (lbs) and ``rate`` (shaft Hz).
  The common 15-class protocol: ``baseline_1.mat`` (normal), ``OuterRaceFault_vload_1..7.mat``
  (outer race at 25, 50, 100, 150, 200, 250, 300 lbs) and ``InnerRaceFault_vload_1..7.mat`` (inner
  race at 0, 50, 100, 150, 200, 250, 300 lbs); shaft 25 Hz. The fault files are sampled at
  48,828 Hz (3 s), the baseline at 97,656 Hz (6 s): the baseline is decimated by 2 to 48,828 Hz
  (zero-phase FIR low-pass, scipy's ``decimate``) so every window spans the same 21 ms and a model
  cannot tell normal from faulty by the sample rate. 143 windows per class.
- ``jnu``: the Jiangnan University bearing data, ``DATA/JNU/``: one value per line (one CSV
  column), 50 kHz, files ``n600_3_2.csv``, ``ib600_2.csv``, ``ob600_2.csv``, ``tb600_2.csv`` and
  the same at 800 and 1000 rpm: 12 classes, normal / inner / outer / ball (``tb``: rolling
  element) at 600, 800, 1000 rpm. The fault recordings are 10 s, the normal ones 30 s: 488
  windows per class.
- ``bearing-sim``: a simulation (``simulate_bearing_signal``), **not a benchmark**: 4 classes
  (normal, inner, outer, ball), each recorded at 1200, 1500 and 1800 rpm.

Parsed and simulated windows are cached in ``data_dir/cache/<name>-<key>.npz``; the key hashes this
module's source, the parameters and (for real data) each file's name, size and modification time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import DataInfo, DatasetNotFoundError, split_per_class

WINDOW = 1024
TEST_FRACTION = 0.2
SPLIT_SEED = 0

MFPT_RATE = 48828  # Hz, the fault files' rate (the baseline's 97,656 Hz is decimated by 2 to it)
MFPT_CLASSES: tuple[tuple[str, str], ...] = (
    ("normal", "baseline_1.mat"),
    *((f"outer-{load}lbs", f"OuterRaceFault_vload_{i}.mat") for i, load in enumerate((25, 50, 100, 150, 200, 250, 300), 1)),
    *((f"inner-{load}lbs", f"InnerRaceFault_vload_{i}.mat") for i, load in enumerate((0, 50, 100, 150, 200, 250, 300), 1)),
)
JNU_RATE = 50000  # Hz
JNU_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (f"{kind}-{rpm}rpm", f"{prefix}{rpm}{suffix}")
    for kind, prefix, suffix in (("normal", "n", "_3_2.csv"), ("inner", "ib", "_2.csv"), ("outer", "ob", "_2.csv"),
                                 ("ball", "tb", "_2.csv"))
    for rpm in (600, 800, 1000)
)


# ---------------------------------------------------------------------------------------------- shared

class SignalWindows(Dataset):
    """``(window [C, L] float32, label)`` from ``windows [N, C, L]`` (already normalised)."""

    def __init__(self, windows: torch.Tensor, targets: list[int], classes: tuple[str, ...], sample_rate: float):
        self.windows, self.targets, self.classes, self.sample_rate = windows, targets, classes, sample_rate

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.windows[i], self.targets[i]


def cut_windows(signal: np.ndarray, length: int = WINDOW) -> np.ndarray:
    """Non-overlapping windows ``[n, length]`` of a 1-D signal (the remainder is dropped)."""
    signal = np.asarray(signal).reshape(-1)
    n = len(signal) // length
    return signal[:n * length].reshape(n, length)


def normalize_max_abs(windows: np.ndarray) -> np.ndarray:
    """Each window (last axis) divided by its maximum absolute value: values in ``[-1, 1]``, the
    zero level and the sign kept; an all-zero window stays zero."""
    peak = np.abs(windows).max(axis=-1, keepdims=True)
    return windows / np.where(peak > 0, peak, 1.0)


def _balanced(per_class: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(windows [N, L], labels [N])`` with every class cut to the smallest class's count."""
    n = min(len(w) for w in per_class)
    windows = np.concatenate([w[:n] for w in per_class])
    labels = np.repeat(np.arange(len(per_class)), n)
    return windows, labels


def _split(name: str, windows: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], sample_rate: float):
    x = torch.from_numpy(normalize_max_abs(windows.astype(np.float64)).astype(np.float32)).unsqueeze(1)
    train_idx, test_idx = split_per_class(labels.tolist(), test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    train, test = (SignalWindows(x[idx], [int(labels[i]) for i in idx], classes, sample_rate)
                   for idx in (train_idx, test_idx))
    info = DataInfo(name, len(classes), 1, 0, True, "mra_snn", lam=0.7, temperature=3.0, signal_length=WINDOW)
    return train, test, info


def _source_hash() -> bytes:
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha1(f.read()).digest()


def _cached(data_dir: str, name: str, key: dict, build: Callable[[], tuple[np.ndarray, np.ndarray]]):
    """``(windows, labels)`` from ``data_dir/cache/<name>-<hash of key and this module>.npz``, or
    built now and written atomically."""
    digest = hashlib.sha1(_source_hash() + json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(data_dir, "cache", f"{name}-{digest}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return f["windows"], f["labels"]
    windows, labels = build()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, windows=windows.astype(np.float32), labels=labels.astype(np.int64))
    os.replace(tmp, path)  # atomic: concurrent processes (DDP) or an interrupted write leave no broken cache
    return windows.astype(np.float32), labels.astype(np.int64)


def find_files(root: str, names: list[str]) -> dict[str, str]:
    """``{name: path}`` of the files called ``names`` anywhere under ``root`` (the first in sorted
    walk order when a name occurs twice); names not found are left out."""
    wanted, found = set(names), {}
    if os.path.isdir(root):
        for path, dirs, files in os.walk(root):
            dirs.sort()
            for file in sorted(files):
                if file in wanted and file not in found:
                    found[file] = os.path.join(path, file)
    return found


def _real_dataset(name: str, data_dir: str, folder: str, classes: tuple[tuple[str, str], ...],
                  read: Callable[[str], np.ndarray], rate: float, where: str):
    root = os.path.join(data_dir, folder)
    names = [file for _, file in classes]
    found = find_files(root, names)
    missing = [f for f in names if f not in found]
    if missing:
        raise DatasetNotFoundError(
            f"{name}: {len(missing)} of its {len(names)} files are not under {root}/ (searched recursively): "
            f"missing {', '.join(missing)}; unpack the dataset ({where}) there as published, "
            f"or pass --data-dir DIR with DIR/{folder}/")
    key = {"name": name, "window": WINDOW, "files": [
        (f, os.path.getsize(found[f]), os.stat(found[f]).st_mtime_ns) for f in names]}
    windows, labels = _cached(data_dir, name, key,
                              lambda: _balanced([cut_windows(read(found[f])) for f in names]))
    return _split(name, windows, labels, tuple(c for c, _ in classes), rate)


# ---------------------------------------------------------------------------------------------- MFPT

def read_mfpt(path: str) -> np.ndarray:
    """The signal ``gs`` of one MFPT file, at ``MFPT_RATE`` (97,656 Hz files decimated by 2)."""
    from scipy.io import loadmat
    from scipy.signal import decimate

    mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    if "bearing" not in mat:
        raise ValueError(f"{path} has no struct 'bearing' (variables: {sorted(k for k in mat if not k.startswith('__'))})")
    bearing = mat["bearing"]
    try:
        rate, signal = float(bearing.sr), np.asarray(bearing.gs, dtype=np.float64).reshape(-1)
    except AttributeError as e:
        raise ValueError(f"{path}: the struct 'bearing' lacks the field sr or gs ({e})") from e
    if round(rate) == 2 * MFPT_RATE:
        return decimate(signal, 2, ftype="fir", zero_phase=True)
    if round(rate) != MFPT_RATE:
        raise ValueError(f"{path}: sample rate sr={rate:g} Hz; the MFPT protocol expects {MFPT_RATE} or {2 * MFPT_RATE}")
    return signal


def _mfpt(T: int, data_dir: str, download: bool, augment: bool):
    return _real_dataset("mfpt", data_dir, "MFPT", MFPT_CLASSES, read_mfpt, MFPT_RATE,
                         "https://www.mfpt.org/fault-data-sets/")


# ---------------------------------------------------------------------------------------------- JNU

def read_jnu(path: str) -> np.ndarray:
    """One JNU file: the first comma-separated column, one sample per line (a header line, if any,
    is skipped)."""
    with open(path, "rb") as f:
        first = f.readline().split(b",")[0].strip()
    try:
        float(first)
        skip = 0
    except ValueError:
        skip = 1
    return np.loadtxt(path, delimiter=",", usecols=0, skiprows=skip, dtype=np.float64, ndmin=1, encoding="latin-1")


def _jnu(T: int, data_dir: str, download: bool, augment: bool):
    return _real_dataset("jnu", data_dir, "JNU", JNU_CLASSES, read_jnu, JNU_RATE,
                         "the Jiangnan University bearing dataset, 12 CSV files")


# ---------------------------------------------------------------------------------------------- bearing-sim

@dataclass(frozen=True)
class BearingGeometry:
    """A deep-groove ball bearing; the default is the SKF 6205-2RS JEM (the drive-end bearing of
    the Case Western Reserve data: 9 balls of 0.3126 in on a 1.537 in pitch circle, contact angle 0)."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """Characteristic frequencies (Hz) at shaft rate ``shaft_hz`` (inner race turning with the
        shaft, outer race fixed): ``ftf`` (cage), ``bpfo``, ``bpfi``, ``bsf`` (ball spin)."""
        ratio = self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))
        return {
            "ftf": shaft_hz / 2 * (1 - ratio),
            "bpfo": self.n_balls * shaft_hz / 2 * (1 - ratio),
            "bpfi": self.n_balls * shaft_hz / 2 * (1 + ratio),
            "bsf": self.pitch_diameter_mm / (2 * self.ball_diameter_mm) * shaft_hz * (1 - ratio ** 2),
        }


BEARING_SIM_CLASSES = ("normal", "inner", "outer", "ball")


@dataclass(frozen=True)
class BearingSimConfig:
    """Parameters of ``bearing-sim`` (amplitudes in units of one fault impulse's peak, g-like).

    Per recording (one class at one speed): the speed varies by ``speed_spread`` (load), the impulse
    amplitude by ``amplitude_spread``, the resonance by ``resonance_spread``, all uniform."""

    geometry: BearingGeometry = field(default_factory=BearingGeometry)
    sample_rate: float = 12000.0
    speeds_rpm: tuple[float, ...] = (1200.0, 1500.0, 1800.0)
    windows_per_recording: int = 150  # per class and speed: 4 x 3 x 150 = 1800 windows
    resonance_hz: float = 3000.0      # the structural resonance each impact excites
    resonance_spread: float = 0.05
    damping: float = 0.05             # damping ratio of the resonance (decay time 1 / (2 pi f zeta) ~ 1 ms)
    slip: float = 0.01                # std of each impact interval, relative (rolling elements slip)
    modulation: float = 0.5           # AM depth: inner race at the shaft rate, ball at the cage rate
    ball_second_impact: float = 0.5   # a ball defect hits the outer race (1) then the inner race (this)
    amplitude_spread: float = 0.2
    speed_spread: float = 0.02
    shaft_harmonics: tuple[float, ...] = (0.2, 0.1, 0.05)  # amplitudes of 1x, 2x, 3x shaft rate
    noise_std: float = 0.15
    seed: int = 0


def simulate_bearing_signal(fault: str, rpm: float, n_samples: int, rng: np.random.Generator,
                            config: BearingSimConfig = BearingSimConfig()) -> np.ndarray:
    """One vibration recording ``[n_samples]`` float64 of a bearing with ``fault`` (one of
    ``BEARING_SIM_CLASSES``) at shaft speed ``rpm``: the standard bearing-fault signal model.

    - Fault impacts at the characteristic frequency from ``config.geometry``: BPFO (outer race),
      BPFI (inner race), 2 x BSF (ball: the defect strikes the outer then the inner race once per
      spin turn, amplitudes 1 and ``ball_second_impact``, so the envelope spectrum shows BSF and its
      harmonics); each interval jittered by ``slip`` (relative std).
    - Each impact excites a decaying resonance ``exp(-zeta w t) sin(w sqrt(1 - zeta^2) t)``.
    - Amplitude modulation ``1 + m cos(2 pi f t + phase)``: at the shaft rate for an inner-race defect
      (it turns through the load zone), at the cage rate for a ball defect; none for the fixed outer race.
    - Shaft harmonics (1x, 2x, 3x, random phases) and white Gaussian noise in every class; ``normal``
      is those alone.

    Example::

        x = simulate_bearing_signal("inner", 1500, 24000, np.random.default_rng(0))  # 2 s at 12 kHz
    """
    if fault not in BEARING_SIM_CLASSES:
        raise ValueError(f"fault={fault!r} is unknown; choose one of {BEARING_SIM_CLASSES}")
    fs, c = config.sample_rate, config
    t = np.arange(n_samples) / fs
    shaft = rpm / 60.0
    signal = np.zeros(n_samples)
    for h, a in enumerate(c.shaft_harmonics, 1):
        signal += a * np.sin(2 * np.pi * h * shaft * t + rng.uniform(0, 2 * np.pi))
    if fault != "normal":
        freqs = c.geometry.frequencies(shaft)
        rate = {"outer": freqs["bpfo"], "inner": freqs["bpfi"], "ball": 2 * freqs["bsf"]}[fault]
        count = int(np.ceil(n_samples / fs * rate)) + 2
        intervals = (1 + c.slip * rng.standard_normal(count)) / rate
        times = rng.uniform(0, 1 / rate) + np.concatenate([[0.0], np.cumsum(intervals[:-1])])
        times = times[times < n_samples / fs]
        amp = rng.uniform(1 - c.amplitude_spread, 1 + c.amplitude_spread) * np.ones(len(times))
        if fault == "inner":
            amp *= 1 + c.modulation * np.cos(2 * np.pi * shaft * times + rng.uniform(0, 2 * np.pi))
        elif fault == "ball":
            amp *= 1 + c.modulation * np.cos(2 * np.pi * freqs["ftf"] * times + rng.uniform(0, 2 * np.pi))
            amp[1::2] *= c.ball_second_impact
        fn = c.resonance_hz * rng.uniform(1 - c.resonance_spread, 1 + c.resonance_spread)
        decay = c.damping * 2 * np.pi * fn
        wd = 2 * np.pi * fn * math.sqrt(1 - c.damping ** 2)
        length = int(np.ceil(10 / decay * fs))  # to exp(-10) of the peak
        first = np.ceil(times * fs).astype(np.int64)  # first sample at or after each impact
        idx = first[:, None] + np.arange(length)[None, :]
        tau = idx / fs - times[:, None]
        response = amp[:, None] * np.exp(-decay * tau) * np.sin(wd * tau)
        inside = idx < n_samples
        np.add.at(signal, idx[inside], response[inside])
    return signal + c.noise_std * rng.standard_normal(n_samples)


def _simulate_dataset(config: BearingSimConfig) -> tuple[np.ndarray, np.ndarray]:
    per_class = []
    n = config.windows_per_recording * WINDOW
    for k, fault in enumerate(BEARING_SIM_CLASSES):
        recordings = []
        for s, rpm in enumerate(config.speeds_rpm):
            rng = np.random.default_rng([config.seed, k, s])
            speed = rpm * rng.uniform(1 - config.speed_spread, 1 + config.speed_spread)
            recordings.append(cut_windows(simulate_bearing_signal(fault, speed, n, rng, config)))
        per_class.append(np.concatenate(recordings))
    return _balanced(per_class)


def _bearing_sim(T: int, data_dir: str, download: bool, augment: bool):
    config = BearingSimConfig()
    windows, labels = _cached(data_dir, "bearing-sim", {"config": asdict(config), "window": WINDOW},
                              lambda: _simulate_dataset(config))
    return _split("bearing-sim", windows, labels, BEARING_SIM_CLASSES, config.sample_rate)


# ---------------------------------------------------------------------------------------------- noise

def add_noise_snr(windows: torch.Tensor, snr_db: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``windows`` plus white Gaussian noise at ``snr_db`` dB, window by window.

    Each window (everything but the first axis: ``[B, C, L]`` or ``[B, L]``) gets noise of power
    ``P / 10^(snr_db / 10)``, ``P`` its mean square; so ``10 log10(P / P_noise) = snr_db`` in
    expectation (over one 1024-sample window the measured SNR scatters by about 0.2 dB; over a batch
    it is within a few hundredths). Computed in fp32, returned in the input dtype; deterministic for
    a given ``generator`` (on the windows' device). An all-zero window stays zero.

    Example::

        g = torch.Generator().manual_seed(0)
        noisy = add_noise_snr(x, -4.0, generator=g)   # x: [B, 1, 1024]
    """
    if not isinstance(windows, torch.Tensor) or not windows.is_floating_point():
        raise TypeError(f"windows must be a floating-point tensor, got {type(windows).__name__}"
                        f"{'' if not isinstance(windows, torch.Tensor) else ' of dtype ' + str(windows.dtype)}")
    if windows.ndim < 2:
        raise ValueError(f"windows must be [B, ...] with the batch first (e.g. [B, 1, 1024]), got shape "
                         f"{tuple(windows.shape)}")
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(snr_db)):
        raise ValueError(f"snr_db={snr_db!r} must be a finite number (dB)")
    if generator is not None and generator.device != windows.device:
        raise ValueError(f"generator is on {generator.device}, the windows on {windows.device}: "
                         f"create it with torch.Generator(device={str(windows.device)!r})")
    x = windows.float()
    power = x.pow(2).flatten(1).mean(1)
    std = torch.sqrt(power / 10.0 ** (float(snr_db) / 10.0)).view(-1, *([1] * (x.ndim - 1)))
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return (x + std * noise).to(windows.dtype)


DATASETS: dict[str, Callable] = {"mfpt": _mfpt, "jnu": _jnu, "bearing-sim": _bearing_sim}
