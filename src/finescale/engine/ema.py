"""The exponential-moving-average teacher of Mean Teacher and Soft Teacher, as a Lightning callback.

The task owns ``self.teacher``, a frozen deep copy of ``self.model`` (the student): being a submodule, its weights
travel in every checkpoint, so ``--resume`` restores the teacher exactly. :class:`EMATeacher` moves it towards the
student after every optimizer step:

- **parameters**: ``t <- m * t + (1 - m) * s`` (``m`` = momentum, 0.999 in Soft Teacher), in place, without autograd;
  with ``ramp`` (Mean Teacher's schedule) step ``n`` uses ``min(m, 1 - 1 / (n + 1))``: a teacher started from random
  weights would otherwise keep 0.999^100 = 90 % of them after 100 steps, and pseudo-label with noise. With the ramp it
  is the plain average of the students so far until ``1 - 1 / (n + 1)`` reaches ``m`` (step 999 for 0.999);
- **buffers** (BatchNorm running statistics and counters): copied from the student. Averaging running statistics
  would average averages that are themselves already moving, and the teacher never computes its own (it runs in eval
  mode), so the student's current ones are the best estimate for the teacher's nearly equal weights. (Soft Teacher's
  mmdetection hook averages the parameters only and leaves the buffers alone; its pretrained backbone's batch norms
  are frozen, so its buffers never change. Trained from scratch here, the student's statistics do move.)
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from finescale.errors import FinescaleError


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: every floating-point teacher parameter becomes ``momentum * t + (1 - momentum) * s``; every buffer
    is copied from the student. Parameters and buffers are paired by name, so both modules must have the same
    structure (the teacher a deep copy of the student). ``momentum`` 0 copies the student; 1 leaves the teacher."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    student_params = dict(student.named_parameters())
    student_buffers = dict(student.named_buffers())
    teacher_params = dict(teacher.named_parameters())
    teacher_buffers = dict(teacher.named_buffers())
    if teacher_params.keys() != student_params.keys() or teacher_buffers.keys() != student_buffers.keys():
        raise FinescaleError("the EMA teacher and the student differ in structure; build the teacher as a deep copy")
    for name, t in teacher_params.items():
        s = student_params[name].detach()
        if t.is_floating_point():
            # lerp: t + (1 - m) * (s - t) == m * t + (1 - m) * s, one kernel and no temporary
            t.lerp_(s.to(t.dtype), 1.0 - momentum)
        else:
            t.copy_(s)
    for name, t in teacher_buffers.items():
        t.copy_(student_buffers[name].detach())


class EMATeacher(Callback):
    """After every optimizer step, move ``pl_module.teacher`` towards ``pl_module.model`` (:func:`ema_update_`).

    The teacher is frozen (``requires_grad`` off) at the start of fitting, so no optimizer ever updates it. With
    gradient accumulation the update waits for the step: it happens only when ``trainer.global_step`` has advanced.
    The callback keeps no state of its own: the teacher's weights are the state, and they live in the checkpoint.
    """

    def __init__(self, momentum: float = 0.999, ramp: bool = True) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.ramp = bool(ramp)
        self._last_step: int | None = None

    def momentum_at(self, step: int) -> float:
        """The momentum of the update after optimizer step ``step`` (1 = the first step)."""
        return min(self.momentum, 1.0 - 1.0 / (step + 1)) if self.ramp else self.momentum

    @staticmethod
    def _pair(pl_module: L.LightningModule) -> tuple[nn.Module, nn.Module]:
        teacher, student = getattr(pl_module, "teacher", None), getattr(pl_module, "model", None)
        if not isinstance(teacher, nn.Module) or not isinstance(student, nn.Module):
            raise FinescaleError("EMATeacher needs a task with a `model` (student) and a `teacher` (its deep copy)")
        return teacher, student

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        teacher, _ = self._pair(pl_module)
        teacher.requires_grad_(False)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # a resumed run counts on from its checkpoint's step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._last_step:
            return  # an accumulation batch: the optimizer has not stepped yet
        self._last_step = trainer.global_step
        teacher, student = self._pair(pl_module)
        momentum = self.momentum_at(trainer.global_step)
        ema_update_(teacher, student, momentum)
        pl_module.log("train/ema_momentum", momentum, on_step=True, on_epoch=False)
