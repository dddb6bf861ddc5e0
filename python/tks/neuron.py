"""Drop-in spiking neurons: spikingjelly 2.0.0's ``LIFNode``, ``IFNode`` and ``ParametricLIFNode``
on the fused kernels of ``tks_kernels.lif_multistep``.

Same constructor arguments and defaults, same state behaviour (``v`` carried across calls until
``reset()``, ``v_seq`` with ``store_v_seq``, ``step_mode`` 's' / 'm'), same outputs and gradients.
``step_mode='m'`` runs a whole ``[T, N, *]`` sequence in one fused call; ``'s'`` runs one step as
a sequence of length 1.

Differences from spikingjelly, on purpose:

- ``v`` is kept in fp32 whatever the input dtype (spikingjelly keeps it in x's dtype); spikes are
  in x's dtype. For fp32 inputs nothing differs.
- ``backend=`` (keyword only) picks the kernel: "auto" (default, the fastest that can run),
  "triton", "cuda", "cpp", or "torch" (the eager reference loop). The legacy value "cupy" of
  older spikingjelly code means "auto".
- A surrogate the kernels do not implement (another class, ``spiking=False``, a tensor
  ``alpha``, any callable) runs on the eager loop, calling it exactly as spikingjelly does, with
  one warning per layer.
- fp64 inputs run on the eager loop (the kernels take fp32 / fp16 / bf16).

Like spikingjelly's, the default ``surrogate_function`` is spikingjelly's ``surrogate.Sigmoid()``
object, one instance shared by every neuron of the class constructed without one (spikingjelly's
default argument): setting its ``alpha`` changes it for all of them; pass ``surrogate.Sigmoid()``
to give a layer its own. Without spikingjelly installed it is :class:`tks.surrogate.Surrogate`
("sigmoid", alpha 4) with the same mutable ``alpha``, one per neuron. An ``alpha`` changed on the
object after construction is read at the next call. When spikingjelly is installed the neurons
are subclasses of its ``LIFNode`` / ``IFNode`` / ``ParametricLIFNode`` (so ``isinstance`` checks
and ``monitor.OutputMonitor(net, neuron.LIFNode)`` find them), with every method that defines
their behaviour ours.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Union

import torch
import torch.nn as nn

from tks_kernels._checks import check_bool, check_real
from tks_kernels.lif import SURROGATES, lif_multistep
from tks_kernels.lif.config import TAU_DEFAULT, parse_lif_args
from tks_kernels.lif.reference import lif_reference_forward
from tks_kernels.lif.surrogate import default_alpha

from ._memory import memory_module_base
from .surrogate import Surrogate

__all__ = ["LIFNode", "IFNode", "ParametricLIFNode", "ILIFNode", "MultiBitLIFNode", "BACKENDS"]

BACKENDS = ("auto", "triton", "cuda", "cpp", "torch")
# Values of spikingjelly's own ``backend=`` keyword (0.0.0.0.14) that published code passes;
# "torch" is our eager reference too.
LEGACY_BACKENDS = {"cupy": "auto"}

# spikingjelly surrogate class name -> our kernel surrogate name. Only these exact classes from
# spikingjelly's own surrogate module map onto the kernels (as spikingjelly's own dispatch does);
# subclasses may override the gradient, so they run eagerly.
SPIKINGJELLY_SURROGATES = {
    "Sigmoid": "sigmoid",
    "ATan": "atan",
    "PiecewiseQuadratic": "piecewise_quadratic",
    "Erf": "erf",
    "PiecewiseExp": "piecewise_exp",
    "SoftSign": "soft_sign",
    "SuperSpike": "super_spike",
    "Rect": "rect",
}
SPIKINGJELLY_SURROGATE_MODULES = (
    "spikingjelly.activation_based.surrogate",
    "spikingjelly.clock_driven.surrogate",  # spikingjelly 0.0.0.0.14
)

SurrogateSpec = Union[str, tuple, Callable[[torch.Tensor], torch.Tensor]]


def check_surrogate(value) -> None:
    """A kernel surrogate name, ``(name, alpha)``, or a callable (e.g. a spikingjelly surrogate)."""
    if isinstance(value, str):
        if value not in SURROGATES:
            raise ValueError(
                f"surrogate_function={value!r} is unknown; choose one of {', '.join(SURROGATES)}, "
                "a (name, alpha) pair, or a spikingjelly surrogate object"
            )
        return
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], str):
            raise TypeError(f"surrogate_function as a tuple must be (name, alpha), got {value!r}")
        check_surrogate(value[0])
        alpha = check_real("surrogate_function alpha", value[1])
        if alpha <= 0:
            raise ValueError(f"surrogate_function alpha must be > 0, got {value!r}")
        return
    if isinstance(value, type):
        raise TypeError(
            f"surrogate_function must be a surrogate instance, got the class {value.__module__}.{value.__qualname__}; "
            f"pass an instance, e.g. {value.__name__}()"
        )
    if isinstance(value, Surrogate):
        return
    if not callable(value):
        raise TypeError(
            f"surrogate_function must be a surrogate name ({', '.join(SURROGATES)}), a (name, alpha) pair "
            f"or a callable such as spikingjelly.activation_based.surrogate.ATan(); got "
            f"{type(value).__name__} {value!r}"
        )


def kernel_surrogate(fn) -> tuple[Optional[tuple[str, Optional[float]]], str]:
    """``((name, alpha), "")`` when the fused kernels implement surrogate ``fn``, else
    ``(None, why not)``."""
    if isinstance(fn, str):
        return (fn, None), ""
    if isinstance(fn, tuple):
        return (fn[0], float(fn[1])), ""
    if isinstance(fn, Surrogate):
        return (fn.name, fn.alpha), ""
    cls = type(fn)
    name = SPIKINGJELLY_SURROGATES.get(cls.__name__)
    if name is None or cls.__module__ not in SPIKINGJELLY_SURROGATE_MODULES:
        return None, f"{cls.__module__}.{cls.__qualname__} has no fused kernel"
    if not getattr(fn, "spiking", True):
        return None, "spiking=False (it returns the primitive function, not spikes)"
    alpha = getattr(fn, "alpha", None)
    # comparisons, not math.isfinite: torch.compile(dynamic=True) traces them on a symbolic float
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < alpha < math.inf):
        return None, f"its alpha={alpha!r} is not a positive, finite Python number"
    return (name, alpha), ""


def check_backend(value) -> str:
    """Our backend name for ``backend=`` (legacy spikingjelly values included)."""
    if value in LEGACY_BACKENDS:
        return LEGACY_BACKENDS[value]
    if value not in BACKENDS:
        raise ValueError(
            f"backend={value!r} is not supported; choose one of {', '.join(map(repr, BACKENDS))} "
            "(or spikingjelly's 'cupy', which means 'auto')"
        )
    return value


def _check_tau(name: str, value) -> float:
    value = check_real(name, value)
    if not value > 1.0:
        raise ValueError(f"{name} must be > 1 (the membrane time constant), got {value}; use tks.IFNode for no leak")
    return value


_MEMORY_BASE = memory_module_base()


def _spikingjelly_neuron(name: str) -> tuple[type, ...]:
    """``(spikingjelly.activation_based.neuron.<name>,)`` when spikingjelly is installed, else ``()``:
    the extra base class that makes our neuron pass spikingjelly's isinstance checks."""
    try:
        from spikingjelly.activation_based import neuron as sj_neuron
    except ImportError:
        return ()
    cls = getattr(sj_neuron, name, None)
    return (cls,) if isinstance(cls, type) else ()


def _default_surrogate(name: str):
    """spikingjelly's own default ``surrogate_function`` object of neuron class ``name`` (one shared
    instance, spikingjelly's default argument), or None without spikingjelly (then each neuron gets
    a ``tks.surrogate.Surrogate("sigmoid")`` of its own)."""
    bases = _spikingjelly_neuron(name)
    if not bases:
        return None
    import inspect

    default = inspect.signature(bases[0].__init__).parameters["surrogate_function"].default
    return None if default is inspect.Parameter.empty else default


class _NeuronBase(_MEMORY_BASE):
    """Shared state handling of the neurons; the leak is given by ``_leak_kwargs``."""

    def __init__(self, v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq, backend):
        # The memory module's own __init__, not spikingjelly's neuron __init__ (a base class too when
        # spikingjelly is installed): that one asserts on types we accept and sets its own defaults.
        _MEMORY_BASE.__init__(self)
        if surrogate_function is None:
            surrogate_function = Surrogate("sigmoid")
        self.v_threshold = check_real("v_threshold", v_threshold)
        self.v_reset = check_real("v_reset", v_reset, allow_none=True)
        check_surrogate(surrogate_function)
        self.surrogate_function = surrogate_function
        self.detach_reset = check_bool("detach_reset", detach_reset)
        self.step_mode = step_mode
        self.store_v_seq = check_bool("store_v_seq", store_v_seq)
        self.backend = backend
        # v starts as a Python float (v_reset, 0.0 for soft reset) and becomes a tensor on the
        # first call, shaped like one step of the input; reset() makes it the float again.
        self.register_memory("v", 0.0 if self.v_reset is None else self.v_reset)
        self._eager_warned = False
        self._neuron_precision = None  # spikingjelly's mixed-precision mode: never set on ours

    # -- the spikingjelly module contract (step_mode: _memory.StepModeMixin) ----------------------

    # a property of our own: spikingjelly 0.0.0.0.14's MemoryModule has one that rejects our names
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = check_backend(value)

    # What the fused backward keeps: tks_kernels.lif_multistep's ``save`` ("auto", "h" or "x"), an
    # attribute (not a constructor argument, so the constructors keep spikingjelly's signatures).
    _save = "auto"

    @property
    def save(self) -> str:
        return self._save

    @save.setter
    def save(self, value: str) -> None:
        from tks_kernels.lif.config import check_save

        self._save = check_save(value)

    @property
    def store_v_seq(self) -> bool:
        return self._store_v_seq

    @store_v_seq.setter
    def store_v_seq(self, value: bool) -> None:
        self._store_v_seq = value
        self.v_seq = None

    def reset(self) -> None:
        """Back to the initial state: ``v`` the float reset value, no ``v_seq``."""
        for name, value in self._memories_rv.items():
            self._memories[name] = value if isinstance(value, (int, float)) else value.clone()
        self.v_seq = None

    def detach(self) -> None:
        """Cut the state from the graph (truncated BPTT)."""
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = value.detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes of one step ``[N, *]`` (``step_mode='s'``) or of a sequence ``[T, N, *]`` ('m')."""
        if self.step_mode == "m":
            return self.multi_step_forward(x)
        if self.step_mode == "s":
            return self.single_step_forward(x)
        raise ValueError(f"step_mode={self.step_mode!r} is not supported; choose 's' or 'm'")

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 1:
            raise ValueError(f"step_mode='m' takes x_seq of shape [T, N, *], got {_describe(x_seq)}")
        spikes, v = self._run(x_seq, self._initial_v(x_seq[0]), self.store_v_seq)
        if self.store_v_seq:
            self.v_seq = v
            self.v = v[-1].clone()
        else:
            self.v = v
        return spikes

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {_describe(x)}")
        spikes, v = self._run(x.unsqueeze(0), self._initial_v(x), False)
        self.v = v
        if self.store_v_seq:
            self._append_v_seq(v)
        return spikes[0]

    def _append_v_seq(self, v: torch.Tensor) -> None:
        # spikingjelly restarts the sequence when the shape, device or dtype changes
        step = v.unsqueeze(0)
        prev = self.v_seq
        if prev is None or prev.shape[1:] != step.shape[1:] or prev.device != step.device or prev.dtype != step.dtype:
            self.v_seq = step.clone()
        else:
            self.v_seq = torch.cat((prev, step))

    def _initial_v(self, x_step: torch.Tensor) -> Optional[torch.Tensor]:
        """The state to start from, shaped like ``x_step``: None for a fresh state at the reset
        value (the kernels fill it themselves), as spikingjelly materialises it."""
        v = self.v
        reset_value = 0.0 if self.v_reset is None else self.v_reset
        if isinstance(v, torch.Tensor):
            if v.shape != x_step.shape:
                return None  # a new input shape starts from a fresh state
            # the carried state follows the input, as spikingjelly casts it (fp32 state for
            # fp32 / fp16 / bf16 inputs, fp64 for fp64)
            state_dtype = torch.float64 if x_step.dtype == torch.float64 else torch.float32
            return v.to(device=x_step.device, dtype=state_dtype)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if float(v) == reset_value:
                return None
            return torch.full(x_step.shape, float(v), dtype=torch.float32, device=x_step.device)
        raise TypeError(f"{type(self).__name__}.v must be a tensor or a float, got {_describe(v)}")

    def _leak_kwargs(self) -> dict:
        raise NotImplementedError

    def _decay_input(self) -> bool:
        return True  # IF has no leak: the flag is unused

    def _run(self, x_seq: torch.Tensor, v_init: Optional[torch.Tensor], store_v_seq: bool):
        surrogate, why_eager = kernel_surrogate(self.surrogate_function)
        common = dict(
            v_threshold=self.v_threshold, v_reset=self.v_reset, decay_input=self._decay_input(),
            detach_reset=self.detach_reset, store_v_seq=store_v_seq,
        )
        if surrogate is not None and not (x_seq.dtype == torch.float64 and self.backend in ("auto", "torch")):
            name, alpha = surrogate
            return lif_multistep(
                x_seq, v_init, **self._leak_kwargs(), **common, surrogate=name, alpha=alpha, backend=self.backend,
                save=self.save,
            )
        # The eager loop: fp64 inputs (the kernels take fp32/fp16/bf16), or a surrogate the
        # kernels do not implement, called on H - v_threshold each step as spikingjelly calls it.
        if self.backend not in ("auto", "torch"):
            raise ValueError(
                f"{type(self).__name__}(backend={self.backend!r}) cannot run: surrogate_function="
                f"{self.surrogate_function!r}: {why_eager}. Use backend='auto' or 'torch' to run it on the "
                "eager loop, or a surrogate the kernels implement (" + ", ".join(SPIKINGJELLY_SURROGATES) + ")"
            )
        leak = self._leak_kwargs()
        # with spike_fn given, the reference ignores cfg's surrogate: any valid name will do
        name, alpha = surrogate if surrogate is not None else ("sigmoid", None)
        cfg, decay = parse_lif_args(
            x_seq, v_init, leak.get("tau", TAU_DEFAULT), leak.get("decay"), surrogate=name, alpha=alpha,
            allow_float64=True, **common,
        )
        spike_fn = None if surrogate is not None else self.surrogate_function
        if spike_fn is not None and not self._eager_warned:
            self._eager_warned = True
            warnings.warn(
                f"tks.{type(self).__name__}: surrogate_function={self.surrogate_function!r}: {why_eager}; this "
                "layer runs on the eager PyTorch loop over T (slow), calling that surrogate as spikingjelly does",
                stacklevel=2,
            )
        return lif_reference_forward(x_seq, v_init, decay, cfg, spike_fn=spike_fn)

    def extra_repr(self) -> str:
        # spikingjelly's fields in its order, then ours; a surrogate module shows as a child module
        # (``(surrogate_function): Sigmoid(alpha=4.0, spiking=True)``), as in spikingjelly's repr
        text = (
            f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
            f"step_mode={self.step_mode}{self._leak_repr()}, store_v_seq={self.store_v_seq}, backend={self.backend}"
        )
        fn = self.surrogate_function
        if not isinstance(fn, nn.Module):
            surrogate, _ = kernel_surrogate(fn)
            if surrogate is not None:
                name, alpha = surrogate
                text += f", surrogate_function={name}, alpha={default_alpha(name) if alpha is None else alpha}"
            else:
                text += f", surrogate_function={fn!r}"
        return text

    def _leak_repr(self) -> str:
        return ""


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


class LIFNode(_NeuronBase, *_spikingjelly_neuron("LIFNode")):
    """Leaky integrate-and-fire neuron, spikingjelly 2.0.0's ``neuron.LIFNode`` on fused kernels.

    Per step: ``H = V + (X - (V - V_reset)) / tau`` (``decay_input``) or
    ``H = V - (V - V_reset) / tau + X``; ``S = H >= v_threshold``; hard reset ``V = S ? v_reset : H``
    or soft reset (``v_reset=None``) ``V = H - S * v_threshold``.

    Args:
        tau: membrane time constant, > 1.
        decay_input: whether the input is divided by tau too.
        v_threshold: firing threshold.
        v_reset: hard-reset value, or None for soft reset.
        surrogate_function: a spikingjelly surrogate object (Sigmoid, ATan, PiecewiseQuadratic, Erf,
            PiecewiseExp, SoftSign, SuperSpike and Rect run fused, others on the eager loop; an
            instance, not the class), a ``tks.surrogate.Surrogate``, one of our names
            (``tks_kernels.SURROGATES``, default alpha) or a ``(name, alpha)`` pair. Default:
            spikingjelly's shared ``surrogate.Sigmoid()`` (alpha 4), see the module docstring.
        detach_reset: the spike in the reset carries no gradient.
        step_mode: 's' (input ``[N, *]``, one step) or 'm' (input ``[T, N, *]``).
        store_v_seq: keep ``self.v_seq`` (``[T, N, *]``) besides the last ``self.v``.
        backend: "auto" | "triton" | "cuda" | "cpp" | "torch" (eager reference); "cupy" = "auto".

    State: ``self.v`` (fp32) carries over between calls until ``reset()`` (or
    ``spikingjelly.activation_based.functional.reset_net(model)``).

    Example::

        >>> lif = tks.LIFNode(tau=2.0, step_mode="m")
        >>> spikes = lif(torch.randn(4, 32, 128, device="cuda"))   # [T, N, *]
        >>> lif.reset()
    """

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: SurrogateSpec = _default_surrogate("LIFNode"),
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq, backend)
        self.tau = _check_tau("tau", tau)
        self.decay_input = check_bool("decay_input", decay_input)

    def _leak_kwargs(self) -> dict:
        return {"tau": self.tau}

    def _decay_input(self) -> bool:
        return self.decay_input

    def _leak_repr(self) -> str:
        return f", tau={self.tau}, decay_input={self.decay_input}"


class IFNode(_NeuronBase, *_spikingjelly_neuron("IFNode")):
    """Integrate-and-fire neuron (no leak, ``H = V + X``), spikingjelly 2.0.0's ``neuron.IFNode``.
    Arguments and state as :class:`LIFNode` (without ``tau`` / ``decay_input``)."""

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: SurrogateSpec = _default_surrogate("IFNode"),
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq, backend)

    def _leak_kwargs(self) -> dict:
        return {"tau": None}


class ParametricLIFNode(_NeuronBase, *_spikingjelly_neuron("ParametricLIFNode")):
    """LIF neuron with a learnable time constant, spikingjelly 2.0.0's ``neuron.ParametricLIFNode``.

    ``1 / tau = sigmoid(w)`` with the parameter ``self.w`` initialised to ``-ln(init_tau - 1)``;
    the charge multiplies by ``sigmoid(w)`` where :class:`LIFNode` divides by tau. Other
    arguments and state as :class:`LIFNode`.
    """

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: SurrogateSpec = _default_surrogate("ParametricLIFNode"),
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq, backend)
        init_tau = _check_tau("init_tau", init_tau)
        self.decay_input = check_bool("decay_input", decay_input)
        self.w = nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))

    def _leak_kwargs(self) -> dict:
        return {"decay": self.w.sigmoid()}

    def _decay_input(self) -> bool:
        return self.decay_input

    def _leak_repr(self) -> str:
        with torch.no_grad():
            tau = 1.0 / self.w.sigmoid()
        return f", tau={tau}, decay_input={self.decay_input}"


def _count_surrogate(fn) -> tuple[int, tuple[float, float]]:
    """``(max_spike_count, (grad_min, grad_max))`` of a spiking MultiLevelSpikeCount (spikingjelly's
    or ours), read at every call like spikingjelly reads it; ValueError for anything else."""
    from .surrogate import MultiLevelSpikeCount

    ok = isinstance(fn, MultiLevelSpikeCount)
    if not ok:
        try:
            from spikingjelly.activation_based import surrogate as sj_surrogate

            ok = isinstance(fn, sj_surrogate.MultiLevelSpikeCount)
        except ImportError:
            pass
    if not ok or not getattr(fn, "spiking", True):
        raise ValueError(
            f"surrogate_function must be a spiking MultiLevelSpikeCount (spikingjelly's surrogate.MultiLevelSpikeCount(D) "
            f"or tks.surrogate.MultiLevelSpikeCount(D)), got {fn!r}"
        )
    return fn.max_spike_count, (fn.grad_min, fn.grad_max)


def _default_count_surrogate():
    default = _default_surrogate("ILIFNode")
    if default is not None:
        return default
    from .surrogate import MultiLevelSpikeCount

    return MultiLevelSpikeCount(4)


class ILIFNode(LIFNode, *_spikingjelly_neuron("ILIFNode")):
    """Integer-valued LIF (I-LIF, ECCV 2024), spikingjelly 2.0.0's ``neuron.ILIFNode`` on the fused
    kernels (``tks_kernels.lif_multistep(..., max_spike_count=D)``).

    Per step: ``H = (1 - 1/tau) V + X`` (``step_mode='s'``: ``V - V/tau + X``, as spikingjelly's
    single-step path computes it; the two round differently); ``C = round(clamp(H / v_threshold, 0, D))`` (counts, not
    binary spikes; ties to even); soft reset ``V = H - C * v_threshold``. Backward: a rectangular
    straight-through gradient ``1 / v_threshold`` where ``grad_min <= H / v_threshold <= grad_max``.
    ``D`` and the window are read from ``surrogate_function`` (a spiking ``MultiLevelSpikeCount``,
    spikingjelly's or ours) at every call. Counts come back in x's dtype, ``v`` in fp32.

    Deploying I-LIF spike-driven needs expanding each count into D binary events (spikingjelly's
    ``layer.SpikeCountToBinary``): the counts themselves are integer activations.

    Args:
        tau: > 1; spikingjelly's default 4/3 (decay 0.25, the authors' code).
        v_threshold: > 0.
        surrogate_function: default spikingjelly's shared ``surrogate.MultiLevelSpikeCount(4)``.
        detach_reset, step_mode, store_v_seq, backend: as :class:`LIFNode`.
    """

    def __init__(
        self,
        tau: float = 4.0 / 3.0,
        v_threshold: float = 1.0,
        surrogate_function=_default_count_surrogate(),
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str = "auto",
    ):
        _count_surrogate(surrogate_function)
        v_threshold = check_real("v_threshold", v_threshold)
        if not v_threshold > 0:
            raise ValueError(f"v_threshold must be > 0 for integer spike counts, got {v_threshold}")
        super().__init__(tau=tau, decay_input=False, v_threshold=v_threshold, v_reset=None,
                         surrogate_function=surrogate_function, detach_reset=detach_reset, step_mode=step_mode,
                         store_v_seq=store_v_seq, backend=backend)

    def _run(self, x_seq: torch.Tensor, v_init: Optional[torch.Tensor], store_v_seq: bool):
        count, window = _count_surrogate(self.surrogate_function)
        # spikingjelly's single-step ILIFNode charges as its LIFNode (V - V/tau + X), its multi-step
        # one as (1 - 1/tau) V + X: the roundings differ, so each step mode takes its own
        charge = "lif" if self.step_mode == "s" else "ilif"
        kwargs = dict(tau=self.tau, decay_input=False, v_threshold=self.v_threshold, v_reset=None,
                      detach_reset=self.detach_reset, store_v_seq=store_v_seq, max_spike_count=count,
                      grad_window=window, count_charge=charge)
        if x_seq.dtype == torch.float64 and self.backend in ("auto", "torch"):
            from tks_kernels.lif.reference import lif_multistep_reference

            return lif_multistep_reference(x_seq, v_init, **kwargs)
        return lif_multistep(x_seq, v_init, **kwargs, backend=self.backend, save=self.save)

    def _leak_repr(self) -> str:
        return f", tau={self.tau}"


class MultiBitLIFNode(ILIFNode):
    """A ``bits``-bit spiking neuron: :class:`ILIFNode` with ``D = 2**bits - 1`` levels above zero
    (``bits=1`` is a binary soft-reset I-LIF), and its own ``MultiLevelSpikeCount(D, grad_window)``
    surrogate object. Other arguments as :class:`ILIFNode`.

    Example::

        >>> node = tks.MultiBitLIFNode(bits=2, step_mode="m")    # counts 0..3
        >>> counts = node(torch.randn(4, 32, 128))
    """

    def __init__(self, bits: int = 2, tau: float = 4.0 / 3.0, v_threshold: float = 1.0, grad_window=None,
                 detach_reset: bool = False, step_mode: str = "s", store_v_seq: bool = False, *,
                 backend: str = "auto"):
        from tks_kernels._checks import check_int

        bits = check_int("bits", bits)
        if not 1 <= bits <= 24:
            raise ValueError(f"bits must be in 1..24 (D = 2**bits - 1 spike levels), got {bits}")
        try:
            from spikingjelly.activation_based.surrogate import MultiLevelSpikeCount
        except ImportError:
            from .surrogate import MultiLevelSpikeCount
        super().__init__(tau=tau, v_threshold=v_threshold,
                         surrogate_function=MultiLevelSpikeCount(2**bits - 1, grad_window=grad_window),
                         detach_reset=detach_reset, step_mode=step_mode, store_v_seq=store_v_seq, backend=backend)
        self.bits = bits

    def _leak_repr(self) -> str:
        return f", tau={self.tau}, bits={self.bits}"
