"""Datasets of the TKS experiments, read from disk (nothing is downloaded unless asked).

``build_datasets(name, T=..., data_dir=..., download=False) -> (train, test, DataInfo)``.

Static datasets yield ``(image [C, H, W] float32, label)``; the model repeats the image over the T
steps (direct encoding: the analog image is the input current at every step). Event datasets yield
``(frames [T, 2, 48, 48] float32, label)``, the T frames of one recording.

- ``digits``: scikit-learn's handwritten digits (1797 8x8 grey images, 10 classes) shipped in the
  package (``tks/data/digits.npz``: a fixed stratified 1437/360 train/test split, pixel values 0..16
  scaled to [0, 1]). Offline, no scikit-learn needed. The default.
- ``cifar10`` / ``cifar100``: the python pickle batches (``cifar-10-batches-py/``,
  ``cifar-100-python/`` under ``data_dir``); ``download=True`` fetches them with torchvision.
  Train: random crop 32 with 4-pixel padding, horizontal flip; both: per-channel normalisation.
- ``cifar10-dvs`` / ``ncaltech101``: event recordings read with tonic's readers, binned into T frames
  by ``tonic.transforms.ToFrame(sensor_size, n_time_bins=T)`` (per polarity: 2 channels), resized to
  48x48 (bilinear), and cached on disk by ``tonic.DiskCachedDataset`` under
  ``data_dir/cache/`` so only the first epoch bins events. Split: 90/10 per class (a fixed shuffle,
  the same for every run). Train augmentation: horizontal flip and a random shift of up to 4 pixels.
  Folders (tonic's layout, where ``download=True`` puts them):
  ``data_dir/CIFAR10DVS/<class>/*.aedat4`` (tonic's release; read with the aedat package, a
  ``train`` extra)
  or ``*.npz`` with arrays ``t, x, y, p`` (spikingjelly's converted ``events_np``), and
  ``data_dir/NCALTECH101/Caltech101/<class>/*.bin``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

DVS_SIZE = 48  # frames are resized to 48x48 (the TET / TKS VGG-SNN input)
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass(frozen=True)
class DataInfo:
    """What a model and the training recipe need to know about a dataset.

    ``static``: items are images ``[C, H, W]`` repeated over T by the model; otherwise sequences
    ``[T, C, H, W]``. ``lam`` / ``temperature``: the TKS authors' settings for this kind of data.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    static: bool
    default_model: str
    lam: float
    temperature: float


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk; the message says what to pass."""


def _choices_error(name: str) -> ValueError:
    return ValueError(f"dataset={name!r} is unknown; choose one of {sorted(DATASETS)}")


def build_datasets(name: str, *, T: int, data_dir: str = "data", download: bool = False,
                   augment: bool = True) -> tuple[Dataset, Dataset, DataInfo]:
    """``(train, test, info)`` of dataset ``name`` (one of ``DATASETS``) for ``T`` timesteps.

    Raises ``DatasetNotFoundError`` when the files are missing and ``download`` is False.
    ``augment=False`` drops the training augmentation (evaluation, tests).
    """
    if name not in DATASETS:
        raise _choices_error(name)
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1 (the number of timesteps)")
    return DATASETS[name](T=T, data_dir=os.path.expanduser(str(data_dir)), download=download, augment=augment)


# ----------------------------------------------------------------------------------------------
# digits (bundled)

DIGITS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.npz")


def _digits(T: int, data_dir: str, download: bool, augment: bool):
    if not os.path.exists(DIGITS_FILE):
        raise DatasetNotFoundError(
            f"the bundled digits file {DIGITS_FILE} is missing: reinstall tks-kernels "
            f"(pip install --no-build-isolation -e .), it ships as package data"
        )
    with np.load(DIGITS_FILE) as f:
        parts = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}

    def tensors(split):
        x = torch.from_numpy(parts[f"x_{split}"].astype(np.float32) / 16.0).unsqueeze(1)  # [N, 1, 8, 8]
        return TensorDataset(x, torch.from_numpy(parts[f"y_{split}"].astype(np.int64)))

    info = DataInfo("digits", 10, 1, 8, True, "convsnn", lam=0.7, temperature=3.0)
    return tensors("train"), tensors("test"), info


def make_digits_file(path: str = DIGITS_FILE) -> None:
    """Write ``digits.npz`` from scikit-learn (run once by the maintainers; the file is committed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x, y = d.images.astype(np.uint8), d.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    train.sort()
    test.sort()
    np.savez_compressed(path, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches)

_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


class CifarBatches(Dataset):
    """CIFAR images from the python pickle batches on disk: ``(transform(PIL image), label)``."""

    def __init__(self, folder: str, files: list[str], label_key: str, transform: Optional[Callable] = None):
        images, labels = [], []
        for file in files:
            with open(os.path.join(folder, file), "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8))
            labels.extend(entry[label_key])
        self.images = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # HWC for PIL
        self.targets = [int(t) for t in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), self.targets[index]


def _cifar(name: str, T: int, data_dir: str, download: bool, augment: bool):
    from torchvision import transforms

    folder_name, train_files, test_files, label_key, num_classes = _CIFAR_FILES[name]
    folder = os.path.join(data_dir, folder_name)
    missing = [f for f in train_files + test_files if not os.path.isfile(os.path.join(folder, f))]
    if missing and download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        cls(data_dir, train=True, download=True)  # fetches, checks the md5 and extracts
        missing = [f for f in train_files + test_files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DatasetNotFoundError(
            f"{name} is not in {folder} (missing {', '.join(missing)}): pass --download to fetch it there "
            f"(about 170 MB), or --data-dir DIR where DIR/{folder_name}/ holds the python batches"
        )
    mean, std = CIFAR_MEAN_STD[name]
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = transforms.Compose(
        ([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []) + normalize
    )
    train = CifarBatches(folder, train_files, label_key, train_tf)
    test = CifarBatches(folder, test_files, label_key, transforms.Compose(normalize))
    info = DataInfo(name, num_classes, 3, 32, True, "resnet19", lam=0.7, temperature=3.0)
    return train, test, info


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


def split_per_class(targets: list[int], test_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices ``(train, test)``: per class a fixed shuffle, ``round(test_fraction * n)`` (at least 1
    when n >= 2) to test. Independent of the training seed, so every run sees the same split."""
    rng = np.random.default_rng(seed)
    targets_np = np.asarray(targets)
    train, test = [], []
    for c in np.unique(targets_np):
        idx = np.flatnonzero(targets_np == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = max(1, int(round(test_fraction * len(idx)))) if len(idx) >= 2 else 0
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return sorted(train), sorted(test)


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
        _download_events(name, data_dir)
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
    "digits": _digits,
    "cifar10": lambda **kw: _cifar("cifar10", **kw),
    "cifar100": lambda **kw: _cifar("cifar100", **kw),
    "cifar10-dvs": lambda **kw: _event_dataset("cifar10-dvs", **kw),
    "ncaltech101": lambda **kw: _event_dataset("ncaltech101", **kw),
}
