"""LightningModule of the ``puzzle`` pipeline: the shared task, placement metrics on the validation windows, and the
correlation maps of the first validation batch sent to TensorBoard every epoch (what the seed asks for debugging)."""

from __future__ import annotations

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanMetric

from finescale.engine.task import TaskModule
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.pipelines.puzzle.metrics import IOU_THRESHOLD, paired_iou
from finescale.pipelines.puzzle.model import PuzzleLocator

MAPS_LOGGED = 4  # pieces of the first validation batch whose correlation maps go to TensorBoard


class PuzzleTask(TaskModule):
    config_class = PuzzleConfig
    monitor = "val/puzzle_both_accuracy"
    monitor_mode = "max"

    def __init__(self, config: dict, *, load_weights: bool = True) -> None:
        super().__init__(config, load_weights=load_weights)
        self.val_position = MeanMetric()
        self.val_rotation = MeanMetric()
        self.val_both = MeanMetric()
        self._first_batch: dict | None = None

    def build_model(self, cfg: PuzzleConfig, *, load_weights: bool = True) -> nn.Module:
        # channels-last weights: the convolutions then run in that layout (about a fifth less CPU time per training
        # step in the quick preset, measured with benchmarks/puzzle_epoch.py; the predictor does the same)
        return PuzzleLocator.from_config(cfg.model, load_weights=load_weights).to(memory_format=torch.channels_last)

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        placed = paired_iou(prediction["box"], batch["box"]) >= IOU_THRESHOLD
        turned = prediction["rotation"] == batch["rotation"]  # both on the model's device
        self.val_position.update(placed.float())
        self.val_rotation.update(turned.float())
        self.val_both.update((placed & turned).float())
        if self._first_batch is None:
            self._first_batch = {k: v[:MAPS_LOGGED] for k, v in batch.items()}

    def compute_val_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {
            "puzzle_position_accuracy": self.val_position.compute(),
            "puzzle_rotation_accuracy": self.val_rotation.compute(),
            "puzzle_both_accuracy": self.val_both.compute(),
        }
        for metric in (self.val_position, self.val_rotation, self.val_both):
            metric.reset()
        self._log_correlation_maps()
        return metrics

    def _log_correlation_maps(self) -> None:
        batch, self._first_batch = self._first_batch, None
        loggers = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        if batch is None or not loggers or self.trainer.sanity_checking:
            return
        probs = self.model.correlation_maps(batch)["probs"]  # (B, K, H, W)
        for i in range(probs.shape[0]):
            k = int(batch["rotation"][i]) if probs.shape[1] == 4 else 0
            heat = probs[i, k]
            heat = (heat / heat.max().clamp_min(1e-12))[None]
            for logger in loggers:
                logger.experiment.add_image(f"correlation/piece{i}", heat, self.current_epoch)
