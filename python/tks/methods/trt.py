"""``trt``: temporal reversed training (TRT), our formulation of the first abstract in
``shared/papers/related_abstracts.txt`` (its authors published no code; every choice below is ours).

- Two passes with shared weights: the original input and a time-reversed one. Event data: the
  input frames reversed along T. Static images (direct encoding: every step sees the same frame,
  so reversing the input changes nothing): the spike output of the model's first spiking layer is
  reversed along T and the rest of the network runs on it (``SpikingModel.run(...,
  reverse_first_spikes=True)``: no model code is duplicated for the second pass).
- Star operation: with ``r`` and ``r_rev`` the firing rates (mean over T) of the spike features that
  enter the classifier (the model's ``features``, e.g. the last pooled spike map of VGG-SNN, the
  spikes of ResNet-19's FC-256 layer), the hybrid ``r * r_rev`` (element-wise) goes through the
  same classifier, as one step, to logits ``z_star [B, C]``.
- Loss: ``CE(mean z, y) + CE(mean z_rev, y) + lam_star * CE(z_star, y) + lam * kd(z_rev, z)`` with
  ``kd = tks_kernels.kd_loss`` at ``--temperature``, the original pass the detached teacher;
  ``--lam 1 --lam-star 1 --temperature 2`` (our choice).
- Inference: the original path only.
"""
from __future__ import annotations

from ..loss import KDLoss
from .base import Method, MethodOptionError, mean_ce, model_input


class TRT(Method):
    name = "trt"
    summary = "TRT: CE(z) + CE(z reversed) + lam_star CE(star of the rates) + lam kd(z reversed, z)"
    options = ("lam", "lam_star", "temperature")

    @staticmethod
    def defaults(info, T):
        return {"lam": 1.0, "lam_star": 1.0, "temperature": 2.0}

    @classmethod
    def check(cls, hparams, *, T, static):
        for flag, key in (("--lam", "lam"), ("--lam-star", "lam_star")):
            if not hparams[key] >= 0:
                raise MethodOptionError(f"{flag} {hparams[key]}: a loss weight must be >= 0 (TRT's default 1)")
        if not hparams["temperature"] > 0:
            raise MethodOptionError(f"--temperature {hparams['temperature']}: must be > 0 (TRT's default 2)")

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        self.kd = KDLoss(temperature=hparams["temperature"])

    def forward(self, net, x):
        model = net.model
        inputs, T = model_input(x, self.T, self.static)
        original = model.run(inputs, T)
        if self.static:
            reversed_ = model.run(inputs, T, reverse_first_spikes=True)
        else:
            reversed_ = model.run(inputs.flip(0))
        rates = original.features.mean(0) * reversed_.features.mean(0)  # the star: element-wise product
        star = model.classifier(rates.unsqueeze(0)).squeeze(0)
        return {"logits": original.logits, "reversed_logits": reversed_.logits, "star_logits": star}

    def loss(self, outputs, target):
        z, z_rev, z_star = (outputs[k].float() for k in ("logits", "reversed_logits", "star_logits"))
        parts = {
            "ce": mean_ce(z, target),
            "ce_reversed": mean_ce(z_rev, target),
            "ce_star": mean_ce(z_star, target),
            "kd": self.kd(z_rev, z),  # the original pass is the detached teacher
        }
        loss = parts["ce"] + parts["ce_reversed"] + self.hparams["lam_star"] * parts["ce_star"] \
            + self.hparams["lam"] * parts["kd"]
        return loss, parts
