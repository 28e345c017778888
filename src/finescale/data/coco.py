"""COCO detection files in and out: validation with skip counts, tool groups (``group_id``, ``view``), results files.

Boxes in COCO files are ``bbox = [x, y, w, h]`` in pixels of the original image; inside finescale they are ``xyxy``
float32 pixels. Labels are contiguous ``1..C`` in sorted COCO category-id order (0 = background, torchvision's
convention): ``CocoData.category_ids[label - 1]`` is the COCO id of a label.

A *group* is the views of one tool: the images sharing a ``group_id``, each with a ``view`` index ``0..V-1``. Real data
that names its views only in file names gets these fields from :func:`assign_groups`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from finescale.errors import EmptyManifestError, FinescaleError
from finescale.serialize import write_json

__all__ = [
    "CocoData",
    "ToolGroup",
    "assign_groups",
    "load_coco",
    "write_coco",
    "write_results",
]

BOX_TOLERANCE = 1.0  # px a box may reach past the image border (rounding in annotation tools) before it is skipped


@dataclass(frozen=True)
class ToolGroup:
    """The views of one tool: ``image_ids[v]`` is the COCO id of view ``v``, None where that view is missing."""

    group_id: Any
    image_ids: tuple[int | None, ...]


@dataclass
class CocoData:
    """A validated COCO file. ``records`` (tool groups), ``skipped`` and ``n_total`` match
    :class:`finescale.data.manifest.Manifest`, so the run's metrics read both alike."""

    path: Path
    root: Path  # image file names are relative to it (the JSON's folder)
    categories: list[str]  # names in label order: label L is categories[L - 1]
    category_ids: list[int]  # COCO ids in label order
    images: dict[int, dict]  # image id -> the COCO image dict (valid images only)
    boxes: dict[int, np.ndarray]  # image id -> (K, 4) float32 xyxy in original pixels
    labels: dict[int, np.ndarray]  # image id -> (K,) int64 in 1..C
    records: list[ToolGroup]
    skipped: dict[str, int]
    n_total: int  # images in the file
    views: int | None = None  # V, or None when every image is its own group
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, image_id: int) -> Path:
        return self.root / self.images[image_id]["file_name"]

    def summary(self) -> dict:
        """``{"n_total", "n_valid", "skipped"}`` for metrics.json."""
        return {"n_total": self.n_total, "n_valid": self.n_valid, "skipped": dict(self.skipped)}


# ------------------------------------------------------------------------------------------------------------ reading


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FinescaleError(f"COCO file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise FinescaleError(f"COCO file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FinescaleError(f"COCO file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FinescaleError(f'COCO file {path} must hold an object with an "images" list')
    return data


def _categories(data: dict, path: Path) -> tuple[list[str], list[int]]:
    """Category names and ids sorted by id (label order); an unlabeled file may have none."""
    raw = data.get("categories") or []
    by_id: dict[int, str] = {}
    for cat in raw if isinstance(raw, list) else []:
        cid = cat.get("id") if isinstance(cat, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise FinescaleError(f"COCO file {path} has a category without an integer id: {cat!r}")
        if cid in by_id:
            raise FinescaleError(f"COCO file {path} lists category id {cid} twice")
        by_id[cid] = str(cat.get("name", cid))
    ids = sorted(by_id)
    return [by_id[i] for i in ids], ids


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _image_size(image: dict, root: Path, check_files: bool) -> tuple[float, float] | None:
    """(width, height) from the record, or from the file's header when the record lacks them."""
    width, height = _number(image.get("width")), _number(image.get("height"))
    if width is not None and height is not None:
        return (width, height) if width > 0 and height > 0 else None
    if not check_files:
        return None
    try:
        with Image.open(root / image["file_name"]) as im:  # reads the header only
            return float(im.width), float(im.height)
    except (OSError, ValueError):
        return None


def _valid_images(data: dict, root: Path, check_files: bool, skipped: Counter) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for image in data["images"]:
        if not isinstance(image, dict):
            skipped["bad_image"] += 1
            continue
        iid, name = image.get("id"), image.get("file_name")
        if isinstance(iid, bool) or not isinstance(iid, int) or not isinstance(name, str) or not name.strip():
            skipped["bad_image"] += 1
            continue
        if iid in images:
            skipped["duplicate_image"] += 1
            continue
        if check_files and not (root / name).is_file():
            skipped["missing_file"] += 1
            continue
        size = _image_size(image, root, check_files)
        if size is None:
            skipped["bad_image"] += 1
            continue
        images[iid] = {**image, "width": size[0], "height": size[1]}
    return images


def _annotation_box(ann: dict, image: dict) -> tuple[list[float] | None, str | None]:
    """The annotation's xyxy box clipped to the image, or (None, skip reason)."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return None, "bad_box"
    values = [_number(v) for v in bbox]
    if any(v is None for v in values):
        return None, "bad_box"
    x, y, w, h = values
    if w <= 0 or h <= 0:
        return None, "zero_size"
    width, height = image["width"], image["height"]
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return None, "box_outside"
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:  # lay in the tolerance strip only
        return None, "box_outside"
    return [x1, y1, x2, y2], None


def _annotations(
    data: dict, images: dict[int, dict], all_ids: set, label_of: dict[int, int], skipped: Counter
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    boxes: dict[int, list] = {iid: [] for iid in images}
    labels: dict[int, list] = {iid: [] for iid in images}
    for ann in data.get("annotations") or []:
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        if isinstance(iid, bool) or not isinstance(iid, int) or iid not in images:
            if iid not in all_ids:  # annotations of a skipped image go with it, uncounted
                skipped["unknown_image"] += 1
            continue
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        if ann.get("category_id") not in label_of:
            skipped["unknown_category"] += 1
            continue
        box, reason = _annotation_box(ann, images[iid])
        if reason is not None:
            skipped[reason] += 1
            continue
        boxes[iid].append(box)
        labels[iid].append(label_of[ann["category_id"]])
    return (
        {i: np.asarray(b, np.float32).reshape(-1, 4) for i, b in boxes.items()},
        {i: np.asarray(v, np.int64).reshape(-1) for i, v in labels.items()},
    )


def _view_index(value: Any, views: int) -> int | None:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < views:
        return None
    return value


def _groups(images: dict[int, dict], views: int | None, path: Path, skipped: Counter) -> list[ToolGroup]:
    """Tool groups in order of first appearance; drops images that cannot take part (counted)."""
    if views is None:
        return [ToolGroup(iid, (iid,)) for iid in images]
    if images and not any("group_id" in im or "view" in im for im in images.values()):
        raise FinescaleError(
            f"COCO file {path} has no group_id/view fields on its images, needed for {views} views per tool:"
            f" run `finescale defects group --pattern REGEX` to fill them from the file names (or use --views 1)"
        )
    slots: dict[Any, list[int | None]] = {}
    for iid, image in list(images.items()):
        gid, view = image.get("group_id"), _view_index(image.get("view"), views)
        if gid is None or isinstance(gid, list | dict):
            skipped["missing_group"] += 1
        elif view is None:
            skipped["bad_view"] += 1
        elif slots.setdefault(gid, [None] * views)[view] is not None:
            skipped["duplicate_view"] += 1
        else:
            slots[gid][view] = iid
            continue
        del images[iid]
    missing = sum(ids.count(None) for ids in slots.values())
    if missing:
        skipped["missing_view"] += missing
    return [ToolGroup(gid, tuple(ids)) for gid, ids in slots.items()]


def load_coco(path: str | os.PathLike[str], *, views: int | None = 8, check_files: bool = True) -> CocoData:
    """Read and validate a COCO detection file; bad records are skipped and counted in ``skipped`` by reason.

    ``views``: images per tool group (``group_id`` and ``view`` fields on each image); a group lacking views is kept
    with those views None (counted as ``missing_view``, one per view). None: every image is its own group.
    An unlabeled file (no annotations) is valid. EmptyManifestError when no valid group is left.
    """
    path = Path(path)
    data = _read_json(path)
    root = path.parent
    names, ids = _categories(data, path)
    skipped: Counter = Counter()
    images = _valid_images(data, root, check_files, skipped)
    all_ids = {im.get("id") for im in data["images"] if isinstance(im, dict) and isinstance(im.get("id"), int)}
    records = _groups(images, views, path, skipped)
    boxes, labels = _annotations(data, images, all_ids, {cid: i + 1 for i, cid in enumerate(ids)}, skipped)
    if not records:
        reasons = ", ".join(f"{n} {r}" for r, n in skipped.most_common()) or "it lists no images"
        raise EmptyManifestError(f"COCO file {path} has no valid image left ({reasons})")
    return CocoData(
        path=path,
        root=root,
        categories=names,
        category_ids=ids,
        images=images,
        boxes=boxes,
        labels=labels,
        records=records,
        skipped=dict(skipped),
        n_total=len(data["images"]),
        views=views,
        info=data.get("info") if isinstance(data.get("info"), dict) else {},
    )


# ------------------------------------------------------------------------------------------------------------ groups


def _view_numbers(values: Iterable[str]) -> dict[str, int]:
    """Distinct view names -> 0..V-1 in sorted order (numeric when all are integers, so view1..view8 -> 0..7)."""
    distinct = set(values)
    if all(v.isdigit() for v in distinct):
        ordered = sorted(distinct, key=int)
    else:
        ordered = sorted(distinct)
    return {v: i for i, v in enumerate(ordered)}


def assign_groups(coco: Mapping[str, Any], pattern: str) -> tuple[dict, dict[str, int]]:
    """Fill each image's ``group_id`` and ``view`` from its ``file_name`` with a regex holding the named groups
    ``group`` and ``view`` (searched anywhere in the name), e.g. ``r"(?P<group>tool\\d+)_view(?P<view>\\d+)"``.

    Views are numbered 0..V-1 in the sorted order of the distinct values found (numeric when all are integers).
    Returns a new COCO dict (images that do not match keep no group fields) and counts ``{"matched", "unmatched",
    "groups", "views"}``."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise FinescaleError(f"--pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if not {"group", "view"} <= set(regex.groupindex):
        raise FinescaleError(f"--pattern {pattern!r} must name the groups (?P<group>...) and (?P<view>...)")
    out = dict(coco)
    found: dict[int, tuple[str, str]] = {}
    images = [dict(im) if isinstance(im, dict) else im for im in coco.get("images") or []]
    for index, image in enumerate(images):
        match = regex.search(str(image.get("file_name", ""))) if isinstance(image, dict) else None
        if match is not None:
            found[index] = (match["group"], match["view"])
    numbers = _view_numbers(view for _, view in found.values())
    for index, (group, view) in found.items():
        images[index]["group_id"] = group
        images[index]["view"] = numbers[view]
    out["images"] = images
    counts = {
        "matched": len(found),
        "unmatched": len(images) - len(found),
        "groups": len({g for g, _ in found.values()}),
        "views": len(numbers),
    }
    return out, counts


# ------------------------------------------------------------------------------------------------------------ writing


def write_coco(
    path: str | os.PathLike[str],
    *,
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
) -> Path:
    """Write a COCO detection file atomically. Annotations get the fields pycocotools needs when they lack them:
    ``id`` (1..N), ``area`` (w * h of the bbox) and ``iscrowd`` 0."""
    anns = []
    for n, ann in enumerate(annotations, start=1):
        ann = dict(ann)
        ann.setdefault("id", n)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
        anns.append(ann)
    coco = {"images": [dict(im) for im in images], "annotations": anns, "categories": [dict(c) for c in categories]}
    return write_json(path, coco, indent=None)


def write_results(path: str | os.PathLike[str], detections: Iterable[Mapping[str, Any]]) -> Path:
    """Write the standard COCO results list ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` atomically."""
    rows = [
        {
            "image_id": int(d["image_id"]),
            "category_id": int(d["category_id"]),
            "bbox": [float(v) for v in d["bbox"]],
            "score": float(d["score"]),
        }
        for d in detections
    ]
    return write_json(path, rows, indent=None)
