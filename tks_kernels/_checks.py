"""Input checks shared by every op: clear errors, raised before any kernel runs."""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float_tensor(name: str, value: Any, allow_float64: bool = False) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES and not (allow_float64 and value.dtype == torch.float64):
        raise TypeError(
            f"{name} has dtype {value.dtype}; expected float32, float16 or bfloat16 "
            f"(convert it with {name}.float())"
        )


def _real_number(value: Any) -> bool:
    """Any real number but a bool: Python int / float first (what torch.compile traces), then
    ``numbers.Real`` (numpy scalars, fractions) and 0-dim numpy arrays of a real dtype."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return _numpy_kind(value) in ("f", "i", "u") or (isinstance(value, numbers.Real) and _numpy_kind(value) != "b")


def _integral_number(value: Any) -> bool:
    """Any integer but a bool: Python int, ``numbers.Integral`` (numpy integers), 0-dim numpy int arrays."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return _numpy_kind(value) in ("i", "u") or (isinstance(value, numbers.Integral) and _numpy_kind(value) != "b")


def _numpy_kind(value: Any) -> str:
    """numpy's dtype kind of a numpy scalar or 0-dim array ("f", "i", "u", "b", ...), else ""."""
    if type(value).__module__ != "numpy":
        return ""
    dtype = getattr(value, "dtype", None)
    if dtype is None or getattr(value, "ndim", 0) != 0:
        return ""
    return dtype.kind


def check_real(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A finite real number (Python or numpy; bools rejected), returned as a Python float."""
    if value is None and allow_none:
        return None
    if not _real_number(value):
        kind = "a float or None" if allow_none else "a float"
        hint = " (pass a Python number, e.g. value.item())" if isinstance(value, torch.Tensor) else ""
        raise TypeError(f"{name} must be {kind} (any real number, numpy scalars included), got {type(value).__name__} {value!r}{hint}")
    value = float(value)
    # not math.isfinite: torch.compile(dynamic=True) cannot trace it on a Python float
    if value != value or value in (math.inf, -math.inf):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_int(name: str, value: Any) -> int:
    """An integer (Python or numpy; bools rejected), returned as a Python int."""
    if not _integral_number(value):
        hint = " (pass a Python int, e.g. value.item())" if isinstance(value, torch.Tensor) else ""
        raise TypeError(f"{name} must be an int (any integer, numpy integers included), got {type(value).__name__} {value!r}{hint}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: Any, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, choices))}")
    return value


# Shared by the loss ops (tks_loss, kd_loss).
REDUCTIONS = ("mean", "sum", "none")
LOSS_BACKENDS = ("auto", "triton", "cuda", "cpp", "torch")


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str):
        raise TypeError(f"reduction must be a str, one of {REDUCTIONS}, got {reduction!r}")
    return check_choice("reduction", reduction, REDUCTIONS)


def check_loss_backend(backend: Any) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {LOSS_BACKENDS}, got {backend!r}")
    return check_choice("backend", backend, LOSS_BACKENDS)
