"""Static image datasets: the bundled digits and CIFAR-10 / CIFAR-100.

Items are ``(image [C, H, W] float32, label)``; the model repeats the image over the T steps
(direct encoding: the analog image is the input current at every step).
"""
from __future__ import annotations

import os
import pickle
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .common import DataInfo, DatasetNotFoundError, download_failed

CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# ----------------------------------------------------------------------------------------------
# digits (bundled)

DIGITS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")


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
        try:
            cls(data_dir, train=True, download=True)  # fetches, checks the md5 and extracts
        except Exception as e:  # noqa: BLE001 - urllib, torchvision and tarfile errors alike
            raise download_failed(name, cls.url, f"{folder}/ holds the python batches ({', '.join(train_files[:1])}, ...)",
                                  e) from e
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


DATASETS: dict[str, Callable] = {
    "digits": _digits,
    "cifar10": lambda **kw: _cifar("cifar10", **kw),
    "cifar100": lambda **kw: _cifar("cifar100", **kw),
}
