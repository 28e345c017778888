"""Scores of piece placement: a piece is placed when its box overlaps the true one with IoU >= 0.5, turned right
when the quarter turn matches, and solved when both hold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

IOU_THRESHOLD = 0.5


def paired_iou(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of each predicted box with its own true box: (N, 4) xyxy, (N, 4) -> (N,)."""
    pred, true = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(true, dtype=torch.float64)
    if pred.numel() == 0:
        return pred.new_zeros(0)
    return box_iou(pred, true).diagonal()


def placement_metrics(
    pred_boxes: Sequence, true_boxes: Sequence, pred_rotations: Sequence[int], true_rotations: Sequence[int]
) -> dict[str, float]:
    """``puzzle_position_accuracy``, ``puzzle_rotation_accuracy``, ``puzzle_both_accuracy``, ``puzzle_mean_iou``."""
    iou = paired_iou(np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4), np.asarray(true_boxes).reshape(-1, 4))
    placed = iou >= IOU_THRESHOLD
    turned = torch.as_tensor(np.asarray(pred_rotations) == np.asarray(true_rotations))
    n = max(1, len(iou))
    return {
        "puzzle_position_accuracy": float(placed.sum()) / n,
        "puzzle_rotation_accuracy": float(turned.sum()) / n,
        "puzzle_both_accuracy": float((placed & turned).sum()) / n,
        "puzzle_mean_iou": float(iou.mean()) if len(iou) else 0.0,
    }
