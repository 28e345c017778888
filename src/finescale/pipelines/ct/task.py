"""LightningModule of the ``ct`` pipeline: the shared task and VLM3D's scores on the validation split
(``eval/multilabel.py``, binarised at the fixed 0.5). Batch mixing is a Callback (``mixing.BatchMixing``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from finescale.data.ct_io import LABELS
from finescale.engine.task import TaskModule
from finescale.eval.multilabel import vlm3d_scores
from finescale.eval.scores import CollectedScores
from finescale.pipelines.ct.config import CTConfig
from finescale.pipelines.ct.model import build_model

LOGGED = ("ct_macro_auroc", "ct_macro_f1", "ct_macro_precision", "ct_macro_recall", "ct_macro_accuracy")


def ct_scores(probs: Any, labels: Any) -> dict[str, Any]:
    """VLM3D's macro and per-label scores of (N, 18) probabilities against (N, 18) 0/1 labels."""
    return vlm3d_scores(probs, labels, LABELS, prefix="ct_")


def renamed_scores(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """:func:`ct_scores` of another set under its own prefix: ``ct_macro_auroc`` -> ``ct_external_macro_auroc``."""
    return {prefix + k.removeprefix("ct_"): v for k, v in metrics.items()}


class CTTask(TaskModule):
    config_class = CTConfig
    monitor = "val/ct_macro_auroc"
    monitor_mode = "max"

    def __init__(self, config: dict, *, load_weights: bool = True) -> None:
        super().__init__(config, load_weights=load_weights)
        self.val_scores = CollectedScores(("probs", "labels"), lambda a: ct_scores(a["probs"], a["labels"]))

    def build_model(self, cfg: CTConfig, *, load_weights: bool = True) -> nn.Module:
        return build_model(cfg, load_weights=load_weights)

    def update_val_metrics(self, batch: dict, prediction: dict[str, torch.Tensor]) -> None:
        self.val_scores.update(probs=prediction["probs"], labels=batch["labels"])

    def compute_val_metrics(self) -> dict[str, float]:
        metrics = self.val_scores.compute()
        self.val_scores.reset()
        return {k: v for k, v in metrics.items() if k in LOGGED}
