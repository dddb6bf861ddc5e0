"""Event-camera datasets: CIFAR10-DVS and N-Caltech101, read with tonic and binned into T frames.

Items are ``(frames [T, 2, 48, 48] float32, label)``, the T frames of one recording.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .common import DataInfo, DatasetNotFoundError, download_failed, split_per_class

DVS_SIZE = 48  # frames are resized to 48x48 (the TET / TKS VGG-SNN input)
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ----------------------------------------------------------------------------------------------
# Event datasets: CIFAR10-DVS, N-Caltech101

EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])


def _read_cifar10_dvs(path: str) -> np.ndarray:
    if path.endswith(".npz"):
        with np.load(path) as f:
            events = np.empty(len(f["t"]), dtype=EVENT_DTYPE)
            for key in ("t", "x", "y", "p"):
                events[key] = f[key]
        return events
    try:
        from tonic.io import read_aedat4

        raw = read_aedat4(path)
    except ImportError as e:
        raise ImportError(
            f"reading {path} (AEDAT4) needs the aedat package: pip install aedat ({e})"
        ) from e
    events = np.empty(len(raw), dtype=EVENT_DTYPE)
    for ours, theirs in zip(("t", "x", "y", "p"), raw.dtype.names):
        events[ours] = raw[theirs]
    return events


def _read_ncaltech101(path: str) -> np.ndarray:
    from tonic.io import read_mnist_file

    raw = read_mnist_file(path, dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    events = np.empty(len(raw), dtype=EVENT_DTYPE)
    events["t"] = raw["t"]
    events["x"] = raw["x"] - (raw["x"].min() if len(raw) else 0)  # as tonic: recordings are cropped
    events["y"] = raw["y"] - (raw["y"].min() if len(raw) else 0)
    events["p"] = raw["p"]
    return events


class EventFolder(Dataset):
    """Event recordings in ``root/<class>/<file>`` (tonic's layout): ``(events, label)``.

    ``events`` is a structured array with fields t, x, y, p. Classes are the sorted folder names
    (``classes`` fixes the list and its order instead).
    """

    def __init__(self, root: str, suffixes: tuple[str, ...], reader: Callable[[str], np.ndarray],
                 classes: Optional[tuple[str, ...]] = None):
        self.root, self.reader = root, reader
        files: list[tuple[str, str]] = []
        for path, dirs, names in os.walk(root):
            dirs.sort()
            for file in sorted(names):
                if file.endswith(suffixes):
                    files.append((os.path.join(path, file), os.path.basename(path)))
        found = sorted({label for _, label in files})
        self.classes = tuple(classes) if classes is not None else tuple(found)
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f"{root} holds folders that are not classes of this dataset: {unknown}")
        index = {c: i for i, c in enumerate(self.classes)}
        self.files = [f for f, _ in files]
        self.targets = [index[label] for _, label in files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.reader(self.files[i]), self.targets[i]


class EventsToFrames(Dataset):
    """``(events, label) -> (frames [T, 2, size, size] float32 numpy, label)``: ToFrame then resize."""

    def __init__(self, events: Dataset, T: int, sensor_size: Optional[tuple[int, int, int]], size: int = DVS_SIZE):
        self.events, self.T, self.sensor_size, self.size = events, T, sensor_size, size

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: int):
        from tonic.transforms import ToFrame

        events, label = self.events[i]
        if len(events) == 0:  # an empty recording: T empty frames
            return np.zeros((self.T, 2, self.size, self.size), dtype=np.float32), label
        sensor = self.sensor_size
        if sensor is None:  # recordings of different sizes (N-Caltech101): this one's
            sensor = (int(events["x"].max()) + 1, int(events["y"].max()) + 1, 2)
        # n_time_bins windows of (t_last - t_first) // T, end exclusive (tonic's SliceByTimeBins)
        frames = ToFrame(sensor_size=sensor, n_time_bins=self.T)(events)  # [T, 2, H, W] counts
        frames = torch.from_numpy(np.asarray(frames, dtype=np.float32))
        frames = torch.nn.functional.interpolate(frames, size=(self.size, self.size), mode="bilinear",
                                                 align_corners=False)
        return frames.numpy(), label


def sum_adjacent_bins(frames, T: int, dim: int = -4):
    """Frames of a recording binned into ``Tt`` time bins -> ``T`` bins, each the sum of ``Tt // T``
    adjacent ones (the same events in fewer, longer bins: TSSD's student input beside its teacher's).

    Args:
        frames: tensor or numpy array ``[..., Tt, C, H, W]`` (an item ``[Tt, 2, H, W]`` or a loader
            batch ``[B, Tt, 2, H, W]``); ``dim`` names the time axis when it is elsewhere (``dim=0``
            for the models' ``[Tt, B, C, H, W]``).
        T: the number of bins wanted; ``Tt`` must be a multiple of it.

    Returns: the same type, ``Tt`` replaced by ``T`` along ``dim``.

    For ``digits-events`` the result equals the dataset built with ``T`` exactly (its bins nest).
    tonic's ``ToFrame(n_time_bins=...)`` (cifar10-dvs, ncaltech101) does not nest: its bin width is
    ``(t_last - t_first) // T`` per recording, so bin j of the T-binning starts up to ``j * (k - 1)``
    microseconds (k = Tt // T) later than the sum of k Tt-bins, and the frames differ by the few events
    in those slivers; summing is still the right way to give the student the teacher's events.

    Example::

        x_teacher, _ = train_set[0]                  # built with T=Tt: [Tt, 2, H, W]
        x_student = sum_adjacent_bins(x_teacher, T)  # [T, 2, H, W]
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1 (the number of time bins wanted)")
    ndim = frames.ndim
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim={dim} is out of range for frames of shape {tuple(frames.shape)}")
    tt = frames.shape[dim]
    if tt % T:
        raise ValueError(f"the frames have {tt} time bins (shape {tuple(frames.shape)}, dim={dim}), not a multiple "
                         f"of T={T}: adjacent bins can only be summed into T bins when Tt is a multiple of T "
                         f"(choose the teacher's T as a multiple of the student's)")
    dim = dim % ndim
    shape = tuple(frames.shape[:dim]) + (T, tt // T) + tuple(frames.shape[dim + 1:])
    if isinstance(frames, torch.Tensor):
        return frames.reshape(shape).sum(dim + 1)
    return np.asarray(frames).reshape(shape).sum(dim + 1)


class FrameAugment:
    """Training augmentation of ``frames [T, C, H, W]``: horizontal flip (p = 0.5) and a random shift
    of up to ``max_shift`` pixels in x and y (zero fill), the same for every frame of a sample."""

    def __init__(self, max_shift: int = 4):
        self.max_shift = max_shift

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < 0.5:
            frames = frames.flip(-1)
        s = self.max_shift
        if s:
            dx, dy = (int(v) for v in torch.randint(-s, s + 1, (2,)))
            padded = torch.nn.functional.pad(frames, (s, s, s, s))
            h, w = frames.shape[-2:]
            frames = padded[..., s + dy:s + dy + h, s + dx:s + dx + w]
        return frames


class CachedFrames(Dataset):
    """Frames from tonic's ``DiskCachedDataset`` as tensors, with an optional augmentation."""

    def __init__(self, cached, targets: list[int], augment: Optional[Callable] = None):
        self.cached, self.targets, self.augment = cached, targets, augment

    def __len__(self) -> int:
        return len(self.cached)

    def __getitem__(self, i: int):
        frames, label = self.cached[i]
        frames = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        if self.augment is not None:
            frames = self.augment(frames)
        return frames, int(label)


def _frames_cache(events: EventFolder, indices: list[int], T: int, sensor_size, cache_root: str, tag: str):
    from tonic import DiskCachedDataset

    # The cache is keyed by item index: name the folder after T, the size and the exact file list,
    # so a changed dataset or T never reads stale frames.
    rel = "\n".join(os.path.relpath(events.files[i], events.root) for i in indices)
    digest = hashlib.sha1(f"{T}|{DVS_SIZE}|{sensor_size}|{rel}".encode()).hexdigest()[:12]
    path = os.path.join(cache_root, f"{tag}-T{T}-{DVS_SIZE}px-{digest}")
    return DiskCachedDataset(EventsToFrames(Subset(events, indices), T, sensor_size), cache_path=path)


def _event_dataset(name: str, T: int, data_dir: str, download: bool, augment: bool):
    if name == "cifar10-dvs":
        root = os.path.join(data_dir, "CIFAR10DVS")
        suffixes, reader, classes, sensor = (".aedat4", ".npz"), _read_cifar10_dvs, CIFAR10_DVS_CLASSES, (128, 128, 2)
        expected = f"{root}/<class>/*.aedat4 (tonic) or *.npz with t, x, y, p (spikingjelly's events_np)"
        size_hint = "about 7 GB"
    else:
        root = os.path.join(data_dir, "NCALTECH101", "Caltech101")
        suffixes, reader, classes, sensor = (".bin",), _read_ncaltech101, None, None
        expected = f"{root}/<class>/*.bin"
        size_hint = "about 2 GB"
    events = EventFolder(root, suffixes, reader, classes) if os.path.isdir(root) else None
    if (events is None or len(events) == 0) and download:
        try:
            _download_events(name, data_dir)
        except Exception as e:  # noqa: BLE001 - urllib, tonic and archive errors alike
            raise download_failed(name, _download_url(name), f"the recordings are at {expected}", e) from e
        events = EventFolder(root, suffixes, reader, classes) if os.path.isdir(root) else None
    if events is None or len(events) == 0:
        raise DatasetNotFoundError(
            f"{name} is not in {data_dir}: expected {expected}. Pass --download to fetch it with tonic "
            f"({size_hint}), or --data-dir DIR pointing to the folder that holds "
            f"{os.path.relpath(root, data_dir)}/"
        )
    train_idx, test_idx = split_per_class(events.targets)
    cache_root = os.path.join(data_dir, "cache")
    train = CachedFrames(_frames_cache(events, train_idx, T, sensor, cache_root, f"{name}-train"),
                         [events.targets[i] for i in train_idx], FrameAugment() if augment else None)
    test = CachedFrames(_frames_cache(events, test_idx, T, sensor, cache_root, f"{name}-test"),
                        [events.targets[i] for i in test_idx])
    lam, temperature = 0.3, 5.0  # the authors' neuromorphic settings
    info = DataInfo(name, len(events.classes), 2, DVS_SIZE, False, "vggsnn", lam=lam, temperature=temperature)
    return train, test, info


def _download_url(name: str) -> str:
    import tonic

    cls = tonic.datasets.CIFAR10DVS if name == "cifar10-dvs" else tonic.datasets.NCALTECH101
    return getattr(cls, "url", f"the URL of tonic.datasets.{cls.__name__}")


def _download_events(name: str, data_dir: str) -> None:
    import tonic

    if name == "cifar10-dvs":
        tonic.datasets.CIFAR10DVS(save_to=data_dir)  # downloads and extracts the per-class archives
        return
    location = os.path.join(data_dir, "NCALTECH101")
    tonic.datasets.NCALTECH101(save_to=data_dir)  # downloads and extracts the outer archive
    # tonic 1.7 leaves the recordings in the inner Caltech101.zip: extract it
    inner = os.path.join(location, "Caltech101.zip")
    if os.path.isfile(inner) and not os.path.isdir(os.path.join(location, "Caltech101")):
        from tonic.download_utils import extract_archive

        extract_archive(inner, location)


DATASETS: dict[str, Callable] = {
    "cifar10-dvs": lambda **kw: _event_dataset("cifar10-dvs", **kw),
    "ncaltech101": lambda **kw: _event_dataset("ncaltech101", **kw),
}
