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


class LossStability(Callback):
    """Logs ``train/loss_cv``: the coefficient of variation (std / mean) of the training loss over the last
    ``window`` steps, the seed's stability check (target below 3 %). Logged once the window is full."""

    def __init__(self, window: int = 50) -> None:
        self.window = window
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.losses = [*self.losses[-(self.window - 1) :], float(loss)]
        if len(self.losses) == self.window:
            mean = sum(self.losses) / self.window
            std = (sum((x - mean) ** 2 for x in self.losses) / (self.window - 1)) ** 0.5
            pl_module.log("train/loss_cv", std / abs(mean) if mean else float("nan"), on_step=True, on_epoch=False)


class PeakMemory(Callback):
    """Logs ``train/peak_memory_mb`` at each validation: the peak since training started (``engine/memory.py``: the
    CUDA allocator's on a GPU, the process's resident set elsewhere), what the seed's memory checks watch."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from finescale.engine.memory import peak_mb

        pl_module.log("train/peak_memory_mb", peak_mb(pl_module.device), on_step=False, on_epoch=True)
