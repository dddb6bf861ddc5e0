"""Run folders: config, metrics CSV, checkpoints written atomically, and the model a run trained.

A run folder holds ``config.json`` (every option and what the dataset implied), ``metrics.csv``
(one row per epoch) and ``checkpoint.pt`` (the state after the last finished epoch). Files are
written to a temporary file in the same folder and then moved over the old one with ``os.replace``,
so a crash or a full disk during a write never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import zipfile
from typing import Any, BinaryIO, Callable, Optional

import torch


CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run; the message says what to do."""


def _atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temporary file beside ``path``, synced to disk, then ``os.replace`` it
    over ``path``: all or nothing, the old file survives any failure."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: all or nothing."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file, then ``os.replace``: the old file survives any failure."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by ``tks-train``; ``CheckpointError`` if it is missing or corrupt."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")

    def corrupt(reason: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason}); delete it and train again "
            f"(without --resume), or restore a good copy"
        )

    # torch.save writes a zip archive whose directory is at the end: a cut-off file has none
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04" and os.path.basename(path) != CHECKPOINT_FILE:
            # another file (config.json, metrics.csv, ...): say what to pass, never advise deleting it
            raise CheckpointError(
                f"{path} is not a tks-train checkpoint (not a torch.save archive); pass the run folder "
                f"(the one holding {CHECKPOINT_FILE}) or its {CHECKPOINT_FILE}"
            )
        raise corrupt("not a complete torch.save archive")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path} holds Python objects other than tensors and plain data, so tks-train did not write it "
                f"(loading it could run arbitrary code)"
            ) from e
        raise corrupt(f"UnpicklingError: {str(e).splitlines()[0][:200]}") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise corrupt(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    missing = [k for k in ("format", "config", "model", "epoch") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a tks-train checkpoint (missing {missing})")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {ckpt['format']}, this version reads {CHECKPOINT_FORMAT}")
    return ckpt


def write_config(run_dir: str, config: dict) -> None:
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(os.path.join(run_dir, CONFIG_FILE), text.encode())


def read_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir} is not a tks-train run folder: {CONFIG_FILE} is missing")
    with open(path) as f:
        return json.load(f)


def write_metrics(run_dir: str, rows: list[dict]) -> None:
    """The whole per-epoch history as ``metrics.csv`` (rewritten atomically each epoch)."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(os.path.join(run_dir, METRICS_FILE), buf.getvalue().encode())


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: x)`` unless there is none or the help already says it."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def model_from_config(config: dict):
    """The model a run trains, built from its ``config.json`` (weights not loaded), by its method
    (``Method.build_model``: the zoo model unless the method changes the deployed network)."""
    from .methods import METHODS

    method = config.get("method", config.get("loss"))  # "loss": runs written before methods had a key
    if method not in METHODS:
        raise ValueError(f"the run's method {method!r} is unknown to this version; known: {sorted(METHODS)}")
    return METHODS[method].build_model(config)


def model_outputs(model, x: torch.Tensor, T: int, static: bool) -> torch.Tensor:
    """``logits [T, B, classes]`` for a batch from the loader: images ``[B, C, H, W]`` (static,
    repeated over T) or frames ``[B, T_data, C, H, W]`` (the first ``T`` steps are used)."""
    if static:
        return model(x, T=T)
    if T > x.shape[1]:
        raise ValueError(f"T={T} steps asked for, the data has {x.shape[1]}")
    return model(x[:, :T].transpose(0, 1))


def checkpoint_path(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT_FILE)


def find_run(path: str) -> tuple[str, Optional[str]]:
    """``(run_dir, checkpoint)`` from a run folder or a checkpoint file inside one."""
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), path
    return path, None
