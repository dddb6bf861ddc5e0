"""``tet``: TET (Deng et al., ICLR 2022), every step supervised plus TET's small MSE term
(``tks.TETLoss``, TET's lam 1e-3, phi 1)."""
from __future__ import annotations

from ..loss import TETLoss
from .base import Method


class TET(Method):
    name = "tet"
    summary = "TET: every step supervised, (1 - 1e-3) mean_t CE(z_t, y) + 1e-3 MSE(z, 1)"

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        self.criterion = TETLoss()

    def loss(self, outputs, target):
        loss = self.criterion(outputs["logits"].float(), target)
        return loss, {"tet": loss}
