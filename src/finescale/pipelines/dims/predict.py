"""Prediction and evaluation for the ``dims`` pipeline (both stages)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader

from finescale.data.images import read_image
from finescale.eval.uncertainty import mc_dropout
from finescale.pipelines.dims.catalogue import snap_to_catalogue
from finescale.pipelines.dims.data import combination, make_dataset, prepare_image

WEIGHT_NAMES = {"dual": ("company", "model"), "triple": ("visual", "company", "model")}
WEIGHT_NAMES["hierarchical"] = WEIGHT_NAMES["triple"]


def _named(labels: Sequence[str], probs: torch.Tensor) -> dict[str, float]:
    return {name: round(float(p), 4) for name, p in zip(labels, probs.tolist(), strict=True)}


class DimsPredictor:
    """Wraps a trained dims task; ``predict(path_or_array)`` -> the dict the CLI prints as one JSON line.

    A regressor gives length and diameter (mm), company and model names with their probabilities, the attention
    weights, and with ``mc_samples`` > 1 the MC-dropout mean and standard deviation; a classifier gives its label.
    """

    def __init__(self, task: Any, *, mc_samples: int | None = None) -> None:
        self.cfg = task.cfg
        self.model = task.model.eval()
        self.mc_samples = self.cfg.regress.mc_samples if mc_samples is None else mc_samples

    def batch(self, image: str | Path | np.ndarray) -> dict[str, torch.Tensor]:
        array = read_image(image) if isinstance(image, str | Path) else np.asarray(image, dtype=np.float32)
        return {"image": prepare_image(array, self.cfg.model.image_size, self.cfg.model.view)[None]}

    def snap(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``arrays`` with ``length_mm``/``diameter_mm`` snapped to the catalogue sizes of the likely models (when
        the config's ``snap`` is on), the regressed values kept as ``raw_length_mm``/``raw_diameter_mm``; the same
        object when nothing is snapped."""
        if not self.cfg.regress.snap or not self.cfg.catalogue:
            return arrays
        length, diameter = snap_to_catalogue(
            arrays["length_mm"],
            arrays["diameter_mm"],
            arrays["model_probs"],
            self.cfg.data.models,
            self.cfg.catalogue,
            self.cfg.regress.snap_sigma,
        )
        raw = {"raw_length_mm": arrays["length_mm"], "raw_diameter_mm": arrays["diameter_mm"]}
        return {**arrays, **raw, "length_mm": length, "diameter_mm": diameter}

    def predict(self, image: str | Path | np.ndarray) -> dict[str, Any]:
        batch = self.batch(image)
        record = self.classify_records(batch)[0] if self.cfg.stage == "classify" else self.regress_records(batch)[0]
        return {"image": str(image), **record} if isinstance(image, str | Path) else record

    def predict_many(self, paths: Iterable[str | Path]) -> Iterable[dict[str, Any]]:
        for path in paths:
            yield self.predict(path)

    def classify_records(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        target = self.cfg.classify.target
        labels = self.cfg.labels(target)
        probs = self.model.predict(batch)["probs"]
        return [
            {
                target: labels[int(p.argmax())],
                "probability": round(float(p.max()), 4),
                "probabilities": _named(labels, p),
            }
            for p in probs
        ]

    def regress_records(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        samples = self.mc_samples
        if samples > 1:
            runs = mc_dropout(self.model, lambda: self.model.predict(batch), samples)
            pred = {k: v.mean(dim=0) for k, v in runs.items()}
            spread = {k: runs[k].std(dim=0) for k in ("length_mm", "diameter_mm")}
        else:
            pred, spread = self.model.predict(batch), None
        sizes = self.snap({k: pred[k].numpy() for k in ("length_mm", "diameter_mm", "model_probs")})
        companies, models = self.cfg.data.companies, self.cfg.data.models
        names = WEIGHT_NAMES[self.cfg.regress.attention_type]
        out = []
        for i in range(pred["length_mm"].shape[0]):
            cp, mp = pred["company_probs"][i], pred["model_probs"][i]
            out.append(
                {
                    "length_mm": round(float(sizes["length_mm"][i]), 3),
                    "diameter_mm": round(float(sizes["diameter_mm"][i]), 3),
                    **{k: round(float(sizes[k][i]), 3) for k in ("raw_length_mm", "raw_diameter_mm") if k in sizes},
                    "company": companies[int(cp.argmax())],
                    "company_probability": round(float(cp.max()), 4),
                    "model": models[int(mp.argmax())],
                    "model_probability": round(float(mp.max()), 4),
                    "company_probabilities": _named(companies, cp),
                    "model_probabilities": _named(models, mp),
                    "uncertainty": {
                        "length_mm_std": round(float(spread["length_mm"][i]), 4) if spread else None,
                        "diameter_mm_std": round(float(spread["diameter_mm"][i]), 4) if spread else None,
                        "mc_samples": samples if spread else 0,
                    },
                    "attention_weights": _named(names, pred["weights"][i]),
                }
            )
        return out


def collect_predictions(predictor: DimsPredictor, records: list[dict], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Deterministic predictions over validated records, with the true values beside them, as arrays."""
    dataset = make_dataset(predictor.cfg, records, train=False, cache=False)  # each image is read once
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in track(loader, description="evaluating", transient=True):
        pred = predictor.model.predict(batch)
        pred.pop("embedding", None)
        for key in ("length_mm", "diameter_mm", "company", "model"):
            pred[f"true_{key}"] = batch[key]
        for key, value in pred.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values).numpy() for key, values in parts.items()}


def accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    top = np.argsort(-probs, axis=1)[:, : min(k, probs.shape[1])]
    return float(np.mean((top == labels[:, None]).any(axis=1))) if labels.size else float("nan")


def regression_metrics(
    arrays: dict[str, np.ndarray], records: Sequence[dict], seen: set[tuple[str, float, float]] | None
) -> dict[str, Any]:
    """MAEs overall and, when the training combinations are known, on the test records whose (model, length,
    diameter) combination training never showed: the generalisation the embeddings are meant to buy."""
    length_err = np.abs(arrays["length_mm"] - arrays["true_length_mm"])
    diameter_err = np.abs(arrays["diameter_mm"] - arrays["true_diameter_mm"])
    metrics: dict[str, Any] = {
        "length_mae_mm": float(length_err.mean()),
        "diameter_mae_mm": float(diameter_err.mean()),
        "avg_mae_mm": float((length_err.mean() + diameter_err.mean()) / 2),
        "company_accuracy": accuracy(arrays["company_probs"], arrays["true_company"]),
        "model_accuracy": accuracy(arrays["model_probs"], arrays["true_model"]),
        "model_top5_accuracy": accuracy(arrays["model_probs"], arrays["true_model"], 5),
        "n": int(length_err.size),
    }
    if seen is not None:
        unseen = np.array([combination(r) not in seen for r in records], dtype=bool)
        metrics["unseen_n"] = int(unseen.sum())
        metrics["unseen_length_mae_mm"] = float(length_err[unseen].mean()) if unseen.any() else None
        metrics["unseen_diameter_mae_mm"] = float(diameter_err[unseen].mean()) if unseen.any() else None
        both = (length_err[unseen].mean() + diameter_err[unseen].mean()) / 2 if unseen.any() else None
        metrics["unseen_avg_mae_mm"] = float(both) if both is not None else None
    return metrics


def classify_metrics(arrays: dict[str, np.ndarray], target: str) -> dict[str, Any]:
    labels = arrays[f"true_{target}"]
    return {
        "top1_accuracy": accuracy(arrays["probs"], labels, 1),
        "top5_accuracy": accuracy(arrays["probs"], labels, 5),
        "n": int(labels.size),
    }
