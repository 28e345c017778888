"""LightningModules of the ``dims`` pipeline: one per stage, both on the shared :class:`TaskModule`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from finescale.engine.optim import ParamGroup
from finescale.engine.task import TaskModule
from finescale.eval.scores import CollectedScores
from finescale.pipelines.dims.config import DimsConfig
from finescale.pipelines.dims.metrics import classify_metrics, regression_metrics
from finescale.pipelines.dims.model import DimsRegressor, ImplantClassifier

CLASSIFY_SCORED = ("probs", "true")
REGRESS_SCORED = (
    "length_mm",
    "diameter_mm",
    "true_length_mm",
    "true_diameter_mm",
    "company_probs",
    "model_probs",
    "true_company",
    "true_model",
)


def classify_scores() -> CollectedScores:
    return CollectedScores(CLASSIFY_SCORED, classify_metrics)


def regress_scores() -> CollectedScores:
    return CollectedScores(REGRESS_SCORED, regression_metrics)


def regress_values(batch: dict, prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What :func:`regress_scores` collects from one batch."""
    values = {k: prediction[k] for k in ("length_mm", "diameter_mm", "company_probs", "model_probs")}
    return {**values, **{f"true_{k}": batch[k] for k in ("length_mm", "diameter_mm", "company", "model")}}


class DimsClassifierTask(TaskModule):
    """A company or model classifier; best.ckpt by top-1 accuracy."""

    config_class = DimsConfig
    monitor = "val/dims_top1_accuracy"
    monitor_mode = "max"

    def __init__(self, config: dict[str, Any], *, load_weights: bool = True) -> None:
        super().__init__(config, load_weights=load_weights)
        self.val_scores = classify_scores()

    def build_model(self, cfg: DimsConfig, *, load_weights: bool = True) -> nn.Module:
        target = cfg.classify.target
        labels = cfg.labels(target)
        if not labels:
            raise ValueError(f"config holds no {target} vocabulary (data.{target}s)")
        return ImplantClassifier.from_config(
            cfg.model,
            n_classes=len(labels),
            target=target,
            label_smoothing=cfg.classify.label_smoothing,
            load=load_weights,
        )

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        self.val_scores.update(probs=prediction["probs"], true=batch[self.cfg.classify.target])

    def compute_val_metrics(self) -> dict[str, float]:
        metrics = self.val_scores.compute()
        self.val_scores.reset()
        return {k: v for k, v in metrics.items() if k != "dims_n"}


class DimsRegressionTask(TaskModule):
    """Length and diameter regressor; best.ckpt by the mean of the two MAEs. Embedding models train at
    ``embedding_lr_mult`` times the base learning rate."""

    config_class = DimsConfig
    monitor = "val/dims_avg_mae_mm"
    monitor_mode = "min"

    def __init__(self, config: dict[str, Any], *, load_weights: bool = True) -> None:
        super().__init__(config, load_weights=load_weights)
        self.val_scores = regress_scores()

    def build_model(self, cfg: DimsConfig, *, load_weights: bool = True) -> nn.Module:
        return DimsRegressor.from_config(cfg, load_weights=load_weights)

    def param_groups(self) -> list[ParamGroup]:
        embedders = nn.ModuleList([self.model.company_embedder, self.model.model_embedder])
        # build_param_groups skips parameters already placed, so "head" gets everything but the embedders
        return [ParamGroup("embedders", embedders, self.cfg.regress.embedding_lr_mult), ParamGroup("head", self.model)]

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        self.val_scores.update(**regress_values(batch, prediction))

    def compute_val_metrics(self) -> dict[str, float]:
        metrics = self.val_scores.compute()
        self.val_scores.reset()
        return {k: v for k, v in metrics.items() if k != "dims_n"}


def dims_task(config: dict[str, Any], *, load_weights: bool = True) -> TaskModule:
    """The task of a config's stage: what the checkpoint loader calls to rebuild a dims run of either kind."""
    stage = config.get("stage", "regress")
    return (DimsClassifierTask if stage == "classify" else DimsRegressionTask)(config, load_weights=load_weights)
