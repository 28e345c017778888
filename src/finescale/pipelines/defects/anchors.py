"""The seed's anchor coverage analysis (``finescale defects anchors``): per class, the aspect ratios of the boxes as
the model sees them and the share of boxes whose best anchor reaches IoU 0.5 / 0.7, for an anchor ratio set.

The anchors are torchvision's own (:class:`~torchvision.models.detection.anchor_utils.AnchorGenerator`, one size
per FPN level P2..P5, every ratio on every level) on feature maps of ``ceil(H / stride) x ceil(W / stride)``, the
sizes a stride-2 backbone gives; torchvision derives each level's stride as ``H // h``, so a 720-pixel-high view puts
P5's 23 rows 31 pixels apart, and so does this analysis. Ratios are height / width (the design's convention), the
seed's Severe_Rust median of 0.44 a box about twice as wide as tall.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from finescale.eval.coco_eval import load_coco
from finescale.pipelines.defects.config import PREVIOUS_ANCHOR_RATIOS

__all__ = [
    "NARROW_RATIO",
    "anchor_coverage",
    "anchor_grid",
    "anchor_report",
    "best_anchor_iou",
    "report_json",
    "report_markdown",
]

DEFAULT_SIZES = (16, 32, 64, 128)  # the config's anchor_sizes, P2..P5
DEFAULT_STRIDES = (4, 8, 16, 32)
DEFAULT_IOUS = (0.5, 0.7)
NARROW_RATIO = 0.5  # "narrow" in the seed: its 60 % narrow boxes of Severe_Rust fit a median of 0.44 with h/w < 0.5


def _feature_sizes(image_size: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    return [(math.ceil(image_size[0] / s), math.ceil(image_size[1] / s)) for s in strides]


def anchor_grid(
    image_size: tuple[int, int],
    *,
    ratios: Sequence[float],
    sizes: Sequence[int] = DEFAULT_SIZES,
    strides: Sequence[int] = DEFAULT_STRIDES,
) -> torch.Tensor:
    """Every anchor torchvision's AnchorGenerator places on an image of ``image_size`` (H, W): (A, 4) float32 xyxy
    pixels, levels in order, within a level ordered (row, column, ratio); A = sum of h * w * len(ratios) over the
    levels' feature maps of h = ceil(H / stride), w = ceil(W / stride)."""
    if len(sizes) != len(strides):
        raise ValueError(f"one anchor size per stride: got sizes {list(sizes)} for strides {list(strides)}")
    height, width = image_size
    generator = AnchorGenerator(sizes=tuple((int(s),) for s in sizes), aspect_ratios=(tuple(ratios),) * len(sizes))
    images = ImageList(torch.empty(1, 0, height, width), [(height, width)])  # only shapes are read
    features = [torch.empty(1, 0, h, w) for h, w in _feature_sizes(image_size, strides)]
    return generator(images, features)[0]


def _nearest_cell_candidates(
    centres: torch.Tensor, image_size: tuple[int, int], n_ratios: int, strides: Sequence[int]
) -> torch.Tensor:
    """Indices into :func:`anchor_grid` of the anchors at the grid cell nearest each box centre, on every level:
    (N, levels * n_ratios). The best anchor of a box is among them: an anchor of a given level and ratio has a fixed
    shape and sits centred on its cell, the overlap along x (along y) only shrinks as the centres move apart, so the
    nearest cell along each axis maximises the intersection and with it the IoU."""
    candidates, offset = [], 0
    for h, w in _feature_sizes(image_size, strides):
        stride_y, stride_x = image_size[0] // h, image_size[1] // w  # torchvision's stride of this level
        col = torch.round(centres[:, 0] / stride_x).clamp(0, w - 1).long()
        row = torch.round(centres[:, 1] / stride_y).clamp(0, h - 1).long()
        first = offset + (row * w + col) * n_ratios
        candidates.append(first[:, None] + torch.arange(n_ratios))
        offset += h * w * n_ratios
    return torch.cat(candidates, dim=1)


def best_anchor_iou(
    boxes: torch.Tensor | np.ndarray,
    image_size: tuple[int, int],
    *,
    ratios: Sequence[float],
    sizes: Sequence[int] = DEFAULT_SIZES,
    strides: Sequence[int] = DEFAULT_STRIDES,
) -> torch.Tensor:
    """IoU of each box (N, 4) xyxy pixels of an ``image_size`` (H, W) image with its best anchor: (N,) float32.
    Only the anchors of the nearest cell per level are compared (exact, see :func:`_nearest_cell_candidates`), so a
    720 x 256 view's ~107k anchors cost no more than 28."""
    anchors = anchor_grid(image_size, ratios=ratios, sizes=sizes, strides=strides)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    candidates = anchors[_nearest_cell_candidates(centres, image_size, len(ratios), strides)]  # (N, M, 4)
    return torch.vmap(box_iou)(boxes[:, None, :], candidates)[:, 0].amax(dim=1)


def _valid_bbox(bbox: object) -> tuple[float, ...] | None:
    """A COCO ``xywh`` box as four floats, or None unless it is four finite numbers with positive width and height."""
    try:
        values = np.asarray(bbox, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.shape != (4,) or not np.isfinite(values).all() or values[2] <= 0 or values[3] <= 0:
        return None
    return tuple(float(v) for v in values)


def _model_boxes(coco: dict, image_size: tuple[int, int] | None) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The annotations' boxes as the model sees them: ``boxes`` (N, 4) xyxy pixels after resizing the image to
    ``image_size`` (H, W) (None: original size), ``category_ids`` (N,), ``grid`` (N, 2) the (H, W) each box's anchors
    live on; and counts of annotations skipped per reason."""
    images = {img["id"]: img for img in coco["images"]}
    category_ids = {c["id"] for c in coco["categories"]}
    skipped = dict.fromkeys(("unknown_image", "no_image_size", "unknown_category", "bad_box"), 0)
    boxes, cats, grids = [], [], []
    for ann in coco["annotations"]:
        img = images.get(ann.get("image_id"))
        if img is None:
            skipped["unknown_image"] += 1
            continue
        if not img.get("width") or not img.get("height"):
            skipped["no_image_size"] += 1
            continue
        if ann.get("category_id") not in category_ids:
            skipped["unknown_category"] += 1
            continue
        bbox = _valid_bbox(ann.get("bbox"))
        if bbox is None:
            skipped["bad_box"] += 1
            continue
        grid = image_size or (int(img["height"]), int(img["width"]))
        sx, sy = grid[1] / img["width"], grid[0] / img["height"]  # model pixels per original pixel
        x, y, w, h = bbox
        boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
        cats.append(ann["category_id"])
        grids.append(grid)
    arrays = {
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "category_ids": np.asarray(cats, dtype=np.int64),
        "grid": np.asarray(grids, dtype=np.int64).reshape(-1, 2),
    }
    return arrays, skipped


def _best_ious(arrays: dict[str, np.ndarray], ratios: Sequence[float], sizes, strides) -> np.ndarray:
    """Best-anchor IoU of every box, one anchor grid per distinct image size."""
    best = np.zeros(len(arrays["boxes"]))
    for grid in np.unique(arrays["grid"], axis=0):
        rows = np.flatnonzero((arrays["grid"] == grid).all(axis=1))
        boxes = torch.from_numpy(arrays["boxes"][rows]).float()
        best[rows] = best_anchor_iou(boxes, (int(grid[0]), int(grid[1])), ratios=ratios, sizes=sizes, strides=strides)
    return best


def _coverage_row(name: str, category_id: int | None, ratio: np.ndarray, best: np.ndarray, ious) -> dict:
    row: dict = {"class": name, "category_id": category_id, "count": int(ratio.size)}
    if ratio.size:
        p25, median, p75 = np.percentile(ratio, [25, 50, 75])
        row |= {"ratio_median": float(median), "ratio_p25": float(p25), "ratio_p75": float(p75)}
        row["narrow_share"] = float(np.mean(ratio < NARROW_RATIO))
    else:
        row |= dict.fromkeys(("ratio_median", "ratio_p25", "ratio_p75", "narrow_share"))
    for iou in ious:
        row[f"cover_{iou:g}"] = float(np.mean(best >= iou)) if best.size else None
    return row


def anchor_coverage(
    coco: dict | str | Path,
    *,
    ratios: Sequence[float],
    sizes: Sequence[int] = DEFAULT_SIZES,
    image_size: tuple[int, int] | None = None,
    strides: Sequence[int] = DEFAULT_STRIDES,
    ious: Sequence[float] = DEFAULT_IOUS,
) -> list[dict]:
    """Per class (sorted by category id), then an ``"all"`` row: ``count``, aspect ratio h/w ``ratio_median``,
    ``ratio_p25``, ``ratio_p75``, ``narrow_share`` (h/w < 0.5) and ``cover_<iou>``, the share of boxes whose best
    anchor reaches that IoU. Boxes are rescaled to ``image_size`` (H, W), every image resized to it as the model sees
    it (None: original sizes). Values are None for a class without boxes."""
    coco = load_coco(coco)
    arrays, _ = _model_boxes(coco, image_size)
    return _coverage_rows(coco, arrays, _best_ious(arrays, ratios, sizes, strides), ious)


def _coverage_rows(coco: dict, arrays: dict[str, np.ndarray], best: np.ndarray, ious: Sequence[float]) -> list[dict]:
    boxes = arrays["boxes"]
    ratio = (boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0])
    rows = []
    for cat in sorted(coco["categories"], key=lambda c: c["id"]):
        mask = arrays["category_ids"] == cat["id"]
        rows.append(_coverage_row(str(cat.get("name", cat["id"])), cat["id"], ratio[mask], best[mask], ious))
    rows.append(_coverage_row("all", None, ratio, best, ious))
    return rows


def anchor_report(
    coco: dict | str | Path,
    *,
    targeted: Sequence[float],
    default: Sequence[float] = PREVIOUS_ANCHOR_RATIOS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    image_size: tuple[int, int] | None = None,
    strides: Sequence[int] = DEFAULT_STRIDES,
    ious: Sequence[float] = DEFAULT_IOUS,
) -> dict:
    """Both ratio sets side by side, the seed's coverage table: per class (then "all") the ratio median, P25, P75,
    narrow share, which targeted ratios fall inside P25-P75, and ``cover_<iou>_default`` / ``cover_<iou>_targeted``
    for each IoU; with the settings used and the annotations skipped per reason. Plain JSON values."""
    coco = load_coco(coco)
    arrays, skipped = _model_boxes(coco, image_size)
    tables = {
        name: _coverage_rows(coco, arrays, _best_ious(arrays, ratios, sizes, strides), ious)
        for name, ratios in (("default", default), ("targeted", targeted))
    }
    rows = []
    for base, other in zip(tables["default"], tables["targeted"], strict=True):
        row = {k: v for k, v in base.items() if not k.startswith("cover_")}
        lo, hi = row["ratio_p25"], row["ratio_p75"]
        row["targeted_in_iqr"] = [r for r in targeted if lo is not None and lo <= r <= hi]
        for iou in ious:
            row[f"cover_{iou:g}_default"] = base[f"cover_{iou:g}"]
            row[f"cover_{iou:g}_targeted"] = other[f"cover_{iou:g}"]
        rows.append(row)
    return {
        "image_size": list(image_size) if image_size else None,
        "sizes": list(sizes),
        "strides": list(strides),
        "ious": list(ious),
        "default_ratios": list(default),
        "targeted_ratios": list(targeted),
        "skipped": skipped,
        "rows": rows,
    }


def report_json(report: dict) -> str:
    """The report as JSON (what the CLI prints on stdout)."""
    return json.dumps(report, indent=2, allow_nan=False)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report_markdown(report: dict) -> str:
    """The report as a markdown table (what the CLI prints on stderr): one row per class, coverage as
    ``default -> targeted`` percentages."""
    size = "original sizes" if report["image_size"] is None else "x".join(map(str, report["image_size"])) + " (HxW)"
    ious = report["ious"]
    lines = [
        f"anchor ratios (h/w): default {report['default_ratios']} -> targeted {report['targeted_ratios']}",
        f"sizes {report['sizes']} on strides {report['strides']}, images at {size}",
        "",
        "| Class | Count | Median ratio | P25-P75 | h/w < 0.5 | Targeted in P25-P75 | "
        + " | ".join(f"Cover@{iou:g} default -> targeted" for iou in ious)
        + " |",
        "|" + "---|" * (6 + len(ious)),
    ]
    for r in report["rows"]:
        iqr = "n/a" if r["ratio_p25"] is None else f"{r['ratio_p25']:.2f}-{r['ratio_p75']:.2f}"
        in_iqr = ", ".join(f"{v:g}" for v in r["targeted_in_iqr"]) or "none"
        covers = [
            f"{_fmt(r[f'cover_{iou:g}_default'], '.1%')} -> {_fmt(r[f'cover_{iou:g}_targeted'], '.1%')}" for iou in ious
        ]
        cells = [r["class"], str(r["count"]), _fmt(r["ratio_median"], ".2f"), iqr, _fmt(r["narrow_share"], ".0%")]
        lines.append("| " + " | ".join([*cells, in_iqr, *covers]) + " |")
    skipped = {k: v for k, v in report["skipped"].items() if v}
    if skipped:
        lines.append(f"\nskipped annotations: {skipped}")
    return "\n".join(lines)
