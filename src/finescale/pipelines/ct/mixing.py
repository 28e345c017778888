"""Batch mixing of the ``ct`` training batches (seed §3): the mixers live in ``data/``; this picks the batch's
input (``slices`` or ``volume``) and its body mask, and returns the batch with mixed inputs and soft targets."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from finescale.data.mixing import ct_aware_mix, cutmix, mixup


def mix_batch(batch: dict, *, kind: str, alpha: float, generator: torch.Generator) -> dict:
    """``kind``: mixup | cutmix | ct_aware. Slices (B, S, 3, H, W) are mixed as B images of S x 3 channels, so
    every slice of a volume gets the same box and weight (the labels are per volume)."""
    key = "slices" if "slices" in batch else "volume"
    x, y = batch[key], batch["labels"]
    flat = x.flatten(1, 2) if x.ndim == 5 and key == "slices" else x
    if kind == "mixup":
        mixed, targets = mixup(flat, y, alpha=alpha, generator=generator)
    elif kind == "cutmix":
        mixed, targets = cutmix(flat, y, alpha=alpha, generator=generator)
    else:
        body = batch["body"]
        masks = body.flatten(1, 2).amax(dim=1, keepdim=True) if body.ndim == 5 and key == "slices" else body
        mixed, targets = ct_aware_mix(flat, y, masks, alpha=alpha, generator=generator)
    return {**batch, key: mixed.view_as(x), "labels": targets}


class BatchMixing(Callback):
    """Mixes every training batch in place before the step (validation and prediction never see mixed inputs);
    its own generator, seeded from the run's seed, draws the partners, weights and boxes."""

    def __init__(self, kind: str, alpha: float, seed: int) -> None:
        self.kind, self.alpha = kind, alpha
        self.generator = torch.Generator().manual_seed(seed)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        batch.update(mix_batch(batch, kind=self.kind, alpha=self.alpha, generator=self.generator))
