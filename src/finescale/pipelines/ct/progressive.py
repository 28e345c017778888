"""Progressive resizing (seed §6) as a Callback: the training slices grow through ``sizes`` in equal stages over the
epochs (quick: 64 -> 96, full: 192 -> 288); validation stays at ``data.image_size``."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback


def stage_size(sizes: Sequence[int], epoch: int, epochs: int) -> int:
    """The side of epoch ``epoch`` of ``epochs``: stage k covers epochs [k E / n, (k + 1) E / n)."""
    return int(sizes[min(len(sizes) - 1, epoch * len(sizes) // max(1, epochs))])


class ProgressiveResizing(Callback):
    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = list(sizes)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        size = stage_size(self.sizes, trainer.current_epoch, trainer.max_epochs or 1)
        # the views keep their side in shared memory, so persistent DataLoader workers see the change too
        trainer.datamodule.train_set.views.set_size(size)
        pl_module.log("train/image_size", float(size), on_step=False, on_epoch=True)
