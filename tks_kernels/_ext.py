"""Lazy access to the compiled extensions (csrc/), with errors that say how to build them."""
from __future__ import annotations

from typing import Optional

import torch

from ._backends import INSTALL_HINT


def unavailable_reason(kind: str, x: torch.Tensor, op: str) -> Optional[str]:
    """None when the compiled ``kind`` ("cuda" or "cpp") backend of ``op`` can run on ``x``."""
    return f"the compiled {kind} extension is not built yet (build it with: {INSTALL_HINT})"
