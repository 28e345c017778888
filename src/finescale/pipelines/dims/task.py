"""LightningModules of the ``dims`` pipeline: one per stage, both on the shared :class:`TaskModule`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric

from finescale.engine.optim import ParamGroup
from finescale.engine.task import TaskModule
from finescale.pipelines.dims.config import DimsConfig
from finescale.pipelines.dims.model import DimsRegressor, ImplantClassifier


def topk_hits(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K), (B,) -> (B,) float: 1 where the label is among the k most probable classes (unknown labels miss)."""
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float()


class DimsClassifierTask(TaskModule):
    """A company or model classifier; best.ckpt by top-1 accuracy."""

    config_class = DimsConfig
    monitor = "val/top1_accuracy"
    monitor_mode = "max"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.val_top1 = MeanMetric()
        self.val_top5 = MeanMetric()

    def build_model(self, cfg: DimsConfig) -> nn.Module:
        target = cfg.classify.target
        labels = cfg.labels(target)
        if not labels:
            raise ValueError(f"config holds no {target} vocabulary (data.{target}s)")
        return ImplantClassifier.from_config(
            cfg.model, n_classes=len(labels), target=target, label_smoothing=cfg.classify.label_smoothing
        )

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        labels = batch[self.cfg.classify.target]
        self.val_top1.update(topk_hits(prediction["probs"], labels, 1))
        self.val_top5.update(topk_hits(prediction["probs"], labels, 5))

    def compute_val_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {"top1_accuracy": self.val_top1.compute(), "top5_accuracy": self.val_top5.compute()}
        self.val_top1.reset()
        self.val_top5.reset()
        return metrics


class DimsRegressionTask(TaskModule):
    """Length and diameter regressor; best.ckpt by the mean of the two MAEs. Embedding models train at
    ``embedding_lr_mult`` times the base learning rate."""

    config_class = DimsConfig
    monitor = "val/avg_mae_mm"
    monitor_mode = "min"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.val_length = MeanAbsoluteError()
        self.val_diameter = MeanAbsoluteError()

    def build_model(self, cfg: DimsConfig) -> nn.Module:
        return DimsRegressor.from_config(cfg)

    def param_groups(self) -> list[ParamGroup]:
        embedders = nn.ModuleList([self.model.company_embedder, self.model.model_embedder])
        # build_param_groups skips parameters already placed, so "head" gets everything but the embedders
        return [ParamGroup("embedders", embedders, self.cfg.regress.embedding_lr_mult), ParamGroup("head", self.model)]

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        self.val_length.update(prediction["length_mm"], batch["length_mm"])
        self.val_diameter.update(prediction["diameter_mm"], batch["diameter_mm"])

    def compute_val_metrics(self) -> dict[str, torch.Tensor]:
        length, diameter = self.val_length.compute(), self.val_diameter.compute()
        self.val_length.reset()
        self.val_diameter.reset()
        return {"length_mae_mm": length, "diameter_mae_mm": diameter, "avg_mae_mm": (length + diameter) / 2}


def dims_task(config: dict[str, Any]) -> TaskModule:
    """The task of a config's stage: what the checkpoint loader calls to rebuild a dims run of either kind."""
    stage = config.get("stage", "regress")
    return (DimsClassifierTask if stage == "classify" else DimsRegressionTask)(config)
