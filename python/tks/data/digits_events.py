"""``digits-events``: the bundled digits recorded by a simulated event camera, the way N-MNIST was
recorded from MNIST (Orchard et al., 2015: the sensor makes three saccades in front of a static
digit on a monitor). Offline, generated in seconds, cached on disk.

Each 8x8 digit (``tks/data/digits.npz``, the same train/test split as ``digits``) is shown as
squares of ``digit_scale`` sensor pixels (12x12 on the 16x16 sensor by default), blurred by the
optics, on a background at ``background`` (0.3) of the white level, and moves along three straight
saccades of ``saccade_ms`` (100 ms) each, the same path for every recording as in N-MNIST (a
triangle: right, down-left, up-left) with a smooth bell-shaped velocity. A DVS pixel model turns the
moving picture into events:

- log intensity ``L = log(I)``, ``I`` in ``[background, 1]``, sampled every ``dt_ms``;
- an ON (OFF) event each time ``L`` rises (falls) by the pixel's contrast threshold from the level
  of the pixel's last event (ESIM-style: several events per step when the change is large, their
  timestamps interpolated linearly inside the step);
- per-pixel threshold mismatch: ON and OFF thresholds drawn once per sensor, ``N(threshold,
  threshold_sigma)`` (fixed-pattern, the same for every recording, as one physical camera);
- a random initial reference level per pixel and recording, uniform in the pixel's dead band (the
  sensor was running before);
- a refractory period: a crossing within ``refractory_ms`` of the pixel's previous event is lost
  (its reference level still moves on);
- background-activity noise: Poisson events at ``noise_hz`` per pixel, random polarity.

Events are binned into T frames ``[T, 2, H, W]`` (channel = polarity, 0 OFF, 1 ON) by our own
binning, not tonic's ``ToFrame``: bin ``t * T // duration`` over the fixed recording duration
(300 ms). That makes the bins nest exactly (T frames are sums of adjacent Tt frames for any Tt that
is a multiple of T: ``floor(floor(t*k*T/D)/k) = floor(t*T/D)``), which TSSD needs; tonic's
``n_time_bins`` window is ``(t_last - t_first) // T`` of each recording's own events (so bins of
different T do not nest, and the last event is always dropped).

About 480 events per 300 ms recording (a third of them noise). Each frame holds part of the
digit: only the edges across the current motion fire, and the frames near the saccades' turning
points hold few events. Measured (logistic regression on the frame pixels, the 360 test digits, T=8):
72% from the first frame alone, 91% from the first two, 95% from all eight.

The events (not the frames) are cached in ``data_dir/cache/digits-events-<key>.npz``; the key is a
hash of this module's source, the camera parameters, the seed and the digits file, so a changed
generator or parameter never reads a stale cache. Frames for the asked T are binned from the cached
events when the dataset is built (well under a second).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import DataInfo, DatasetNotFoundError
from .events import EVENT_DTYPE
from .images import DIGITS_FILE

DIGITS_EVENTS_SEED = 0  # the dataset's seed (the camera and every recording); fixed: one dataset


@dataclass(frozen=True)
class DigitEventCamera:
    """Parameters of the simulated recording (the defaults make ``digits-events``).

    Geometry in sensor pixels, times in ms. The path is the same for every recording (as N-MNIST's
    pan-tilt motion): a triangle with vertices ``saccade * (-1, -2/3), (1, -2/3), (0, 1)`` around
    the centre (x right, y down), one saccade per side, each starting and ending at rest.
    """

    size: int = 16                # sensor H = W
    digit_scale: float = 1.5      # sensor pixels per digit pixel (8x8 -> 12x12)
    blur: float = 0.5             # Gaussian blur of the optics and pixel area, sigma in pixels
    background: float = 0.3       # luminance of the monitor's black relative to its white
    saccade: float = 1.5          # path amplitude in pixels
    saccade_ms: float = 100.0     # three saccades: 300 ms recordings
    dt_ms: float = 1.0            # simulation step
    threshold: float = 0.4        # contrast threshold (log intensity), ON and OFF
    threshold_sigma: float = 0.06  # per-pixel mismatch (std; 15% as v2e's 0.03 of 0.2), fixed per sensor
    refractory_ms: float = 0.5
    noise_hz: float = 2.0         # background-activity events per pixel per second

    @property
    def duration_us(self) -> int:
        return int(round(3 * self.saccade_ms * 1000))

    @property
    def n_steps(self) -> int:
        return int(round(3 * self.saccade_ms / self.dt_ms))


def saccade_path(cam: DigitEventCamera) -> np.ndarray:
    """Offsets ``[n_steps + 1, 2]`` (x, y, pixels) of the digit at times ``k * dt_ms``."""
    a = cam.saccade
    vertices = np.array([[-a, -2 * a / 3], [a, -2 * a / 3], [0.0, a], [-a, -2 * a / 3]])
    t = np.arange(cam.n_steps + 1) * cam.dt_ms / cam.saccade_ms  # in saccades, 0..3
    seg = np.minimum(t.astype(np.int64), 2)
    u = t - seg
    s = u - np.sin(2 * np.pi * u) / (2 * np.pi)  # raised-cosine velocity: starts and stops at rest
    return vertices[seg] + s[:, None] * (vertices[seg + 1] - vertices[seg])


def _kernels(cam: DigitEventCamera, offsets: np.ndarray) -> torch.Tensor:
    """``[steps, H, 8]`` float32: weight of digit column b at sensor column j when the digit is
    moved by ``offsets [steps]``: each digit pixel is a square of side ``digit_scale`` blurred by a
    Gaussian of std ``blur`` and sampled at the pixel centres (the 2-D blur is separable)."""
    s, h = cam.digit_scale, cam.size
    centres = np.arange(h) + 0.5
    edges = np.arange(9) * s - 4 * s + h / 2  # the digit pixels' edges, centred on the sensor
    z = (centres[None, :, None] - edges[None, None, :] - offsets[:, None, None]) / cam.blur
    cdf = 0.5 * (1 + torch.erf(torch.from_numpy(z) / np.sqrt(2))).numpy()
    return torch.from_numpy((cdf[..., :-1] - cdf[..., 1:]).astype(np.float32))


@contextlib.contextmanager
def _one_thread():
    """torch on one thread: the simulation's ops are small, and on a busy machine a second OpenMP
    thread that has to wait for a core makes every op wait (measured 8x slower on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def simulate_digit_events(digits: np.ndarray, keys: Sequence[int], cam: DigitEventCamera = DigitEventCamera(),
                          seed: int = DIGITS_EVENTS_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Record 8x8 digits with the simulated event camera (all of them at once, vectorised).

    Args:
        digits: ``[N, 8, 8]`` grey values 0..16 (the bundled digits' scale).
        keys: one integer per digit: its recording's randomness (initial levels, noise) comes from
            ``(seed, key)`` alone, so a subset gives the same events as the whole set.
        cam: the camera and motion parameters. seed: the dataset seed (the sensor's mismatch too).

    Returns:
        ``(events, offsets)``: one structured array (fields t [us], x, y, p; ``EVENT_DTYPE``), the
        recordings one after the other, each sorted by time; recording i is
        ``events[offsets[i]:offsets[i + 1]]``.

    Example::

        events, offsets = simulate_digit_events(x_train[:4], keys=range(4))
    """
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.shape[1:] != (8, 8):
        raise ValueError(f"digits must be [N, 8, 8], got shape {digits.shape}")
    keys = [int(k) for k in keys]
    if len(keys) != len(digits):
        raise ValueError(f"keys must give one integer per digit: {len(keys)} keys for {len(digits)} digits")
    with _one_thread():
        return _simulate(digits, keys, cam, seed)


def _simulate(digits: np.ndarray, keys: list[int], cam: DigitEventCamera, seed: int):
    n, h = len(digits), cam.size
    pix = h * h
    dt_us, duration = cam.dt_ms * 1000.0, cam.duration_us

    sensor = np.random.default_rng([seed, 0x5E45])  # one physical sensor: fixed-pattern mismatch
    c_on = torch.from_numpy(np.maximum(sensor.normal(cam.threshold, cam.threshold_sigma, pix), 0.01).astype(np.float32))
    c_off = torch.from_numpy(np.maximum(sensor.normal(cam.threshold, cam.threshold_sigma, pix), 0.01).astype(np.float32))
    rngs = [np.random.default_rng([seed, 1, k]) for k in keys]
    phase = torch.from_numpy(np.concatenate([r.uniform(0, 1, pix) for r in rngs] + [np.zeros(0)]).astype(np.float32))

    path = saccade_path(cam)
    kx, ky = _kernels(cam, path[:, 0]), _kernels(cam, path[:, 1])
    d = torch.from_numpy(digits.astype(np.float32) / 16.0)

    def log_image(k):  # [N * H * W]: Ky D Kx^T, as two plain matrix products
        rows = torch.matmul(d, kx[k].T)  # [N, 8, W]
        image = torch.matmul(rows.transpose(1, 2), ky[k].T).transpose(1, 2)  # [N, H, W]
        return torch.log(cam.background + (1 - cam.background) * image.clamp(0, 1)).reshape(-1)

    con_all, coff_all = c_on.repeat(n), c_off.repeat(n)
    level_prev = log_image(0)
    # the sensor was running before: each pixel starts anywhere inside its dead band (no event yet)
    ref = level_prev - (phase * (con_all + coff_all) - coff_all)
    last = torch.full((n * pix,), -1e12, dtype=torch.float64)  # each pixel's last event time (us)
    refractory = cam.refractory_ms * 1000.0
    found_pixel, found_t, found_p = [], [], []
    for k in range(1, cam.n_steps + 1):
        level = log_image(k)
        diff = level - ref
        fired = ((diff >= con_all) | (diff <= -coff_all)).nonzero().squeeze(1)  # a few % of the pixels
        if len(fired):
            up = diff[fired] > 0
            step = torch.where(up, c_on[fired % pix], -c_off[fired % pix])  # the signed threshold
            count = torch.floor(diff[fired] / step)  # crossings in this step
            start, lp = ref[fired].double(), level_prev[fired].double()
            change = level[fired].double() - lp
            ref[fired] = ref[fired] + count * step
            for j in range(1, int(count.max()) + 1):
                sel = (count >= j).nonzero().squeeze(1)
                # when the linearly interpolated level crosses its j-th threshold in this step
                u = ((start[sel] + j * step[sel].double() - lp[sel]) / change[sel]).clamp(0, 1)
                t = (k - 1 + u) * dt_us
                px = fired[sel]
                keep = t - last[px] >= refractory  # lost inside the refractory period
                px, t = px[keep], t[keep]
                last[px] = t
                found_pixel.append(px)
                found_t.append(t)
                found_p.append(up[sel][keep])
        level_prev = level
    pixel = torch.cat(found_pixel + [torch.zeros(0, dtype=torch.int64)]).numpy()
    t = np.floor(torch.cat(found_t + [torch.zeros(0, dtype=torch.float64)]).numpy()).astype(np.int64)
    t = np.minimum(t, duration - 1)
    p = torch.cat(found_p + [torch.zeros(0, dtype=torch.bool)]).numpy().astype(np.int64)
    sample, rest = np.divmod(pixel, pix)
    y, x = np.divmod(rest, h)

    # background activity: a Poisson number per recording, uniform in pixels and time, either polarity
    noise = [np.zeros((0, 5), np.int64)]
    for i, r in enumerate(rngs):
        m = r.poisson(cam.noise_hz * pix * duration * 1e-6)
        noise.append(np.stack([np.full(m, i), r.integers(0, duration, m), r.integers(0, h, m),
                               r.integers(0, h, m), r.integers(0, 2, m)], 1))
    noise = np.concatenate(noise)
    sample, t, x, y, p = (np.concatenate([a, noise[:, c]]) for c, a in enumerate((sample, t, x, y, p)))

    order = np.argsort(sample * duration + t, kind="stable")  # by recording, then time
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t[order], x[order], y[order], p[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sample, minlength=n))]).astype(np.int64)
    return events, offsets


def events_to_frames(events: np.ndarray, offsets: np.ndarray, T: int, duration_us: int, size: int) -> np.ndarray:
    """Bin recordings into ``[N, T, 2, size, size]`` float32 event counts: event at time t goes to
    bin ``t * T // duration_us`` (times in ``[0, duration_us)``), channel p (0 OFF, 1 ON).

    Bins nest exactly: the frames for T equal the sums of adjacent frames for any multiple of T
    (``sum_adjacent_bins``)."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1 (the number of time bins)")
    t = events["t"].astype(np.int64)
    if len(t) and (t.min() < 0 or t.max() >= duration_us):
        raise ValueError(f"event times must lie in [0, duration_us={duration_us}), got [{t.min()}, {t.max()}]")
    n = len(offsets) - 1
    sample = np.repeat(np.arange(n), np.diff(offsets))
    bins = t * int(T) // duration_us
    flat = (((sample * T + bins) * 2 + events["p"]) * size + events["y"]) * size + events["x"]
    counts = np.bincount(flat.astype(np.int64), minlength=n * T * 2 * size * size)
    return counts.astype(np.float32).reshape(n, T, 2, size, size)


class DigitsEvents(Dataset):
    """``(frames [T, 2, H, W] float32, label)`` of the simulated recordings; ``events(i)`` is the
    recording itself (structured array t [us], x, y, p)."""

    def __init__(self, events: np.ndarray, offsets: np.ndarray, labels: np.ndarray, T: int,
                 cam: DigitEventCamera):
        self._events, self._offsets, self.cam, self.T = events, offsets, cam, T
        self.frames = torch.from_numpy(events_to_frames(events, offsets, T, cam.duration_us, cam.size))
        self.targets = [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.frames[i], self.targets[i]

    def events(self, i: int) -> np.ndarray:
        return self._events[self._offsets[i]:self._offsets[i + 1]]


def _cache_key(cam: DigitEventCamera, seed: int) -> str:
    h = hashlib.sha1()
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())  # the generator's own source: any change to it regenerates
    with open(DIGITS_FILE, "rb") as f:
        h.update(f.read())
    h.update(json.dumps({"camera": asdict(cam), "seed": seed}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_digits_events(data_dir: str, cam: DigitEventCamera = DigitEventCamera(), seed: int = DIGITS_EVENTS_SEED):
    """``{split: (events, offsets, labels)}`` for train and test, from the cache or generated (and
    cached) now. Returns the cache path too."""
    if not os.path.exists(DIGITS_FILE):
        raise DatasetNotFoundError(
            f"the bundled digits file {DIGITS_FILE} is missing: reinstall tks-kernels "
            f"(pip install --no-build-isolation -e .), it ships as package data")
    path = os.path.join(data_dir, "cache", f"digits-events-{_cache_key(cam, seed)}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            out = {}
            for split in ("train", "test"):
                events = np.empty(len(f[f"{split}_t"]), dtype=EVENT_DTYPE)
                for key in ("t", "x", "y", "p"):
                    events[key] = f[f"{split}_{key}"]
                out[split] = (events, f[f"{split}_offsets"], f[f"{split}_labels"])
        return out, path
    with np.load(DIGITS_FILE) as f:
        parts = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    out, arrays = {}, {}
    for code, split in enumerate(("train", "test")):
        x = parts[f"x_{split}"]
        # keys: split and index, so train and test recordings never share randomness
        events, offsets = simulate_digit_events(x, keys=[code * 1_000_000 + i for i in range(len(x))], cam=cam,
                                                seed=seed)
        out[split] = (events, offsets, parts[f"y_{split}"])
        arrays.update({f"{split}_t": events["t"].astype(np.int32), f"{split}_x": events["x"].astype(np.uint8),
                       f"{split}_y": events["y"].astype(np.uint8), f"{split}_p": events["p"].astype(np.uint8),
                       f"{split}_offsets": offsets, f"{split}_labels": parts[f"y_{split}"]})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: concurrent processes (DDP) or an interrupted write leave no broken cache
    return out, path


def _digits_events(T: int, data_dir: str, download: bool, augment: bool):
    cam = DigitEventCamera()
    splits, _ = load_digits_events(data_dir, cam)
    train, test = (DigitsEvents(*splits[s], T=T, cam=cam) for s in ("train", "test"))
    # no augmentation (as for digits): a flip changes a digit's meaning, and the saccades already move it
    info = DataInfo("digits-events", 10, 2, cam.size, False, "convsnn", lam=0.3, temperature=5.0)
    return train, test, info


DATASETS: dict[str, Callable] = {"digits-events": _digits_events}

__all__ = ["DigitEventCamera", "DigitsEvents", "simulate_digit_events", "events_to_frames",
                           "load_digits_events", "DIGITS_EVENTS_SEED"]
