"""Datasets of the TKS experiments, read from disk (nothing is downloaded unless asked).

One module per family, each with a ``DATASETS`` table that this package merges: ``images``
(digits, CIFAR), ``events`` (CIFAR10-DVS, N-Caltech101), ``digits_events`` (the digits recorded by a
simulated event camera), ``bearing`` (MFPT, JNU, bearing-sim vibration signals); ``common`` holds
what they share.

``build_datasets(name, T=..., data_dir=..., download=False) -> (train, test, DataInfo)``.

Static datasets yield ``(image [C, H, W] float32, label)`` or, for 1-D signals,
``(window [1, 1024] float32, label)``; the model repeats the input over the T steps (direct
encoding: the analog input is the input current at every step). Event datasets yield
``(frames [T, 2, H, W] float32, label)``, the T frames of one recording (48x48 for the recorded
datasets, 16x16 for digits-events). ``DataInfo`` says which (``static``, ``is_signal``,
``input_shape``).

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
- ``digits-events``: the bundled digits (same split) recorded by a simulated event camera along
  N-MNIST-like saccades, 16x16, 300 ms, binned into T frames whose bins nest
  (``sum_adjacent_bins``); generated in seconds and cached under ``data_dir/cache/``.
- ``mfpt`` / ``jnu``: bearing vibration recordings found by name under ``data_dir/MFPT/`` and
  ``data_dir/JNU/`` (15 and 12 classes); ``bearing-sim``: simulated bearing faults (offline; a
  simulation, not a benchmark). Windows of 1024 samples, max-abs normalised, 80/20 stratified.
  ``add_noise_snr`` adds white Gaussian noise at an SNR in dB.
"""
from __future__ import annotations

import os
from typing import Callable

from torch.utils.data import Dataset

from . import bearing, digits_events, events, images
from .bearing import (BEARING_SIM_CLASSES, JNU_CLASSES, MFPT_CLASSES, BearingGeometry, BearingSimConfig,
                      SignalWindows, add_noise_snr, normalize_max_abs, simulate_bearing_signal)
from .common import DataInfo, DatasetNotFoundError, split_per_class
from .digits_events import DigitEventCamera, DigitsEvents, events_to_frames, simulate_digit_events
from .events import CIFAR10_DVS_CLASSES, DVS_SIZE, EventFolder, EventsToFrames, FrameAugment, sum_adjacent_bins
from .events import _read_cifar10_dvs, _read_ncaltech101  # noqa: F401 (the tests read real files with them)
from .images import CIFAR_MEAN_STD, DIGITS_FILE, make_digits_file

__all__ = [
    "DATASETS", "DataInfo", "DatasetNotFoundError", "build_datasets", "split_per_class",
    "CIFAR_MEAN_STD", "DIGITS_FILE", "make_digits_file",
    "CIFAR10_DVS_CLASSES", "DVS_SIZE", "EventFolder", "EventsToFrames", "FrameAugment", "sum_adjacent_bins",
    "DigitEventCamera", "DigitsEvents", "events_to_frames", "simulate_digit_events",
    "BEARING_SIM_CLASSES", "JNU_CLASSES", "MFPT_CLASSES", "BearingGeometry", "BearingSimConfig", "SignalWindows",
    "add_noise_snr", "normalize_max_abs", "simulate_bearing_signal",
]

# name -> builder(T=, data_dir=, download=, augment=) -> (train, test, DataInfo); one module per family
DATASETS: dict[str, Callable] = {**images.DATASETS, **events.DATASETS, **digits_events.DATASETS, **bearing.DATASETS}


def build_datasets(name: str, *, T: int, data_dir: str = "data", download: bool = False,
                   augment: bool = True) -> tuple[Dataset, Dataset, DataInfo]:
    """``(train, test, info)`` of dataset ``name`` (one of ``DATASETS``) for ``T`` timesteps.

    Raises ``DatasetNotFoundError`` when the files are missing and ``download`` is False.
    ``augment=False`` drops the training augmentation (evaluation, tests).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; choose one of {sorted(DATASETS)}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1 (the number of timesteps)")
    return DATASETS[name](T=T, data_dir=os.path.expanduser(str(data_dir)), download=download, augment=augment)
