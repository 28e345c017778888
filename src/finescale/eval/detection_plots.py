"""Report figures for box detection: AP per class beside its data share (the seed's efficiency table as a picture),
precision-recall curves per class at one IoU, and a grid of example crops per class with ground truth and
detections drawn.

Same conventions as :mod:`finescale.eval.plots`: Agg figures (no pyplot state), one PNG per call, path returned.
Boxes come as COCO ``bbox`` (``xywh``) in pixels of the original image, from the ground truth and a results list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from PIL import Image

from finescale.eval.coco_eval import CocoEvaluation
from finescale.eval.plots import _grid, _new_figure, _save

FONT = 8
GT_COLOUR, DET_COLOUR = "tab:green", "tab:orange"
SHARE_COLOUR, AP_COLOUR = "0.65", "tab:blue"


def plot_class_ap(
    rows: Sequence[dict], out_path: str | Path, *, title: str = "AP per class against data share"
) -> Path:
    """Horizontal bars per class (rows of :func:`finescale.eval.coco_eval.efficiency_table`, in their order, first on
    top): data share as a fraction of the annotations (grey) beside AP@[.5:.95] (blue), efficiency = AP / share
    written at the end. A class whose bars are far apart gets far less AP than its data would suggest."""
    n = max(len(rows), 1)
    fig = _new_figure(7.0, 1.6 + 0.55 * n)
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    share = np.array([r["share"] / 100.0 for r in rows])
    ap = np.array([np.nan if r["ap"] is None else r["ap"] for r in rows])
    ax.barh(y + 0.2, share, height=0.38, color=SHARE_COLOUR, label="data share")
    ax.barh(y - 0.2, np.nan_to_num(ap), height=0.38, color=AP_COLOUR, label="AP@[.5:.95]")
    top = float(np.nanmax(np.concatenate([share, ap, [0.05]])))
    for yi, r in zip(y, rows, strict=True):
        eff = "AP n/a" if r["efficiency"] is None else f"{r['efficiency']:.2f}x"
        ap_text = "n/a" if r["ap"] is None else f"{r['ap']:.3f}"
        ax.text(top * 1.02, yi, f"{eff}  (AP {ap_text}, {r['count']} boxes)", va="center", fontsize=FONT)
    ax.set_yticks(y, [r["class"] for r in rows], fontsize=FONT + 1)
    ax.set_xlim(0, top * 1.75)
    ax.set_xlabel("fraction (share of annotations, or AP)", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.1 / n), ncols=2, frameon=False)
    ax.set_title(f"{title}\nefficiency = AP / share (the seed's table)", fontsize=FONT + 2)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_pr_curves(
    ev: CocoEvaluation, out_path: str | Path, *, iou: float = 0.5, title: str = "precision-recall per class"
) -> Path:
    """One panel per class: COCO's interpolated precision at the 101 recall points, at ``iou``, over all areas and
    100 detections per image; its AP in the title. A class without ground truth says so."""
    t, m100 = ev.iou_index(iou), ev.max_dets.index(100)
    nrows, ncols = _grid(len(ev.category_names), 3)
    fig = _new_figure(3.2 * ncols, 2.9 * nrows + 0.4)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[len(ev.category_names) :]:
        ax.set_visible(False)
    for k, (ax, name) in enumerate(zip(axes, ev.category_names, strict=False)):
        precision = ev.precision[t, :, k, 0, m100]
        if (precision > -1).any():
            ax.plot(ev.recall_thresholds, np.clip(precision, 0, None), color=AP_COLOUR, lw=1.5)
            ax.fill_between(ev.recall_thresholds, np.clip(precision, 0, None), color=AP_COLOUR, alpha=0.15)
            ax.set_title(f"{name}\nAP{round(iou * 100)} {precision[precision > -1].mean():.3f}", fontsize=FONT + 1)
        else:
            ax.set_title(f"{name}\nno ground truth", fontsize=FONT + 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=FONT)
        ax.set_ylabel("precision", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} (IoU {iou:g})", fontsize=FONT + 3)
    fig.tight_layout()
    return _save(fig, out_path)


def _crop_window(box: Sequence[float], width: int, height: int, context: float, min_side: int) -> tuple[int, ...]:
    """Integer window (x0, y0, x1, y1) around an ``xywh`` box: ``context`` times its size, at least ``min_side``
    pixels a side, shifted (not shrunk) to stay inside the image where the image allows."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    half_w = min(max(w * context, min_side) / 2, width / 2)
    half_h = min(max(h * context, min_side) / 2, height / 2)
    x0 = int(np.clip(cx - half_w, 0, width - 2 * half_w))
    y0 = int(np.clip(cy - half_h, 0, height - 2 * half_h))
    return x0, y0, int(x0 + 2 * half_w), int(y0 + 2 * half_h)


def _overlaps(box: Sequence[float], window: Sequence[int]) -> bool:
    x, y, w, h = box
    return x < window[2] and x + w > window[0] and y < window[3] and y + h > window[1]


def _draw_box(ax: Axes, box: Sequence[float], origin: Sequence[int], colour: str, label: str, *, is_gt: bool) -> None:
    """Ground truth solid with its label above the box, a detection dashed with its label below (fewer overlaps)."""
    x, y, w, h = box[0] - origin[0], box[1] - origin[1], box[2], box[3]
    ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=1.3, ec=colour, ls="-" if is_gt else "--", clip_on=True))
    ax.text(x, y - 1 if is_gt else y + h + 1, label, color="white", fontsize=FONT - 1, va="bottom" if is_gt else "top",
            clip_on=True, bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "lw": 0})  # fmt: skip


def _pick_examples(anns: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    return [anns[i] for i in sorted(rng.choice(len(anns), size=min(n, len(anns)), replace=False))]


def plot_detection_examples(
    image_paths: Mapping[int, str | Path],
    gt: dict,
    detections: Sequence[dict],
    out_path: str | Path,
    *,
    per_class: int = 4,
    score_threshold: float = 0.3,
    max_detections: int = 5,
    context: float = 3.0,
    min_side: int = 64,
    seed: int = 0,
) -> Path:
    """A row per class, ``per_class`` crops around randomly chosen ground-truth boxes of it (seeded): ground truth
    solid green with its class, the ``max_detections`` best detections at or above ``score_threshold`` dashed orange
    with class and score; boxes of every class in the crop are drawn, so confusions show. ``image_paths`` maps a COCO
    image id to its file."""
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    sizes = {img["id"]: (int(img["width"]), int(img["height"])) for img in gt["images"]}
    gt_by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        gt_by_image.setdefault(ann["image_id"], []).append(ann)
    dets_by_image: dict[int, list[dict]] = {}
    for det in detections:
        if det["score"] >= score_threshold:
            dets_by_image.setdefault(det["image_id"], []).append(det)

    rng = np.random.default_rng(seed)
    cat_ids = sorted(names)
    fig = _new_figure(2.3 * per_class, 2.6 * len(cat_ids) + 0.4)
    axes = fig.subplots(len(cat_ids), per_class, squeeze=False)
    for row, cat_id in enumerate(cat_ids):
        candidates = [a for a in gt["annotations"] if a["category_id"] == cat_id and a["image_id"] in image_paths]
        chosen = _pick_examples(candidates, per_class, rng)
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(chosen):
                ax.set_axis_off()
                if col == 0:
                    ax.text(0.5, 0.5, f"{names[cat_id]}\nno ground truth", ha="center", va="center", fontsize=FONT)
                continue
            ann = chosen[col]
            image_id = ann["image_id"]
            window = _crop_window(ann["bbox"], *sizes[image_id], context, min_side)
            with Image.open(image_paths[image_id]) as image:
                ax.imshow(np.asarray(image.convert("RGB").crop(window)))
            for other in gt_by_image.get(image_id, []):
                if _overlaps(other["bbox"], window):
                    _draw_box(ax, other["bbox"], window, GT_COLOUR, names.get(other["category_id"], "?"), is_gt=True)
            shown = [d for d in dets_by_image.get(image_id, []) if _overlaps(d["bbox"], window)]
            for det in sorted(shown, key=lambda d: -d["score"])[:max_detections]:
                label = f"{names.get(det['category_id'], '?')} {det['score']:.2f}"
                _draw_box(ax, det["bbox"], window, DET_COLOUR, label, is_gt=False)
            ax.set_xlim(-0.5, window[2] - window[0] - 0.5)
            ax.set_ylim(window[3] - window[1] - 0.5, -0.5)
            ax.set_title(f"{names[cat_id]} - image {image_id}", fontsize=FONT)
    fig.suptitle(
        f"examples per class: ground truth (green, solid), detections >= {score_threshold:g} (orange, dashed)",
        fontsize=FONT + 2,
    )
    fig.tight_layout()
    return _save(fig, out_path)
