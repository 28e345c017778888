"""A training-free reference for the bench: how far does the implant's size in pixels get you?

The implant's axis is found in each image exactly as the crop branch does; a least-squares fit maps its pixel
length and width (and their ratio) to millimetres on the training split. Pixel spacing varies between
radiographs, so this baseline cannot read length precisely; the gap to it is what the fine-detail cues earn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from finescale.data.images import read_image
from finescale.data.regions import find_bright_axis
from finescale.pipelines.length.config import LengthModelConfig
from finescale.pipelines.length.data import load_records
from finescale.pipelines.length.model import bin_centers


def pixel_features(records: list[dict]) -> np.ndarray:
    rows = []
    for record in track(records, description="measuring implants", transient=True):
        image = read_image(record["image"])
        axis = find_bright_axis(image)
        length, width = axis.length / image.shape[0], axis.width / image.shape[0]
        rows.append([1.0, length, width, length / max(width, 1e-6)])
    return np.asarray(rows)


def pixel_extent_baseline(
    train_json: str | Path, test_json: str | Path, cfg: Any = None
) -> dict[str, dict[str, float]]:
    """Least squares of the length on the implant's pixel extent and width; ``cfg`` (the bench's) is unused."""
    train, test = load_records(train_json).records, load_records(test_json).records
    y_train = np.array([r["length_mm"] for r in train])
    y_test = np.array([r["length_mm"] for r in test])
    coef, *_ = np.linalg.lstsq(pixel_features(train), y_train, rcond=None)
    pred = pixel_features(test) @ coef
    bins = bin_centers(LengthModelConfig()).numpy()
    pred_bin = np.abs(pred[:, None] - bins).argmin(1)
    true_bin = np.abs(y_test[:, None] - bins).argmin(1)
    return {
        "pixel_extent_lstsq": {
            "length_mae_mm": float(np.mean(np.abs(pred - y_test))),
            "length_bin_accuracy": float(np.mean(pred_bin == true_bin)),
            "length_within_1bin": float(np.mean(np.abs(pred_bin - true_bin) <= 1)),
            "train_seconds": 0.0,
        }
    }
