"""Callbacks shared by every pipeline."""

from __future__ import annotations

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
            trainer.save_checkpoint(self.path)
