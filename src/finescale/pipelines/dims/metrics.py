"""Scores of the ``dims`` pipeline, in one place: what ``eval`` writes and what validation logs. Every key starts
with ``dims_``. Inputs are per-image tensors (or arrays) on any device; labels are class indices, -1 for a name
the vocabulary lacks (counted as a miss, never ignored)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy


def _tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(value)


def topk_accuracy(probs: Any, labels: Any, k: int = 1) -> float:
    """Share of images whose label is among the ``k`` most probable classes; an unknown label (-1) is a miss."""
    probs, labels = _tensor(probs).float(), _tensor(labels).long()
    if labels.numel() == 0:
        return float("nan")
    known = labels >= 0
    if not bool(known.any()):
        return 0.0
    hits = multiclass_accuracy(
        probs[known], labels[known], num_classes=probs.shape[1], top_k=min(k, probs.shape[1]), average="micro"
    )
    return float(hits) * float(known.float().mean())


def _mae(pred: Any, true: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
    err = (_tensor(pred).float() - _tensor(true).float()).abs()
    return err[mask] if mask is not None else err


def regression_metrics(arrays: dict[str, Any], unseen: Any | None = None) -> dict[str, Any]:
    """MAEs of length, diameter and their mean; the classifiers' accuracies; and with ``unseen`` (a boolean per
    image: its (model, length, diameter) combination is absent from training) the MAEs on those images, the
    generalisation the embeddings are meant to buy."""
    length = _mae(arrays["length_mm"], arrays["true_length_mm"])
    diameter = _mae(arrays["diameter_mm"], arrays["true_diameter_mm"])
    metrics: dict[str, Any] = {
        "dims_length_mae_mm": float(length.mean()),
        "dims_diameter_mae_mm": float(diameter.mean()),
        "dims_avg_mae_mm": float((length.mean() + diameter.mean()) / 2),
        "dims_company_accuracy": topk_accuracy(arrays["company_probs"], arrays["true_company"]),
        "dims_model_accuracy": topk_accuracy(arrays["model_probs"], arrays["true_model"]),
        "dims_model_top5_accuracy": topk_accuracy(arrays["model_probs"], arrays["true_model"], 5),
        "dims_n": int(length.numel()),
    }
    if unseen is not None:
        mask = _tensor(unseen).bool().to(length.device)
        some = bool(mask.any())
        metrics["dims_unseen_n"] = int(mask.sum())
        metrics["dims_unseen_length_mae_mm"] = float(length[mask].mean()) if some else None
        metrics["dims_unseen_diameter_mae_mm"] = float(diameter[mask].mean()) if some else None
        both = (length[mask].mean() + diameter[mask].mean()) / 2 if some else None
        metrics["dims_unseen_avg_mae_mm"] = float(both) if some else None
    return metrics


def classify_metrics(arrays: dict[str, Any]) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of a company or model classifier (``probs``, ``true``)."""
    return {
        "dims_top1_accuracy": topk_accuracy(arrays["probs"], arrays["true"], 1),
        "dims_top5_accuracy": topk_accuracy(arrays["probs"], arrays["true"], 5),
        "dims_n": int(_tensor(arrays["true"]).numel()),
    }
