"""Detections of the model (boxes in model pixels, labels 1..C) -> COCO results and plain answers (original pixels,
COCO category ids or class names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def to_original(boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(K, 4) xyxy in model pixels, scale (2,) = (sx, sy) model pixels per original pixel -> original pixels."""
    sx, sy = (float(v) for v in scale)
    return boxes / boxes.new_tensor([sx, sy, sx, sy])


def coco_results(
    detections: Sequence[dict[str, torch.Tensor]],
    image_ids: torch.Tensor,
    scales: torch.Tensor,
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """A batch's detections (B*V dicts, view-major per group) -> COCO results [{image_id, category_id, bbox xywh,
    score}] in original pixels; missing views (image id -1) give none."""
    out: list[dict[str, Any]] = []
    ids, flat_scales = image_ids.reshape(-1).tolist(), scales.reshape(-1, 2)
    for det, image_id, scale in zip(detections, ids, flat_scales, strict=True):
        if image_id < 0:
            continue
        boxes = to_original(det["boxes"].float().cpu(), scale.cpu())
        for box, label, score in zip(boxes.tolist(), det["labels"].tolist(), det["scores"].tolist(), strict=True):
            x1, y1, x2, y2 = box
            bbox = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label - 1]),
                    "bbox": bbox,
                    "score": round(float(score), 5),
                }
            )
    return out


def named_detections(det: dict[str, torch.Tensor], scale: torch.Tensor, categories: Sequence[str]) -> dict[str, Any]:
    """One view's detections as plain JSON: boxes xyxy in original pixels, class names, scores."""
    boxes = to_original(det["boxes"].float().cpu(), scale.cpu())
    return {
        "boxes": [[round(v, 1) for v in box] for box in boxes.tolist()],
        "labels": [categories[i - 1] for i in det["labels"].tolist()],
        "scores": [round(float(s), 4) for s in det["scores"].tolist()],
    }
