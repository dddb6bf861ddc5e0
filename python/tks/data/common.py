"""What every dataset family shares: the dataset description, the missing-files error, the split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
