"""LightningModule of the ``length`` pipeline: the shared task plus its validation metrics."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric

from finescale.engine.task import TaskModule
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.model import MultiScaleLengthModel


class LengthTask(TaskModule):
    config_class = LengthConfig
    monitor = "val/length_mae_mm"
    monitor_mode = "min"

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.val_mae = MeanAbsoluteError()
        self.val_bin_acc = MeanMetric()
        self.val_within_1 = MeanMetric()

    def build_model(self, cfg: LengthConfig) -> nn.Module:
        return MultiScaleLengthModel.from_config(cfg.model)

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        true_bins = self.model.target_bins(batch["length_mm"])
        distance = (prediction["bin_index"] - true_bins).abs()
        self.val_mae.update(prediction["fine_mm"], batch["length_mm"])
        self.val_bin_acc.update((distance == 0).float())
        self.val_within_1.update((distance <= 1).float())

    def compute_val_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {
            "length_mae_mm": self.val_mae.compute(),
            "length_bin_accuracy": self.val_bin_acc.compute(),
            "length_within_1bin": self.val_within_1.compute(),
        }
        for metric in (self.val_mae, self.val_bin_acc, self.val_within_1):
            metric.reset()
        return metrics
