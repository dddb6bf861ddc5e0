"""The baselines: ``ce``, cross-entropy of the mean output over T (the usual SNN loss, the TKS
paper's baseline), and ``ls``, the same with label smoothing (the TKS ablation's "LS")."""
from __future__ import annotations

from ..loss import MeanCELoss
from .base import Method, MethodOptionError


class CE(Method):
    name = "ce"
    summary = "baseline: cross-entropy of the mean output over T"

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        self.criterion = MeanCELoss()

    def loss(self, outputs, target):
        loss = self.criterion(outputs["logits"].float(), target)
        return loss, {"ce": loss}


class LabelSmoothing(Method):
    name = "ls"
    summary = "cross-entropy of the mean output with label smoothing (--label-smoothing)"
    options = ("label_smoothing",)

    @staticmethod
    def defaults(info, T):
        return {"label_smoothing": 0.1}

    @classmethod
    def check(cls, hparams, *, T, static):
        s = hparams["label_smoothing"]
        if not 0 <= s <= 1:
            raise MethodOptionError(f"--label-smoothing {s}: must be in [0, 1] (the TKS ablation uses 0.1)")

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        self.criterion = MeanCELoss(label_smoothing=hparams["label_smoothing"])

    def loss(self, outputs, target):
        loss = self.criterion(outputs["logits"].float(), target)
        return loss, {"ls_ce": loss}
