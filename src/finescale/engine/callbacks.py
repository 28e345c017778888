"""Callbacks shared by every pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class SaveLastOnException(Callback):
    """Write ``last.ckpt`` when training stops on an exception or Ctrl-C, so ``--resume`` loses nothing.

    (Lightning's OnExceptionCheckpoint deletes its file at teardown and changes what ``fit`` resumes from, so it
    cannot own ``last.ckpt``.)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0:
            trainer.save_checkpoint(self.path, weights_only=False)  # what --resume needs: loops, callbacks


class TrainingClock(Callback):
    """Wall-clock seconds spent training, kept in every checkpoint, so that a run resumed after a crash reports
    its whole training time rather than only the resumed part."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of the earlier attempts, restored from the checkpoint
        self._start: float | None = None

    @property
    def seconds(self) -> float:
        return self.before + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
