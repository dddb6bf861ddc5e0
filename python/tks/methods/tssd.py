"""``tssd``: temporal-spatial self-distillation (TSSD), our formulation of the fourth abstract in
``shared/papers/related_abstracts.txt`` (its authors published no code; every choice below is ours).

- Student: the model run for T steps (what is deployed). Temporal teacher: the same weights run
  for ``Tt > T`` steps (``--teacher-T``, default 2T). Static images: the encoder repeats the frame
  Tt times. Event data: the dataset is binned into Tt frames for the teacher, and the student sees
  the same events in T frames, each the sum of ``Tt / T`` adjacent teacher frames (so Tt must be a
  multiple of T on event data).
- Spatial teacher: the final output guides a weak classifier on the output of stage
  ``--weak-stage`` (1-based; default the middle stage, ``(n + 1) // 2`` of the model's n stages):
  a global average pool over space, then a linear layer, per step.
- Loss: ``CE(mean_t z_s, y) + CE(mean_t z_t, y) + alpha * kd(z_s, z_t) + beta * kd(w, z_s)`` with
  ``kd = tks_kernels.kd_loss`` (tau^2 KL of the time-averaged softmaxes at temperature
  ``--temperature``), both teachers detached in their KD terms (the teacher's own CE trains the
  shared weights); ``--alpha 1 --beta 1 --temperature 2`` (our choice: the abstract gives none).
- Inference: T steps, no weak classifier, nothing extra (the weak classifier is a training-only
  module, kept in the checkpoint under "method", never in the model).
"""
from __future__ import annotations

import torch
from torch import nn

from ..data import sum_adjacent_bins
from ..loss import KDLoss
from .base import Method, MethodOptionError, mean_ce


class WeakClassifier(nn.Module):
    """Global average pool over space, then a linear layer, per step: ``[T, B, C, *] -> [T, B, classes]``."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        pooled = x_seq.flatten(3).mean(3) if x_seq.dim() > 3 else x_seq
        return self.fc(pooled)


class TSSD(Method):
    name = "tssd"
    summary = ("TSSD: CE(student) + CE(teacher at --teacher-T steps) + alpha kd(student, teacher) "
               "+ beta kd(weak classifier at --weak-stage, student)")
    options = ("teacher_T", "weak_stage", "alpha", "beta", "temperature")

    @staticmethod
    def defaults(info, T):
        return {"teacher_T": 2 * T, "weak_stage": None, "alpha": 1.0, "beta": 1.0, "temperature": 2.0}

    @classmethod
    def check(cls, hparams, *, T, static):
        Tt = hparams["teacher_T"]
        if Tt <= T:
            raise MethodOptionError(f"--teacher-T {Tt}: the temporal teacher runs more steps than the student: "
                                    f"pass more than --T {T} (default 2T = {2 * T})")
        if not static and Tt % T:
            raise MethodOptionError(f"--teacher-T {Tt} is not a multiple of --T {T}: on event data the student's "
                                    f"frames are sums of adjacent teacher frames; pass a multiple of {T} "
                                    f"(default 2T = {2 * T})")
        for flag, key in (("--alpha", "alpha"), ("--beta", "beta")):
            if not hparams[key] >= 0:
                raise MethodOptionError(f"{flag} {hparams[key]}: a loss weight must be >= 0 (default 1)")
        if not hparams["temperature"] > 0:
            raise MethodOptionError(f"--temperature {hparams['temperature']}: must be > 0 (TSSD's default 2)")

    def data_T(self):
        return self.T if self.static else self.hparams["teacher_T"]

    def extra_modules(self, model, info):
        n = len(model.stages)
        if n < 2:
            raise MethodOptionError(f"tssd needs a model with at least 2 stages for its weak classifier; "
                                    f"{type(model).__name__} has {n}")
        stage = self.hparams["weak_stage"]
        if stage is None:
            stage = self.hparams["weak_stage"] = (n + 1) // 2  # recorded in the run's config
        if not 1 <= stage <= n - 1:
            raise MethodOptionError(f"--weak-stage {stage}: {type(model).__name__} has {n} stages; the weak "
                                    f"classifier taps stage 1 .. {n - 1} (the last stage is the final output)")
        return {"weak": WeakClassifier(model.stage_channels[stage - 1], info.num_classes)}

    def __init__(self, hparams, **kw):
        super().__init__(hparams, **kw)
        self.kd = KDLoss(temperature=hparams["temperature"])

    def eval_input(self, x):
        # event batches hold the teacher's Tt frames [B, Tt, ...]: the student's T frames are their sums
        return x if self.static else sum_adjacent_bins(x, self.T, dim=1)

    def forward(self, net, x):
        T, Tt = self.T, self.hparams["teacher_T"]
        if self.static:
            teacher_in, student_in = (x, Tt), (x, T)
        else:
            teacher_seq = x.transpose(0, 1)  # [Tt, B, ...]
            teacher_in, student_in = (teacher_seq, None), (sum_adjacent_bins(teacher_seq, T, dim=0), None)
        tap = self.hparams["weak_stage"] - 1
        student = net.model.run(*student_in, taps=(tap,))
        return {
            "logits": student.logits,
            "teacher_logits": net.model(*teacher_in),
            "weak_logits": net.extras["weak"](student.taps[tap]),
        }

    def loss(self, outputs, target):
        z_s, z_t, w = (outputs[k].float() for k in ("logits", "teacher_logits", "weak_logits"))
        parts = {
            "ce": mean_ce(z_s, target),
            "ce_teacher": mean_ce(z_t, target),
            "kd_temporal": self.kd(z_s, z_t),  # the teacher is detached in kd
            "kd_spatial": self.kd(w, z_s),
        }
        loss = parts["ce"] + parts["ce_teacher"] + self.hparams["alpha"] * parts["kd_temporal"] \
            + self.hparams["beta"] * parts["kd_spatial"]
        return loss, parts


__all__ = ["TSSD", "WeakClassifier"]
