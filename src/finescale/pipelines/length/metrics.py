"""Scores of the ``length`` pipeline, in one place: what ``eval`` writes and what validation logs.

Inputs are tensors on any device (kept there, float32): the fine length, the bin index, and the true length and
bin of each image.
"""

from __future__ import annotations

import torch


def length_metrics(arrays: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """``length_mae_mm`` (the fine length), ``length_bin_accuracy``, ``length_within_1bin``, the MAE of each way
    of reading the length (``_bin``, ``_expectation``, ``_regression``) and ``length_n``."""
    true = arrays["true_mm"].float()
    distance = (arrays["bin_index"] - arrays["true_bin"]).abs()

    def mae(key: str) -> float:
        return float((arrays[key].float() - true).abs().mean())

    metrics: dict[str, float | int] = {
        "length_mae_mm": mae("fine_mm"),
        "length_bin_accuracy": float((distance == 0).float().mean()),
        "length_within_1bin": float((distance <= 1).float().mean()),
        "length_mae_mm_bin": mae("bin_mm"),
        "length_mae_mm_expectation": mae("expected_mm"),
        "length_n": int(true.numel()),
    }
    if "regression_mm" in arrays:
        metrics["length_mae_mm_regression"] = mae("regression_mm")
    return metrics
