"""The contract every training method implements, and the pieces they share.

A method is the training objective plus the forward plumbing it needs (a second pass, a reversed
pass, a weak classifier), its command-line options and its defaults. ``tks-train`` knows nothing
of any one method: it builds ``MethodNet(model, method)`` (the model plus the method's own
training-only modules, so that DistributedDataParallel wraps one module and sees one forward per
step), calls it on each batch, and asks the method for the loss and the parts to log.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch
from torch import nn


class MethodOptionError(ValueError):
    """A method option that is out of range or does not fit the data; the message names the flag."""


@dataclass(frozen=True)
class Option:
    """A command-line option of one or more methods: ``--flag`` stored as ``dest`` in the run's config.
    ``valid(value)`` is its domain whatever the method (a method may narrow it), ``requirement`` says
    it in words for the error."""

    flag: str
    dest: str
    type: Callable
    help: str
    valid: Callable = lambda value: True  # noqa: E731
    requirement: str = ""

    def check(self, value) -> None:
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (finite and self.valid(value)):
            raise MethodOptionError(f"{self.flag} {format_value(value)}: must be {self.requirement or 'a finite number'}")


def format_value(value) -> str:
    """An option's value as the user types it (a list as ``8,5,3``)."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _comma_list(kind, name: str, example: str):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in str(text).split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {name} (e.g. {example})") \
                from None
        return values  # a list, as config.json stores it (so --resume compares equal)

    parse.__name__ = f"comma-separated {name}"
    return parse


comma_ints = _comma_list(int, "integers", "8,5,3")
comma_floats = _comma_list(float, "numbers", "1,0.5")


def model_input(x: torch.Tensor, T: int, static: bool) -> tuple[torch.Tensor, Optional[int]]:
    """The model's ``(input, T)`` from a loader batch: images ``[B, C, *]`` stay as they are (repeated
    over ``T`` by the model); frames ``[B, T_data, C, *]`` become the sequence of their first ``T``
    steps, ``[T, B, C, *]``."""
    if static:
        return x, T
    if T > x.shape[1]:
        raise ValueError(f"T={T} steps asked for, the data has {x.shape[1]}")
    return x[:, :T].transpose(0, 1), None


class Method:
    """Base of the training methods. Subclasses set ``name``, ``summary``, ``options`` (the dests of
    the options they read, see ``tks.methods.OPTIONS``) and implement ``loss``; those that change
    the forward override ``forward`` (run inside ``MethodNet.forward``) and ``extra_modules``.

    ``hparams``: the method's resolved options (``resolve``); ``T``: the training timesteps;
    ``static``: the data are images repeated over T (else sequences of frames).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, hparams: dict, *, epochs: int, T: int, static: bool):
        self.hparams = dict(hparams)
        self.epochs, self.T, self.static = epochs, T, static

    # -- options -----------------------------------------------------------------------------------

    @classmethod
    def resolve(cls, given: dict, info, T: int) -> dict:
        """The method's options from those the user gave (by dest, each already in its domain): its
        ``defaults(info, T)`` (if it has them) updated with ``given``. A method whose options depend
        on another one (SSNN's ``--final-loss``) overrides this."""
        hparams = dict(cls.defaults(info, T)) if hasattr(cls, "defaults") else {}
        hparams.update(given)
        return hparams

    @classmethod
    def check(cls, hparams: dict, *, T: int, static: bool) -> None:
        """Raise ``MethodOptionError`` for values that do not fit (ranges are checked by ``OPTIONS``)."""

    # -- data and model ----------------------------------------------------------------------------

    @classmethod
    def build_model(cls, config: dict) -> nn.Module:
        """The model a run of this method trains and deploys, from the run's ``config.json``
        (weights not loaded): the zoo model; a method that changes the deployed network (SSNN)
        builds its own."""
        from ..models import NeuronConfig, build_model

        return build_model(
            config["model"], num_classes=config["num_classes"], in_channels=config["in_channels"],
            image_size=config["image_size"], signal_length=config.get("signal_length"),  # None: images (old runs too)
            width=config["width"], neuron=NeuronConfig(**config["neuron"]),
        )

    @classmethod
    def evaluate(cls, model: nn.Module, checkpoint: dict, loader, *, device, T_max: Optional[int]) -> Optional[dict]:
        """tks-eval's metrics of a run of this method in place of its T' = 1..T sweep, or ``None`` (the
        default: the sweep). A method whose deployed model cannot run on fewer input steps (SSNN)
        returns ``{"timesteps": [(T', top1, aurc)], "steps": [(t, top1)]}`` and optionally
        ``"plot_timesteps"`` (the x of its points in the accuracy plot), ``"plot_label"``, ``"note"`` (a
        line printed under the accuracy table) and
        ``"tables"``: ``[{"name", "title", "header", "rows"}]``, printed by tks-eval and written to
        ``<name>.csv`` (the rows of every run, after a "run" column). ``model``: the run's model,
        weights loaded, on ``device``, in eval mode; ``loader``: its test set; ``T_max``: the
        ``--T-max`` passed (``None`` if none)."""
        return None

    def data_T(self) -> int:
        """How many steps the dataset must provide (TSSD's teacher needs more than T on event data)."""
        return self.T

    def extra_modules(self, model: nn.Module, info) -> dict[str, nn.Module]:
        """Training-only modules of the method (trained with the model, never part of the deployed
        forward; saved in the checkpoint under ``"method"``)."""
        return {}

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        """A loader batch as the deployed model sees it (identity unless the data hold more steps)."""
        return x

    # -- a training step ---------------------------------------------------------------------------

    def forward(self, net: "MethodNet", x: torch.Tensor) -> dict:
        """Everything the loss needs from one batch; the default: the model's logits ``[T, B, C]``."""
        inputs, T = model_input(x, self.T, self.static)
        return {"logits": net.model(inputs, T)}

    def loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(scalar loss, {part name: scalar}``): the parts are logged per epoch (detached)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (from 0)."""

    @property
    def lam(self) -> float:
        """The weight a schedule gives this epoch (TKS's lambda), for the log; 0 without one."""
        return 0.0


class MethodNet(nn.Module):
    """The model plus the method's training-only modules, run as one module: ``forward(x)`` is the
    method's ``forward`` on the loader batch ``x``. DistributedDataParallel wraps this (one forward
    per step, whatever passes the method makes)."""

    def __init__(self, model: nn.Module, method: Method, info):
        super().__init__()
        self.model = model
        self.extras = nn.ModuleDict(method.extra_modules(model, info))
        self.method = method

    def forward(self, x: torch.Tensor) -> dict:
        return self.method.forward(self, x)


def mean_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the mean over time, ``logits [T, B, C]`` (or ``[B, C]``), in fp32."""
    import tks_kernels

    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    return tks_kernels.mean_ce(logits.float(), target)
