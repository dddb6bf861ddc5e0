"""What every dataset family shares: the dataset description, the missing-files error, the split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class DataInfo:
    """What a model and the training recipe need to know about a dataset.

    ``static``: each item is one input the model presents at every one of the T steps (direct
    encoding); otherwise items are sequences with the time axis first (``[T, C, H, W]`` frames).
    Images: ``image_size`` (H = W) with ``signal_length=None``. 1-D signals: ``signal_length`` L
    (items ``[in_channels, L]``) and ``image_size=0``. ``lam`` / ``temperature``: the TKS
    authors' settings for this kind of data.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    static: bool
    default_model: str
    lam: float
    temperature: float
    signal_length: Optional[int] = None

    def __post_init__(self):
        if self.signal_length is None and self.image_size < 1:
            raise ValueError(f"DataInfo({self.name!r}): image_size={self.image_size} must be >= 1 for images "
                             f"(or give signal_length for a 1-D signal)")
        if self.signal_length is not None and (self.signal_length < 1 or self.image_size != 0):
            raise ValueError(f"DataInfo({self.name!r}): a 1-D signal has signal_length >= 1 and image_size=0, got "
                             f"signal_length={self.signal_length}, image_size={self.image_size}")

    @property
    def is_signal(self) -> bool:
        """True for 1-D signals ``[C, L]`` (models with ``Conv1d``), False for images / frames."""
        return self.signal_length is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one step's input: ``(C, L)`` for signals, ``(C, H, W)`` for images and frames
        (event items are ``[T, *input_shape]``)."""
        if self.is_signal:
            return (self.in_channels, self.signal_length)
        return (self.in_channels, self.image_size, self.image_size)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk; the message says what to pass."""


def download_failed(name: str, url: str, where: str, err: BaseException) -> DatasetNotFoundError:
    """The error for a ``--download`` that could not fetch ``url``: which URL, why, and where to put
    the files by hand."""
    why = (str(err).strip().splitlines() or [""])[0][:200]
    return DatasetNotFoundError(
        f"--download of {name} failed: could not fetch {url} ({type(err).__name__}: {why}). Without network, "
        f"download it on another machine and unpack it so that {where}, then run again without --download"
    )


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
