"""Lazy access to the compiled extensions (csrc/), with errors that say how to build them.

``tks_kernels._C`` holds the C++ CPU kernels and the op schemas (``torch.ops.tks.*``);
``tks_kernels._C_cuda`` the CUDA kernels. Importing one runs its TORCH_LIBRARY registrations;
then the Python parts of the ops (fake implementations, autograd) are registered by importing
the modules in ``_PY_REGISTRATIONS``. Nothing is imported until a backend needs it.
"""
from __future__ import annotations

import importlib
import os
import json
from pathlib import Path
from typing import Optional

import torch

from ._backends import INSTALL_HINT

_MODULES = {"cpp": "tks_kernels._C", "cuda": "tks_kernels._C_cuda"}
_DISPATCH_KEYS = {"cpp": "CPU", "cuda": "CUDA"}
# Modules that register the fake implementations and autograd formulas of the C++ ops, with the op
# whose schemas each needs; imported once, right after tks_kernels._C loads (the schemas must exist
# first), so never from code that torch.compile traces (registering there fails). An extension
# built from older sources may lack an op: its module is then skipped, and that op's backend
# reports the stale build (_op_reason) while the others work.
_PY_REGISTRATIONS = {
    "tks_kernels.lif.extension": "lif",
    "tks_kernels.tks_loss.cpp": "tks_loss",
    "tks_kernels.kd_loss.cpp": "kd_loss",
}

_load_errors: dict[str, Optional[str]] = {}


def _build_info() -> Optional[dict]:
    """What the install built or skipped and why (written by setup.py next to the extensions)."""
    try:
        return json.loads(Path(__file__).with_name("_build_info.json").read_text())
    except (OSError, ValueError):
        return None


def _not_built(kind: str) -> str:
    info = (_build_info() or {}).get(kind)
    if info and not info.get("built"):
        return f"{_MODULES[kind]} is not built: the install skipped it ({info.get('why')}); rebuild with: {INSTALL_HINT}"
    if kind == "cuda":
        return (
            "the compiled CUDA extension (tks_kernels._C_cuda) is not built: the install found no CUDA toolkit, "
            "torch is a CPU-only build, or TKS_SKIP_CUDA_BUILD=1 was set. Build it with a CUDA toolkit "
            f"(nvcc; set CUDA_HOME if it is not /usr/local/cuda): {INSTALL_HINT}"
        )
    return f"the compiled C++ extension (tks_kernels._C) is not built; build it with: {INSTALL_HINT}"


def _import_error(kind: str, err: ImportError) -> str:
    module = _MODULES[kind]
    if isinstance(err, ModuleNotFoundError) and err.name == module:
        return _not_built(kind)
    text = str(err)
    if "undefined symbol" in text or "version" in text.lower() or "ABI" in text:
        return (
            f"{module} was built for another torch (or another CUDA) than torch {torch.__version__}, which is "
            f"imported now ({text}); rebuild it against this torch with: {INSTALL_HINT}"
        )
    if kind == "cuda" and "libcud" in text:
        return f"{module} cannot load the CUDA runtime ({text}); install a CUDA build of torch matching the toolkit"
    return f"{module} failed to import ({text}); rebuild it with: {INSTALL_HINT}"


OUTPUT_CACHE_ENV = "TKS_CPU_OUTPUT_CACHE_MB"


def check_output_cache_env() -> None:
    """``TKS_CPU_OUTPUT_CACHE_MB``: MiB of freed large CPU outputs the C++ backend keeps for reuse
    (default 1024, 0 = none; see csrc/lif/lif_binding.h). Read by the extension, checked here."""
    text = os.environ.get(OUTPUT_CACHE_ENV, "")
    if text and not (text.isascii() and text.isdigit() and int(text) <= 1 << 24):
        raise ValueError(
            f"{OUTPUT_CACHE_ENV}={text!r} is not a size in MiB; set a non-negative integer (e.g. 0 to keep no freed "
            f"outputs, 256 for at most 256 MiB; default 1024) or unset it"
        )


def load_reason(kind: str) -> Optional[str]:
    """Import the ``kind`` ("cpp" or "cuda") extension once; None when it loaded, else why not."""
    if kind in _load_errors:
        return _load_errors[kind]
    if kind == "cpp":
        check_output_cache_env()
    reason = None
    if kind == "cuda":
        reason = load_reason("cpp")  # the op schemas live in _C
        if reason is not None:
            reason = f"the CUDA extension needs the C++ one, which did not load: {reason}"
    if reason is None:
        try:
            importlib.import_module(_MODULES[kind])
        except ImportError as err:
            reason = _import_error(kind, err)
        except OSError as err:  # a shared library it needs is missing
            reason = f"{_MODULES[kind]} failed to load ({err}); rebuild it with: {INSTALL_HINT}"
    if reason is None and kind == "cpp":
        for module, op in _PY_REGISTRATIONS.items():
            if _has_schema(op):
                importlib.import_module(module)
    _load_errors[kind] = reason
    return reason


def load(kind: str) -> None:
    """Import the ``kind`` extension or raise RuntimeError saying why it cannot load."""
    reason = load_reason(kind)
    if reason is not None:
        raise RuntimeError(reason)


def _has_schema(op: str) -> bool:
    return hasattr(torch.ops.tks, f"{op}_forward")


def _op_reason(kind: str, op: str) -> Optional[str]:
    """None when op ``tks::<op>_forward`` has a ``kind`` kernel (the convention: see csrc/README.md)."""
    reason = load_reason(kind)
    if reason is not None:
        return reason
    qualified = f"tks::{op}_forward"
    key = _DISPATCH_KEYS[kind]
    if not _has_schema(op) or not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
        return f"{_MODULES[kind]} has no {key} kernel for {qualified}: it was built from older sources; rebuild it with: {INSTALL_HINT}"
    return None


_op_reasons: dict[tuple[str, str], Optional[str]] = {}


def _cached_op_reason(kind: str, op: str) -> Optional[str]:
    # A constant for torch.compile: importing and querying the dispatcher cannot be traced.
    if (kind, op) not in _op_reasons:
        _op_reasons[(kind, op)] = _op_reason(kind, op)
    return _op_reasons[(kind, op)]


# What torch.compiler.assume_constant_result(fn) does (torch/_dynamo/decorators.py), without the
# decorator's `import torch._dynamo`: that import costs ~1.5 s, and eager users never need it.
_cached_op_reason._dynamo_marked_constant = True  # type: ignore[attr-defined]


def unavailable_reason(kind: str, x: torch.Tensor, op: str, arg: str = "x_seq") -> Optional[str]:
    """None when the compiled ``kind`` ("cuda" or "cpp") backend of ``op`` can run on ``x`` (the op's
    argument ``arg``), else every reason why not, with the fix."""
    reasons = []
    if kind == "cuda" and x.device.type != "cuda":
        reasons.append(
            f"backend='cuda' runs on CUDA tensors and {arg} is on {x.device}; move the tensors with .cuda(), "
            "or use backend='cpp' (or 'auto') for CPU tensors"
        )
    if kind == "cpp" and x.device.type != "cpu":
        reasons.append(
            f"backend='cpp' runs on CPU tensors and {arg} is on {x.device}; use backend='cuda', 'triton' "
            "(or 'auto') for CUDA tensors, or move them with .cpu()"
        )
    build = _cached_op_reason(kind, op)
    if build is not None:
        reasons.append(build)
    return "; and ".join(reasons) if reasons else None


def _report() -> None:
    """``python -m tks_kernels._ext``: which compiled backends load here, and why not."""
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: {torch.cuda.is_available()}")
    for kind, module in _MODULES.items():
        reason = load_reason(kind)
        print(f"{module} ({kind}): {'loads' if reason is None else reason}")
    if load_reason("cpp") is None:
        print(f"CPU kernels run with: {torch.ops.tks.lif_cpu_isa()}")


if __name__ == "__main__":
    _report()
