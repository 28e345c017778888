"""The ``length`` predictor: radiographs in, one dict per image out (fine length, bin, confidence, bin probabilities),
batched through a DataLoader (:class:`finescale.engine.predictor.BatchedImagePredictor`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from finescale.engine.predictor import BatchedImagePredictor
from finescale.pipelines.length.data import prepare_views


class LengthPredictor(BatchedImagePredictor):
    """Wraps a trained :class:`LengthTask`; ``predict(paths_or_arrays)`` -> the dicts the CLI prints."""

    def __init__(self, task: Any, *, batch_size: int = 32, num_workers: int = 0, device: str = "auto") -> None:
        super().__init__(task, batch_size=batch_size, num_workers=num_workers, device=device)
        self.centers = self.model.centers.tolist()

    def prepare(self, image: np.ndarray) -> dict[str, Any]:
        return prepare_views(image, self.cfg.model)

    def answer(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        return self.records(self.model.predict(batch))

    def records(self, pred: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Model outputs of a batch -> one plain dict per image."""
        probs_all = pred["probs"].float().cpu()
        out = []
        for i in range(probs_all.shape[0]):
            probs = probs_all[i].tolist()
            out.append(
                {
                    "length_bin_mm": round(float(pred["bin_mm"][i]), 3),
                    "length_mm": round(float(pred["fine_mm"][i]), 3),
                    "confidence": round(max(probs), 4),
                    "bin_probabilities": {f"{c:g}": round(p, 4) for c, p in zip(self.centers, probs, strict=True)},
                }
            )
        return out
