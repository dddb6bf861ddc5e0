"""``ssnn``: the shrinking SNN (SSNN), our formulation of the fifth abstract in
``shared/papers/related_abstracts.txt`` (its authors published no code; every choice below is ours).

- Stages: the zoo model's own (VGG-SNN: its four pools; ResNet-19 / SEW-ResNet-19: its three block
  groups; ConvSNN: its three conv blocks). Stage i runs ``T_i`` steps, ``--stage-T T1,T2,...``,
  strictly decreasing, ``T1 = --T`` (the input's steps); default ``T_i = round(T (n - i) / n)``,
  i = 0..n-1 (8,5,3 for T=8 and 3 stages; 10,8,5,3 for T=10 and 4).
- Temporal transformer between stage i and i+1 (``tks.models.shrinking.TemporalTransformer``):
  ``Y[j] = sum_k W[j, k] X[k]``, ``W [T_i+1, T_i]`` initialised to area averaging;
  ``--temporal-transformer learned`` (default: W trained, unconstrained, with the network's
  weight decay) or ``fixed`` (the averaging, a buffer). Its output is weighted spike counts, not
  spikes.
- Early classifiers after every stage but the last (training-only modules of the method, saved
  under "method" in the checkpoint, never in the deployed model): global average pool over space,
  then a linear layer, per step: logits ``[T_i, B, classes]`` (``tssd.WeakClassifier``).
- Loss: ``final + sum_i w_i * CE(mean_t ec_i, y)``: ``final`` is the loss of one of the
  single-pass methods on the final output ``[Tn, B, C]``, ``--final-loss {ce, ls, tet, tks}``
  (default ce; with that method's own options, ``--label-smoothing``, ``--lam``, ``--temperature``,
  and defaults); ``w_i`` from ``--ec-weights`` (default 1 each). (``--final-loss``, not ``--loss``:
  ``--loss`` is an alias of ``--method`` in tks-train.)
- Parts logged: ``final`` (and ``final_<part>`` when the final loss has several, e.g. tks's ce,
  kd, selected), ``ec1`` .. ``ec{n-1}``.
- Deployed: the ``ShrinkingSNN`` at its schedule (``SSNN.build_model``), without early classifiers.
  ``tks-eval`` (``SSNN.evaluate``) reports the final top-1 at the schedule (input steps T1), each
  early exit's top-1 (an early classifier run on its stage's output, for the table only), the
  average timesteps (mean of the stage T's) and the relative cost: dense synaptic operations of
  the schedule over those of the same model at T1 everywhere (``schedule_operations``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..models.shrinking import ShrinkingSNN, schedule_operations
from .base import Method, MethodOptionError, format_value, mean_ce, model_input
from .ce import CE, LabelSmoothing
from .tet import TET
from .tks import TKS
from .tssd import WeakClassifier

# the single-pass methods whose loss can be the final output's
FINAL_METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (CE, LabelSmoothing, TET, TKS)}
FINAL_LOSSES = tuple(FINAL_METHODS)
TRANSFORMERS = ("learned", "fixed")
OWN_OPTIONS = ("stage_T", "temporal_transformer", "ec_weights", "final_loss")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def default_stage_T(T: int, n_stages: int, model_name: str = "the model") -> list[int]:
    """``T_i = round(T * (n - i) / n)`` (halves up), i = 0..n-1: T shrinking linearly to about T / n.
    Strictly decreasing when ``T >= n``; else ``MethodOptionError``."""
    if T < n_stages:
        raise MethodOptionError(f"--T {T}: {model_name} has {n_stages} stages and ssnn gives each fewer steps than "
                                f"the one before: pass --T {n_stages} or more (and --stage-T, or the default)")
    return [(2 * T * (n_stages - i) + n_stages) // (2 * n_stages) for i in range(n_stages)]


def early_classifiers(model: ShrinkingSNN, num_classes: int) -> dict[str, nn.Module]:
    """``{"ec1": ..., "ec{n-1}": ...}``: after stage i (1-based) a global average pool and a linear layer."""
    return {f"ec{i + 1}": WeakClassifier(model.stage_channels[i], num_classes) for i in range(len(model.stages) - 1)}


class SSNN(Method):
    name = "ssnn"
    summary = ("SSNN: stage i at T_i steps (--stage-T, shrinking), temporal transformers between stages, "
               "final loss (--final-loss) + sum_i w_i CE(early classifier after stage i)")
    options = OWN_OPTIONS + ("lam", "temperature", "label_smoothing")  # the last three: --final-loss's

    @classmethod
    def resolve(cls, given, info, T):
        final = given.get("final_loss", "ce")
        if final not in FINAL_METHODS:
            raise MethodOptionError(f"--final-loss {final}: must be one of {', '.join(FINAL_LOSSES)}")
        sub = FINAL_METHODS[final]
        borrowed = {d: v for d, v in given.items() if d not in OWN_OPTIONS}
        unused = [d for d in borrowed if d not in sub.options]
        if unused:
            users = "; ".join(f"{_flag(d)} is an option of --final-loss "
                              f"{', '.join(m for m, c in FINAL_METHODS.items() if d in c.options)}" for d in unused)
            raise MethodOptionError(f"--method ssnn --final-loss {final} does not use "
                                    f"{', '.join(map(_flag, unused))} ({users})")
        hparams = {"stage_T": None, "temporal_transformer": "learned", "ec_weights": None, "final_loss": final}
        hparams.update(sub.resolve(borrowed, info, T))
        hparams.update({d: v for d, v in given.items() if d in OWN_OPTIONS})
        return hparams

    @classmethod
    def check(cls, hparams, *, T, static):
        stage_T = hparams["stage_T"]
        if stage_T is not None:
            shown = format_value(stage_T)
            if not stage_T or any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in stage_T):
                raise MethodOptionError(f"--stage-T {shown}: one integer >= 1 per stage of the model")
            if stage_T[0] != T:
                raise MethodOptionError(f"--stage-T {shown}: the first stage runs on the input's --T {T} steps: start "
                                        f"it with {T} (e.g. --stage-T {format_value([T] + list(stage_T[1:]))})")
            if any(b >= a for a, b in zip(stage_T, stage_T[1:])):
                raise MethodOptionError(f"--stage-T {shown}: must be strictly decreasing (each stage fewer steps "
                                        f"than the one before), e.g. 8,5,3")
        if hparams["temporal_transformer"] not in TRANSFORMERS:
            raise MethodOptionError(f"--temporal-transformer {hparams['temporal_transformer']}: must be "
                                    f"{' or '.join(TRANSFORMERS)}")
        weights = hparams["ec_weights"]
        if weights is not None and not all(w >= 0 for w in weights):
            raise MethodOptionError(f"--ec-weights {format_value(weights)}: loss weights must be >= 0 (default 1 each)")
        sub = FINAL_METHODS[hparams["final_loss"]]
        sub.check({d: hparams[d] for d in sub.options}, T=T, static=static)

    # -- the model ---------------------------------------------------------------------------------

    @classmethod
    def build_model(cls, config):
        """The ``ShrinkingSNN`` of the run: the zoo model of ``config["model"]`` at ``config["stage_T"]``
        (the default schedule when it is None), transformers learned or fixed."""
        base = super().build_model(config)
        n, name = len(base.stages), config["model"]
        stage_T = config.get("stage_T")
        if stage_T is None:
            stage_T = default_stage_T(int(config["T"]), n, name)
        elif len(stage_T) != n:
            example = default_stage_T(int(config["T"]), n, name) if config["T"] >= n else None
            hint = f", e.g. --stage-T {format_value(example)}" if example else f" (and --T >= {n})"
            raise MethodOptionError(f"--stage-T {format_value(stage_T)}: {name} has {n} stages; give one T per stage "
                                    f"({n} values){hint}")
        learned = config.get("temporal_transformer", "learned")
        if learned not in TRANSFORMERS:
            raise MethodOptionError(f"--temporal-transformer {learned}: must be {' or '.join(TRANSFORMERS)}")
        return ShrinkingSNN(base, [int(t) for t in stage_T], learnable=learned == "learned")

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        sub = FINAL_METHODS[self.hparams["final_loss"]]
        self.final = sub({d: self.hparams[d] for d in sub.options}, epochs=self.epochs, T=self.T, static=self.static)

    def extra_modules(self, model, info):
        if not isinstance(model, ShrinkingSNN):
            raise MethodOptionError(f"ssnn trains a ShrinkingSNN (built by SSNN.build_model from the run's config), "
                                    f"got {type(model).__name__}")
        if model.stage_T[0] != self.T:
            raise MethodOptionError(f"--stage-T {format_value(model.stage_T)}: the first stage runs on the input's "
                                    f"--T {self.T} steps: start it with {self.T}")
        n = len(model.stages)
        weights = self.hparams["ec_weights"]
        if weights is None:
            weights = [1.0] * (n - 1)
        elif len(weights) != n - 1:
            raise MethodOptionError(f"--ec-weights {format_value(weights)}: {model.base_name} has {n} stages, so {n - 1} "
                                    f"early classifiers (after every stage but the last): give {n - 1} weights")
        # recorded in the run's config (with what the model decided: the default schedule)
        self.hparams.update(stage_T=list(model.stage_T), ec_weights=[float(w) for w in weights])
        return early_classifiers(model, info.num_classes)

    # -- a training step ---------------------------------------------------------------------------

    def forward(self, net, x):
        inputs, T = model_input(x, self.T, self.static)
        n = len(net.model.stages)
        run = net.model.run(inputs, T, taps=tuple(range(n - 1)))
        outputs = {"logits": run.logits}
        for i in range(n - 1):
            outputs[f"ec{i + 1}_logits"] = net.extras[f"ec{i + 1}"](run.taps[i])
        return outputs

    def loss(self, outputs, target):
        final, final_parts = self.final.loss({"logits": outputs["logits"]}, target)
        parts = {"final": final}
        if len(final_parts) > 1:
            parts.update({f"final_{k}": v for k, v in final_parts.items()})
        loss = final
        for i, w in enumerate(self.hparams["ec_weights"]):
            ce = mean_ce(outputs[f"ec{i + 1}_logits"].float(), target)
            parts[f"ec{i + 1}"] = ce
            loss = loss + w * ce
        return loss, parts

    def set_epoch(self, epoch):
        self.final.set_epoch(epoch)

    @property
    def lam(self):
        return self.final.lam

    # -- tks-eval ----------------------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def evaluate(cls, model, checkpoint, loader, *, device, T_max: Optional[int]):
        """The final top-1 and AURC at the schedule, each early exit's top-1, the average timesteps and
        the relative costs (see the module docstring); the early classifiers run only here."""
        from ..eval import EvalOptionError, aurc
        from ..runs import CheckpointError

        config = checkpoint["config"]
        T, static, stage_T = int(config["T"]), bool(config["static"]), model.stage_T
        schedule = format_value(stage_T)
        if T_max is not None and T_max != T:
            raise EvalOptionError(f"--T-max {T_max}: an ssnn run is tested at its schedule only (stage T {schedule}, "
                                  f"the input's {T} steps): drop --T-max, or pass --T-max {T}")
        n = len(model.stages)
        ecs = nn.ModuleDict(early_classifiers(model, int(config["num_classes"])))
        try:
            ecs.load_state_dict(checkpoint.get("method", {}))
        except RuntimeError as e:
            raise CheckpointError(f"the checkpoint's early classifiers do not fit the run's model ({str(e)[:200]}); "
                                  f"was it written by tks-train --method ssnn?") from None
        ecs.to(device).eval()
        final_means, exit_means, step_correct, labels, ops = [], [[] for _ in range(n - 1)], [], [], None
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            inputs, T_arg = model_input(x, T, static)
            if ops is None:  # shapes only: one sample
                ops = schedule_operations(model, inputs[:1] if static else inputs[:, :1], T_arg)
            run = model.run(inputs, T_arg, taps=tuple(range(n - 1)))
            logits = run.logits.float()
            final_means.append(logits.mean(0).cpu())
            step_correct.append((logits.argmax(-1) == y).cpu())
            for i in range(n - 1):
                exit_means[i].append(ecs[f"ec{i + 1}"](run.taps[i]).float().mean(0).cpu())
            labels.append(y.cpu())
        y = torch.cat(labels)
        mean = torch.cat(final_means)
        correct = mean.argmax(-1) == y
        top1 = correct.double().mean().item()
        per_step = torch.cat(step_correct, 1).double().mean(1)
        uniform = _total(ops["uniform"])
        relative = _total(ops["schedule"]) / uniform
        exits = []
        for i in range(n - 1):
            acc = (torch.cat(exit_means[i]).argmax(-1) == y).double().mean().item()
            s = ops["schedule"]
            cost = (s["stem"] + sum(s["stages"][: i + 1]) + sum(s["transformers"][:i])
                    + stage_T[i] * model.stage_channels[i] * int(config["num_classes"])) / uniform  # + its linear
            exits.append([f"ec{i + 1}", i + 1, stage_T[i], f"{acc:.6f}", f"{cost:.6f}"])
        exits.append(["final", n, stage_T[-1], f"{top1:.6f}", f"{relative:.6f}"])
        avg = model.average_timesteps
        return {
            "timesteps": [(T, top1, aurc(mean.max(-1).values, correct))],
            "steps": [(t + 1, per_step[t].item()) for t in range(len(per_step))],
            "plot_timesteps": [avg],
            "plot_label": f"stage T {schedule} (average {avg:.2f}), cost x{relative:.2f}",
            "note": f"tested at its schedule only (stage T {schedule}): T'={T} is its input's steps, average "
                    f"timesteps {avg:.2f}, relative cost {relative:.2f}; steps.csv holds its last stage's "
                    f"{stage_T[-1]} steps",
            "tables": [
                {"name": "ssnn_schedule", "title": "SSNN runs at their schedule (relative cost: dense synaptic "
                                                   "operations over the same model at T1 everywhere)",
                 "header": ["stage_T", "input_T", "average_T", "top1", "relative_cost"],
                 "rows": [[schedule, T, f"{avg:.4f}", f"{top1:.6f}", f"{relative:.6f}"]]},
                {"name": "early_exits", "title": "SSNN early exits (an early classifier on its stage's output; "
                                                 "relative cost up to that exit)",
                 "header": ["exit", "stage", "stage_T", "top1", "relative_cost"], "rows": exits},
            ],
        }


def _total(parts: dict) -> float:
    return parts["stem"] + sum(parts["stages"]) + sum(parts["transformers"]) + parts["head"]


__all__ = ["SSNN", "FINAL_LOSSES", "TRANSFORMERS", "default_stage_T", "early_classifiers"]
