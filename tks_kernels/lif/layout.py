"""Memory layout of the LIF ops: which strides the outputs get, and when x is read in place.

The kernels walk each step's N neurons in memory order: x as ``[T, N]`` rows (element (t, n) at
``x[t * stride_t + n]``, any time stride), every other ``[T, *]`` tensor as ``[T, N]`` with time
stride N. That is right for any step whose memory is a permuted contiguous block (non-overlapping
and dense: channels_last, a transposed matrix, ...), not only for a contiguous one: the element at
step index i sits at the same offset in x and in every output when the outputs take x's step
strides. So the outputs keep x's memory format, as spikingjelly's do, without a copy of x:

- step contiguous: contiguous outputs (``step_strides`` None);
- step a dense permuted block: outputs ``[T, *]`` with strides ``(N, *step strides)``, ``[*]``
  with the step strides;
- anything else (gaps, overlaps: a slice, a time axis that is not outermost): x is copied to
  contiguous and the outputs are contiguous.

The C++ binding (csrc/lif/lif_binding.h, ``StepLayout``) applies the same rule, and the fake
implementations (lif/ops.py) give the same strides, so torch.compile sees the real ones.
Gradients arriving in another layout (and v_init) are copied into this one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def _dense_block(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether sizes/strides describe a permutation of a contiguous block (size-1 dims ignored)."""
    dims = sorted((stride, size) for size, stride in zip(sizes, strides) if size != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def step_strides(x_seq: torch.Tensor) -> Optional[tuple[int, ...]]:
    """The step strides every output takes from ``x_seq`` ``[T, *]``: None for contiguous (a
    contiguous step, or one that is not a dense block and is copied), else x's step strides."""
    step = x_seq[0]
    if step.is_contiguous() or not _dense_block(step.shape, step.stride()):
        return None
    return tuple(step.stride())


def saved_step_strides(h: torch.Tensor) -> Optional[tuple[int, ...]]:
    """The layout of a saved ``h`` ``[T, *]`` (written by the forward in its layout): its step
    strides when it is one (time stride N, the step a dense block), None when it is contiguous
    or has to be made so."""
    strides = step_strides(h)
    if strides is None or (h.shape[0] > 1 and h.stride(0) != h[0].numel()):
        return None
    return strides


def reads_in_place(x_seq: torch.Tensor, strides: Optional[tuple[int, ...]]) -> bool:
    """Whether the kernels can read ``x_seq``'s steps in place for outputs of layout ``strides``."""
    step = x_seq[0]
    if strides is None:
        return step.is_contiguous()
    return has_strides(step, strides)


def has_strides(t: torch.Tensor, strides: Sequence[int]) -> bool:
    """``t``'s strides equal ``strides`` on every dimension of size > 1 (where they matter)."""
    return all(size == 1 or a == b for size, a, b in zip(t.shape, t.stride(), strides))


def seq_strides(shape: Sequence[int], strides: Optional[tuple[int, ...]]) -> Optional[tuple[int, ...]]:
    """Strides of a ``[T, *]`` output: time outermost (stride N), each step in ``strides``."""
    if strides is None:
        return None
    n = 1
    for size in shape[1:]:
        n *= size
    return (n, *strides)


def empty(t: torch.Tensor, shape, strides: Optional[Sequence[int]], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor on t's device: contiguous (``strides`` None) or with ``strides``."""
    if strides is None:
        return t.new_empty(shape, dtype=dtype)
    return t.new_empty_strided(shape, strides, dtype=dtype)


def as_layout(t: torch.Tensor, strides: Optional[Sequence[int]], dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype`` with ``strides`` (contiguous for None): itself when it already is, else a copy."""
    if t.dtype == dtype and (t.is_contiguous() if strides is None else has_strides(t, strides)):
        return t
    out = empty(t, t.shape, strides, dtype)
    out.copy_(t)
    return out
