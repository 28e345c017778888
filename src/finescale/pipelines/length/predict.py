"""Prediction and evaluation for the ``length`` pipeline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader

from finescale.data.images import read_image
from finescale.pipelines.length.data import LengthDataset, load_records, prepare_views


class LengthPredictor:
    """Wraps a trained :class:`LengthTask`; ``predict(path_or_array)`` -> the dict the CLI prints."""

    def __init__(self, task: Any) -> None:
        self.cfg = task.cfg
        self.model = task.model.eval()
        self.centers = self.model.centers.tolist()

    def predict(self, image: str | Path | np.ndarray) -> dict[str, Any]:
        array = read_image(image) if isinstance(image, str | Path) else np.asarray(image, dtype=np.float32)
        views = prepare_views(array, self.cfg.model)
        batch = {k: [t[None] for t in v] if isinstance(v, list) else v[None] for k, v in views.items()}
        record = self._records(self.model.predict(batch))[0]
        if isinstance(image, str | Path):
            record = {"image": str(image), **record}
        return record

    def predict_many(self, paths: Iterable[str | Path]) -> Iterator[dict[str, Any]]:
        for path in paths:
            yield self.predict(path)

    def _records(self, pred: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        out = []
        for i in range(pred["probs"].shape[0]):
            probs = pred["probs"][i].tolist()
            out.append(
                {
                    "length_bin_mm": round(float(pred["bin_mm"][i]), 3),
                    "length_mm": round(float(pred["fine_mm"][i]), 3),
                    "confidence": round(max(probs), 4),
                    "bin_probabilities": {f"{c:g}": round(p, 4) for c, p in zip(self.centers, probs, strict=True)},
                }
            )
        return out


def collect_predictions(predictor: LengthPredictor, records: list[dict], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Run the model over validated records: arrays of true length, fine/bin/expected predictions, bin indices."""
    dataset = LengthDataset(records, predictor.cfg.model, augment=False, cache=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in track(loader, description="evaluating", transient=True):
        pred = predictor.model.predict(batch)
        pred["true_mm"] = batch["length_mm"]
        pred["true_bin"] = predictor.model.target_bins(batch["length_mm"])
        for key, value in pred.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values).numpy() for key, values in parts.items()}


def length_metrics(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    distance = np.abs(arrays["bin_index"] - arrays["true_bin"])
    metrics = {
        "length_mae_mm": float(np.mean(np.abs(arrays["fine_mm"] - arrays["true_mm"]))),
        "length_bin_accuracy": float(np.mean(distance == 0)),
        "length_within_1bin": float(np.mean(distance <= 1)),
        "length_mae_mm_bin": float(np.mean(np.abs(arrays["bin_mm"] - arrays["true_mm"]))),
        "length_mae_mm_expectation": float(np.mean(np.abs(arrays["expected_mm"] - arrays["true_mm"]))),
        "n": int(arrays["true_mm"].shape[0]),
    }
    if "regression_mm" in arrays:
        metrics["length_mae_mm_regression"] = float(np.mean(np.abs(arrays["regression_mm"] - arrays["true_mm"])))
    return metrics


def evaluate_records(predictor: LengthPredictor, manifest_path: str | Path) -> tuple[dict[str, Any], dict]:
    manifest = load_records(manifest_path)
    arrays = collect_predictions(predictor, manifest.records, batch_size=predictor.cfg.trainer.batch_size)
    metrics = length_metrics(arrays)
    metrics.update({f"eval_skipped_{k}": v for k, v in manifest.skipped.items()})
    return metrics, arrays
