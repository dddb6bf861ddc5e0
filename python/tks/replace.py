"""``replace_neurons``: move a spikingjelly model onto the fused kernels in place, one line."""
from __future__ import annotations

import importlib
import warnings
from typing import Callable

import torch.nn as nn

from .neuron import IFNode, ILIFNode, LIFNode, ParametricLIFNode, check_backend

__all__ = ["replace_neurons"]

INSTALL_HINT = "pip install spikingjelly==2.0.0 (or pip install tks-kernels[test])"

# Every per-module hook dictionary of nn.Module, moved to the new module (the same dict objects, so
# handles from register_*_hook still remove them), e.g. spikingjelly's monitors; and the flag that
# tells torch whether ``_backward_hooks`` holds full (register_full_backward_hook) or legacy hooks,
# without which torch ignores them.
HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)
HOOK_FLAGS = ("_is_full_backward_hook",)


def replace_neurons(model: nn.Module, backend: str = "auto") -> int:
    """Replace, in place, every spikingjelly ``LIFNode``, ``IFNode``, ``ParametricLIFNode`` and
    ``ILIFNode`` in ``model`` by :class:`tks.LIFNode` / :class:`tks.IFNode` /
    :class:`tks.ParametricLIFNode` / :class:`tks.ILIFNode`.

    Carried over: every hyper-parameter, the surrogate object, step mode, ``store_v_seq``, the
    current state (``v``, ``v_seq``) and its reset value, the training flag, every hook registered
    on the layer (forward and forward-pre, with kwargs or always-called; full and legacy backward,
    backward-pre; state-dict and load-state-dict hooks), and PLIF's ``w`` (the same ``Parameter`` object: optimizers built before keep
    updating it, and ``state_dict`` keys stay the same). Outputs and gradients stay the same;
    ``v`` is kept in fp32 from then on (spikingjelly keeps it in the input's dtype).

    Replaced: the exact classes of ``spikingjelly.activation_based.neuron`` and, when importable,
    of spikingjelly 0.0.0.0.14's ``spikingjelly.clock_driven.neuron`` (single-step ``LIFNode``,
    ``IFNode``, ``ParametricLIFNode`` -> ``step_mode='s'``; ``MultiStep*`` -> ``'m'`` with
    ``store_v_seq=True``, as they always kept ``v_seq``). Not replaced, with one warning listing
    them: subclasses (they may override the dynamics), and layers whose settings the kernels do
    not implement (a tensor ``v_threshold``, spikingjelly's mixed-precision mode, a legacy
    ``v_rest`` different from the reset value).

    Args:
        model: any ``nn.Module`` (not itself a neuron: replace that by constructing ours).
        backend: backend of the new neurons, "auto" | "triton" | "cuda" | "cpp" | "torch".

    Returns:
        How many neurons were replaced.

    All or nothing: every layer is converted before any is swapped in, so a layer that cannot be
    converted (e.g. ``tau`` set to 1.0 after construction) raises a ValueError / TypeError naming
    its path and leaves the model untouched.

    Raises:
        ImportError: spikingjelly is not installed.
        ValueError, TypeError: a layer's settings are invalid (the message names the layer).

    Example::

        >>> from spikingjelly.activation_based import functional
        >>> net = spiking_vgg.spiking_vgg11_bn(spiking_neuron=neuron.LIFNode, num_classes=10)
        >>> functional.set_step_mode(net, "m")
        >>> tks.replace_neurons(net)      # 10
    """
    backend = check_backend(backend)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    converters = _converters()
    if type(model) in converters:
        raise ValueError(
            f"model is itself a {type(model).__qualname__}; replace_neurons swaps the children of a model in place. "
            f"Construct the neuron directly instead, e.g. tks.{converters[type(model)][0].__name__}(...)"
        )
    skipped: list[str] = []
    replaced: dict[int, nn.Module] = {}  # id(old) -> new: a layer used twice is replaced by one new layer
    swaps: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, child name, new): applied at the end
    ours = tuple(new_cls for new_cls, _ in converters.values())
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            path = f"{parent_name}.{child_name}" if parent_name else child_name
            new = replaced.get(id(child))
            if new is None:
                if type(child) not in converters:
                    # our neurons subclass spikingjelly's: already on the kernels, not a subclass to warn about
                    if not isinstance(child, ours) and any(isinstance(child, cls) for cls in converters):
                        skipped.append(f"{path} ({type(child).__qualname__}: a subclass, it may override the dynamics)")
                    continue
                why_not = _unsupported(child)
                if why_not:
                    skipped.append(f"{path} ({type(child).__qualname__}: {why_not})")
                    continue
                new_cls, make_kwargs = converters[type(child)]
                try:
                    new = _convert(child, new_cls, make_kwargs(child), backend)
                except (TypeError, ValueError) as e:
                    # nothing has been swapped yet: the model is left exactly as it was
                    raise type(e)(
                        f"replace_neurons: layer {path!r} ({type(child).__module__}.{type(child).__qualname__}) cannot "
                        f"be converted, so no layer of the model was replaced: {e}"
                    ) from e
                replaced[id(child)] = new
            swaps.append((parent, child_name, new))
    # every layer converted: now swap them in (all or nothing)
    for parent, child_name, new in swaps:
        parent._modules[child_name] = new
    count = len(replaced)
    if skipped:
        warnings.warn(
            f"replace_neurons left {len(skipped)} spikingjelly neuron(s) as they are: " + "; ".join(skipped),
            stacklevel=2,
        )
    return count


def _common(old) -> dict:
    return dict(
        v_threshold=old.v_threshold, v_reset=old.v_reset, surrogate_function=old.surrogate_function,
        detach_reset=old.detach_reset,
    )


def _activation_based(leak: Callable[[nn.Module], dict]):
    def kwargs(old):
        return dict(_common(old), **leak(old), step_mode=old.step_mode, store_v_seq=old.store_v_seq)

    return kwargs


def _clock_driven(leak: Callable[[nn.Module], dict], step_mode: str):
    def kwargs(old):
        return dict(_common(old), **leak(old), step_mode=step_mode, store_v_seq=step_mode == "m")

    return kwargs


def _lif_leak(old) -> dict:
    return {"tau": old.tau, "decay_input": old.decay_input}


def _plif_leak(old) -> dict:
    return {"decay_input": old.decay_input}


def _if_leak(old) -> dict:
    return {}


def _ilif_kwargs(old) -> dict:
    # I-LIF: soft reset and no input decay are fixed by the class; D and the window live in the surrogate
    return dict(tau=old.tau, v_threshold=old.v_threshold, surrogate_function=old.surrogate_function,
                detach_reset=old.detach_reset, step_mode=old.step_mode, store_v_seq=old.store_v_seq)


def _converters() -> dict[type, tuple[type, Callable[[nn.Module], dict]]]:
    """spikingjelly class -> (our class, its constructor arguments from an instance)."""
    try:
        from spikingjelly.activation_based import neuron
    except ImportError as e:
        raise ImportError(
            f"tks.replace_neurons converts spikingjelly models; install spikingjelly: {INSTALL_HINT}"
        ) from e
    table = {
        neuron.LIFNode: (LIFNode, _activation_based(_lif_leak)),
        neuron.IFNode: (IFNode, _activation_based(_if_leak)),
        neuron.ParametricLIFNode: (ParametricLIFNode, _activation_based(_plif_leak)),
    }
    if hasattr(neuron, "ILIFNode"):
        table[neuron.ILIFNode] = (ILIFNode, _ilif_kwargs)
    legacy = _legacy_neuron_module()
    if legacy is not None:
        legacy_names = {
            "LIFNode": (LIFNode, _lif_leak),
            "IFNode": (IFNode, _if_leak),
            "ParametricLIFNode": (ParametricLIFNode, _plif_leak),
        }
        for name, (ours, leak) in legacy_names.items():
            for prefix, step_mode in (("", "s"), ("MultiStep", "m")):
                cls = getattr(legacy, prefix + name, None)
                if isinstance(cls, type):
                    table[cls] = (ours, _clock_driven(leak, step_mode))
    return table


def _legacy_neuron_module():
    """spikingjelly 0.0.0.0.14's ``clock_driven.neuron`` when that version is installed."""
    try:
        return importlib.import_module("spikingjelly.clock_driven.neuron")
    except ImportError:
        return None


def _unsupported(old) -> str:
    """Why the kernels cannot run layer ``old`` exactly, or ""."""
    for name in ("v_threshold", "v_reset"):
        value = getattr(old, name)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number and not (name == "v_reset" and value is None):
            return f"{name} is a {type(value).__name__}, the kernels take a Python float"
    if getattr(old, "_neuron_precision", None) is not None:
        return "spikingjelly's explicit neuron precision mode is set"
    v_rest = getattr(old, "v_rest", None)  # some legacy versions leak towards v_rest, not v_reset
    if v_rest is not None and v_rest != (0.0 if old.v_reset is None else old.v_reset):
        return f"v_rest={v_rest} differs from the reset value"
    return ""


def _convert(old: nn.Module, new_cls: type, kwargs: dict, backend: str) -> nn.Module:
    new = new_cls(**kwargs, backend=backend)
    if isinstance(new, ParametricLIFNode):
        new.w = old.w  # the same Parameter object
    # the state: current value and reset value, as spikingjelly keeps them
    new._memories["v"] = old.v
    new._memories_rv["v"] = getattr(old, "_memories_rv", {}).get("v", new._memories_rv["v"])
    v_seq = getattr(old, "v_seq", None)
    if kwargs["store_v_seq"] and v_seq is not None:
        new.v_seq = v_seq
    new.train(old.training)
    for name in HOOK_DICTS + HOOK_FLAGS:
        if name in old.__dict__:
            object.__setattr__(new, name, old.__dict__[name])
    return new
