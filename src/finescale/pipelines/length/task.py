"""LightningModule of the ``length`` pipeline: the shared task plus its validation scores (``length/metrics.py``)."""

from __future__ import annotations

import torch
from torch import nn

from finescale.engine.task import TaskModule
from finescale.eval.scores import CollectedScores
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.metrics import length_metrics
from finescale.pipelines.length.model import MultiScaleLengthModel

SCORED = ("fine_mm", "bin_index", "bin_mm", "expected_mm", "regression_mm", "true_mm", "true_bin")


def length_scores() -> CollectedScores:
    """Validation and evaluation alike: the model's predictions beside the true lengths, scored by length_metrics."""
    return CollectedScores(SCORED, length_metrics)


def scored_values(model: MultiScaleLengthModel, batch: dict, prediction: dict[str, torch.Tensor]) -> dict:
    """What :func:`length_scores` collects from one batch."""
    values = {k: v for k, v in prediction.items() if k in SCORED}
    return {**values, "true_mm": batch["length_mm"], "true_bin": model.target_bins(batch["length_mm"])}


class LengthTask(TaskModule):
    config_class = LengthConfig
    monitor = "val/length_mae_mm"
    monitor_mode = "min"

    def __init__(self, config: dict, *, load_weights: bool = True) -> None:
        super().__init__(config, load_weights=load_weights)
        self.val_scores = length_scores()

    def build_model(self, cfg: LengthConfig, *, load_weights: bool = True) -> nn.Module:
        return MultiScaleLengthModel.from_config(cfg.model, load_weights=load_weights)

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        self.val_scores.update(**scored_values(self.model, batch, prediction))

    def compute_val_metrics(self) -> dict[str, float]:
        metrics = self.val_scores.compute()
        self.val_scores.reset()
        return {k: v for k, v in metrics.items() if k != "length_n"}
