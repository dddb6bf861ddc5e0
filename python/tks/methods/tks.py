"""``tks``: Temporal Knowledge Sharing (Dong, Zhao, Zeng et al.), the fused ``tks_kernels.tks_loss``:
the steps that predict the label teach every step; its weight ``lam`` ramps from 0 to ``--lam``
with the epoch (``tks_kernels.tks_lambda``). The authors: lam 0.7 / temperature 3 for static
images, 0.3 / 5 for event data (the defaults, from the dataset)."""
from __future__ import annotations

from ..loss import TKSLoss
from .base import Method, MethodOptionError


class TKS(Method):
    name = "tks"
    summary = "TKS: (1 - lam) CE(mean z) + lam KD(steps, correct steps' teacher), lam ramped 0 -> --lam"
    options = ("lam", "temperature")

    @staticmethod
    def defaults(info, T):
        return {"lam": info.lam, "temperature": info.temperature}

    @classmethod
    def check(cls, hparams, *, T, static):
        lam, tau = hparams["lam"], hparams["temperature"]
        if not 0 <= lam <= 1:
            raise MethodOptionError(f"--lam {lam}: the largest TKS weight must be in [0, 1] (the authors: 0.7 "
                                    f"static, 0.3 DVS)")
        if not tau > 0:
            raise MethodOptionError(f"--temperature {tau}: must be > 0 (the authors: 3 static, 5 DVS)")

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        self.criterion = TKSLoss(temperature=hparams["temperature"], lam_max=hparams["lam"], epochs=self.epochs,
                                 return_parts=True)
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.criterion.set_epoch(epoch)

    @property
    def lam(self):
        return self.criterion.lam

    def loss(self, outputs, target):
        loss, parts = self.criterion(outputs["logits"].float(), target)
        return loss, {"ce": parts.ce, "kd": parts.kd, "selected": parts.selected}
