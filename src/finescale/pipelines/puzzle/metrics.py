"""Scores of the ``puzzle`` pipeline, in one place: a piece is placed when its box overlaps the true one with
IoU >= 0.5, turned right when the quarter turn matches, and solved when both hold; plus time per piece and, for the
hybrid, what the model alone would have answered. Every key starts with ``puzzle_``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

IOU_THRESHOLD = 0.5


def paired_iou(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of each predicted box with its own true box: (N, 4) xyxy, (N, 4) -> (N,), float32 on ``pred``'s device
    (no float64: Apple's MPS lacks it; float32 is exact enough for boxes of pixel size)."""
    pred = torch.as_tensor(pred, dtype=torch.float32)
    true = torch.as_tensor(true, dtype=torch.float32, device=pred.device)
    if pred.numel() == 0:
        return pred.new_zeros(0)
    return box_iou(pred, true).diagonal()


def placement_metrics(
    pred_boxes: Sequence, true_boxes: Sequence, pred_rotations: Sequence[int], true_rotations: Sequence[int]
) -> dict[str, float]:
    """``puzzle_position_accuracy``, ``puzzle_rotation_accuracy``, ``puzzle_both_accuracy``, ``puzzle_mean_iou``."""
    iou = paired_iou(np.asarray(pred_boxes, dtype=np.float32).reshape(-1, 4), np.asarray(true_boxes).reshape(-1, 4))
    placed = iou >= IOU_THRESHOLD
    turned = torch.as_tensor(np.asarray(pred_rotations) == np.asarray(true_rotations))
    n = max(1, len(iou))
    return {
        "puzzle_position_accuracy": float(placed.sum()) / n,
        "puzzle_rotation_accuracy": float(turned.sum()) / n,
        "puzzle_both_accuracy": float((placed & turned).sum()) / n,
        "puzzle_mean_iou": float(iou.mean()) if len(iou) else 0.0,
    }


def score_placements(records: Sequence[dict], placed: dict[str, Any]) -> dict[str, Any]:
    """Placement metrics and ms per piece; for the hybrid also the model alone (``puzzle_learned_*``), the share of
    pieces that fell back to the classical search and the learned stage's ms per piece."""
    predictions = placed["predictions"]
    true_boxes, true_turns = [r["box"] for r in records], [r["rotation"] for r in records]
    metrics = placement_metrics(
        [p["box"] for p in predictions], true_boxes, [p["rotation"] for p in predictions], true_turns
    )
    n = max(1, len(records))
    metrics["puzzle_ms_per_piece"] = 1000 * placed["seconds"] / n
    if predictions and "learned" in predictions[0]:
        learned = [p["learned"] for p in predictions]
        alone = placement_metrics([p["box"] for p in learned], true_boxes, [p["rotation"] for p in learned], true_turns)
        metrics.update({k.replace("puzzle_", "puzzle_learned_"): v for k, v in alone.items()})
        metrics["puzzle_fallback_rate"] = sum(bool(p["fallback"]) for p in predictions) / n
    for stage, seconds in placed.get("stage_seconds", {}).items():
        metrics[f"puzzle_{stage}_ms_per_piece"] = 1000 * seconds / n
    metrics["puzzle_n"] = len(records)
    metrics["puzzle_n_puzzles"] = len(placed["puzzles"])
    return metrics
