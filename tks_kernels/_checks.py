"""Input checks shared by every op: clear errors, raised before any kernel runs."""
from __future__ import annotations

import math
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


def check_real(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A finite Python number (bools rejected), returned as float."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a float or None" if allow_none else "a float"
        hint = " (pass a Python number, e.g. value.item())" if isinstance(value, torch.Tensor) else ""
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}{hint}")
    value = float(value)
    # not math.isfinite: torch.compile(dynamic=True) cannot trace it on a Python float
    if value != value or value in (math.inf, -math.inf):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: Any, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, choices))}")
    return value
