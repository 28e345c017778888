"""Scores of the ``dims`` pipeline, in one place: what ``eval`` writes and what validation logs. Every key starts
with ``dims_``. Inputs are per-image tensors (or arrays) on any device; labels are class indices, -1 for a name
the vocabulary lacks (counted as a miss, never ignored). :func:`per_image_results` and :func:`per_image_classes`
give the per-image rows ``eval`` writes beside its metrics (``predictions_<manifest>.json``)."""

from __future__ import annotations

from collections.abc import Sequence
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


def _correct(predicted: str, truth: Any) -> bool | None:
    """Whether a classifier named the true label; None where the record gives no label (a name outside the
    vocabulary is a miss, as in :func:`topk_accuracy`)."""
    return None if not truth else predicted == truth


def per_image_results(
    records: Sequence[dict],
    arrays: dict[str, Any],
    *,
    companies: Sequence[str],
    models: Sequence[str],
    unseen: Any | None = None,
) -> list[dict[str, Any]]:
    """One dict per image of a regressor's evaluation, in record order: the answered sizes (snapped when ``arrays``
    holds ``raw_*``) beside the true ones and their absolute errors, both classifiers' top-1 names with the truth and
    ``model_correct`` / ``company_classifier_correct`` (None where the record names none), and ``unseen`` when given.
    The share of ``model_correct`` that is True over all images is ``dims_model_accuracy``. ``arrays``: (N,) sizes,
    (N, K) ``company_probs`` / ``model_probs`` (see :func:`regression_metrics`)."""
    arrays = {k: torch.as_tensor(v).cpu() for k, v in arrays.items()}
    company_index, model_index = arrays["company_probs"].argmax(dim=1), arrays["model_probs"].argmax(dim=1)
    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"image": record.get("image")}
        for size in ("length_mm", "diameter_mm"):
            answer, truth = float(arrays[size][i]), float(arrays[f"true_{size}"][i])
            row[size] = round(answer, 3)
            if f"raw_{size}" in arrays:
                row[f"raw_{size}"] = round(float(arrays[f"raw_{size}"][i]), 3)
            row[f"true_{size}"] = truth
            row[f"{size.removesuffix('_mm')}_error_mm"] = round(abs(answer - truth), 3)
        model = models[int(model_index[i])]
        company = companies[int(company_index[i])]
        row.update(
            {
                "model": model,
                "model_probability": round(float(arrays["model_probs"][i].max()), 4),
                "true_model": record.get("model") or None,
                "model_correct": _correct(model, record.get("model")),
                "company_classifier": company,
                "true_company": record.get("company") or None,
                "company_classifier_correct": _correct(company, record.get("company")),
            }
        )
        if unseen is not None:
            row["unseen"] = bool(unseen[i])
        rows.append(row)
    return rows


def per_image_classes(records: Sequence[dict], probs: Any, *, target: str, labels: Sequence[str]) -> list[dict]:
    """One dict per image of a classifier's evaluation: its top-1 ``target`` name and probability, the truth and
    ``correct`` (None where the record names none). ``probs`` (N, K) over ``labels``."""
    probs = torch.as_tensor(probs).float().cpu()
    rows = []
    for record, p in zip(records, probs, strict=True):
        name = labels[int(p.argmax())]
        truth = record.get(target) or None
        rows.append(
            {
                "image": record.get("image"),
                target: name,
                "probability": round(float(p.max()), 4),
                f"true_{target}": truth,
                "correct": _correct(name, truth),
            }
        )
    return rows
