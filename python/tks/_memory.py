"""The stateful-module contract spikingjelly's network utilities rely on, without spikingjelly.

``spikingjelly.activation_based.functional.reset_net`` / ``detach_net`` / ``set_step_mode`` call
``reset()`` / ``detach()`` / set ``step_mode`` on every module that has them, and log a warning on
each call for modules that are not a ``base.MemoryModule`` / ``base.StepModule``. ``MemoryModule``
is a plain class (not an ABC), so a virtual subclass cannot be registered: the only way to be
one is to inherit from it. So when spikingjelly is importable (``spikingjelly.activation_based.base``
costs about 1 ms and imports nothing heavy) the neurons inherit from its ``MemoryModule``;
otherwise from ``MemoryModuleFallback`` below, which implements the same contract (a dict of
named state variables with reset values, ``reset``, ``detach``, ``step_mode``). The neurons
override every method whose behaviour they depend on (``step_mode`` through ``StepModeMixin``,
which both use), so they behave the same either way.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn as nn

STEP_MODES = ("s", "m")


class StepModeMixin:
    """A ``step_mode`` of ``'s'`` (one step ``[N, *]``) or ``'m'`` (``[T, N, *]``), checked when set:
    spikingjelly's ``StepModule`` contract, with our error message. Put it before the module base."""

    def supported_step_mode(self) -> tuple[str, ...]:
        return STEP_MODES

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in self.supported_step_mode():
            raise ValueError(f"step_mode={value!r} is not supported; choose 's' (one step [N, *]) or 'm' ([T, N, *])")
        self._step_mode = value


class MemoryModuleFallback(StepModeMixin, nn.Module):
    """Named state variables (``register_memory``) read and written as attributes, restored to
    their reset values by ``reset()``; a ``step_mode`` of ``'s'`` or ``'m'``."""

    def __init__(self):
        super().__init__()
        self._memories: dict[str, object] = {}
        self._memories_rv: dict[str, object] = {}
        self._step_mode = "s"

    def register_memory(self, name: str, value) -> None:
        if hasattr(self, name):
            raise AttributeError(f"{name!r} is already an attribute of {type(self).__name__}")
        self._memories[name] = value
        self._memories_rv[name] = copy.deepcopy(value)

    def reset(self) -> None:
        for name, value in self._memories_rv.items():
            self._memories[name] = copy.deepcopy(value)

    def detach(self) -> None:
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = value.detach()

    def memories(self) -> Iterator[object]:
        yield from self._memories.values()

    def named_memories(self) -> Iterator[tuple[str, object]]:
        yield from self._memories.items()

    def __getattr__(self, name: str):
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            return memories[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            memories[name] = value
        else:
            super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() move the state too
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = fn(value)
        return super()._apply(fn, *args, **kwargs)

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        replica._memories = self._memories.copy()
        return replica


def memory_module_base() -> type:
    """spikingjelly's ``base.MemoryModule`` when spikingjelly is installed, else the fallback;
    either way with the ``step_mode`` of :class:`StepModeMixin`."""
    try:
        from spikingjelly.activation_based import base
    except ImportError:
        return MemoryModuleFallback

    class SpikingJellyMemoryModule(StepModeMixin, base.MemoryModule):
        pass

    return SpikingJellyMemoryModule
