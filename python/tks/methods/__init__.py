"""The training methods tks-train compares, one module each, on the same models, data and evaluation.

- ``ce`` (``ce.py``): the baseline, cross-entropy of the mean output over T; ``ls``: with label smoothing.
- ``tet`` (``tet.py``): TET, every step supervised.
- ``tks`` (``tks.py``): Temporal Knowledge Sharing, the fused ``tks_kernels.tks_loss``.
- ``tssd`` (``tssd.py``): temporal-spatial self-distillation (our formulation).
- ``trt`` (``trt.py``): temporal reversed training (our formulation).
- ``ssnn`` (``ssnn.py``): the shrinking SNN, a T per stage, temporal transformers, early classifiers
  (our formulation).

Adding a method is adding one module with a ``Method`` subclass (``base.py``), its entry in
``METHODS`` and, if it has new flags, in ``OPTIONS``. Every option is stored in the run's
``config.json`` under its ``dest`` (so ``--resume`` and ``tks-eval`` need nothing else).
"""
from __future__ import annotations

import math

from .base import Method, MethodNet, MethodOptionError, Option, comma_floats, comma_ints, mean_ce, model_input
from .ce import CE, LabelSmoothing
from .tet import TET
from .tks import TKS
from .trt import TRT
from .ssnn import FINAL_LOSSES, SSNN, TRANSFORMERS
from .tssd import TSSD

__all__ = ["METHODS", "OPTIONS", "Method", "MethodNet", "MethodOptionError", "Option", "build_method",
           "check_options", "resolve_hparams", "mean_ce", "model_input"]

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (CE, LabelSmoothing, TET, TKS, TSSD, TRT, SSNN)}

# Every method option, once (a flag some methods share, e.g. --temperature, has one meaning per method
# and its defaults are the method's: see each method's ``defaults``).
OPTIONS: dict[str, Option] = {o.dest: o for o in (
    Option("--lam", "lam", float,
           "tks (and ssnn --final-loss tks): largest lambda, lambda = lam * epoch / epochs (default 0.7 static, "
           "0.3 DVS data); trt: weight of kd(reversed, original) (default 1)", lambda v: v >= 0,
           "a finite number >= 0"),
    Option("--temperature", "temperature", float,
           "tks (and ssnn --final-loss tks): teacher temperature (default 3 static, 5 DVS data); tssd, trt: kd "
           "temperature (default 2)", lambda v: v > 0, "> 0"),
    Option("--label-smoothing", "label_smoothing", float,
           "ls (and ssnn --final-loss ls): smoothing factor (default 0.1)",
           lambda v: 0 <= v <= 1, "in [0, 1] (the TKS ablation uses 0.1)"),
    Option("--teacher-T", "teacher_T", int,
           "tssd: steps of the temporal teacher, > T (default 2T; a multiple of T on event data)",
           lambda v: v >= 1, ">= 1"),
    Option("--weak-stage", "weak_stage", int,
           "tssd: the stage (1-based) whose output feeds the weak classifier (default the middle stage)",
           lambda v: v >= 1, ">= 1 (a stage of the model, counted from 1)"),
    Option("--alpha", "alpha", float, "tssd: weight of kd(student, temporal teacher) (default 1)",
           lambda v: v >= 0, "a finite number >= 0"),
    Option("--beta", "beta", float, "tssd: weight of kd(weak classifier, student) (default 1)",
           lambda v: v >= 0, "a finite number >= 0"),
    Option("--lam-star", "lam_star", float, "trt: weight of CE of the star-hybrid rates (default 1)",
           lambda v: v >= 0, "a finite number >= 0"),
    Option("--stage-T", "stage_T", comma_ints,
           "ssnn: steps of each stage of the model, strictly decreasing, the first = --T, e.g. 8,5,3 (default: "
           "T_i = round(T * (n - i) / n) over the model's n stages, i = 0..n-1: 8,5,3 for T=8 and 3 stages)",
           lambda v: len(v) >= 1 and all(t >= 1 for t in v) and all(b < a for a, b in zip(v, v[1:])),
           "integers >= 1, strictly decreasing (each stage fewer steps than the one before), e.g. 8,5,3"),
    Option("--temporal-transformer", "temporal_transformer", str,
           "ssnn: learned (the T_i+1 x T_i matrix between stages trained, from the area averaging) or fixed (the "
           "area averaging, not trained) (default learned)",
           lambda v: v in TRANSFORMERS, " or ".join(TRANSFORMERS)),
    Option("--ec-weights", "ec_weights", comma_floats,
           "ssnn: weight of each early classifier's CE, one per stage but the last, e.g. 1,0.5 (default 1 each)",
           lambda v: all(math.isfinite(w) and w >= 0 for w in v), "finite numbers >= 0, one per early classifier"),
    Option("--final-loss", "final_loss", str,
           "ssnn: the loss of the final output, one of the single-pass methods: ce, ls, tet or tks (with their "
           "options --label-smoothing, --lam, --temperature) (default ce)",
           lambda v: v in FINAL_LOSSES, "one of " + ", ".join(FINAL_LOSSES)),
)}


def check_options(name: str, given: dict) -> dict:
    """The options in ``given`` that are set (by dest), each in its domain and used by method ``name``;
    else ``MethodOptionError`` naming the flag (and, for an unused one, the methods that use it)."""
    given = {d: v for d, v in given.items() if d in OPTIONS and v is not None}
    for dest, value in given.items():
        OPTIONS[dest].check(value)
    unused = [d for d in given if d not in METHODS[name].options]
    if unused:
        detail = "; ".join(
            f"{OPTIONS[d].flag} is an option of {', '.join(m for m, c in METHODS.items() if d in c.options)}"
            for d in unused)
        raise MethodOptionError(f"--method {name} does not use {', '.join(OPTIONS[d].flag for d in unused)} ({detail})")
    return given


def resolve_hparams(name: str, given: dict, info, T: int) -> dict:
    """The options of method ``name``: those in ``given`` (flag values the user passed, by dest), the
    method's defaults for the rest; checked. Raises ``MethodOptionError`` (the message names the
    flag) for a value outside the option's domain, for a flag this method does not use, or for a
    value that does not fit the method or the data."""
    cls = METHODS[name]
    hparams = cls.resolve(check_options(name, given), info, T)
    cls.check(hparams, T=T, static=info.static)
    return hparams


def build_method(name: str, hparams: dict, *, epochs: int, T: int, static: bool) -> Method:
    """Method ``name`` (one of ``METHODS``) with its resolved options."""
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; choose one of {sorted(METHODS)}")
    return METHODS[name](hparams, epochs=epochs, T=T, static=static)
