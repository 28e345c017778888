"""Procedural cutting-tool defect data in COCO format: ``n`` tools, each photographed from ``views`` angles.

Every tool (a twist drill or an end mill, see :mod:`finescale.synth.tools`) turns on a turntable in steps of
``360 / views`` degrees under a key light that changes per view (:mod:`finescale.synth.tool_studio`); its defects
(:mod:`finescale.synth.tool_defects`) are boxed in the views that face and show them. Files under ``out``::

    images/<split>/t00012_v3.png   tall, narrow RGB photos (default 360 x 128; the seed's are 720 x 256)
    train.json                     the labeled training tools (about labeled_fraction of them, at least one)
    unlabeled.json                 the other training tools: images only, "annotations": []
    unlabeled_truth.json           the same images with their annotations (to score pseudo-labels; never train on it)
    val.json, test.json            labeled

Standard COCO: images ``{id, file_name (relative to the JSON's folder), width, height, group_id (the tool), view}``,
annotations ``{id, image_id, category_id, bbox [x, y, w, h] px, area, iscrowd 0}``, categories 1..5 in the order of
:data:`~finescale.synth.tool_defects.CLASSES`. Splits are by tool (about 70/15/15 %). Image ids are
``tool * views + view + 1`` and annotation ids run in that order, so ids never collide across files.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from finescale.errors import FinescaleError
from finescale.synth.tool_defects import CLASSES, Defect, draw_defect, sample_defects, view_boxes
from finescale.synth.tool_studio import photograph, sample_lights, sample_studio
from finescale.synth.tools import ToolSpec, build_surface, sample_tool, trace_view

SPLITS = ("train", "unlabeled", "val", "test")


def render_tool(
    seed: int, index: int, *, views: int = 8, height: int = 360, width: int = 128, with_defects: bool = True
) -> tuple[list[np.ndarray], list[list[tuple[int, list[int]]]], ToolSpec, list[Defect]]:
    """Photograph tool ``index`` from ``views`` angles: (uint8 RGB (H, W, 3) per view, per view a list of
    (category id, COCO ``[x, y, w, h]``), the tool, its defects). Tool, defects, studio and camera noise each draw
    from their own stream of ``default_rng([seed, index, k])``, so ``with_defects=False`` gives the very same
    photos without the defects (and no boxes)."""
    streams = [np.random.default_rng([seed, index, k]) for k in range(4)]
    spec = sample_tool(streams[0], height, width)
    surf = build_surface(spec, streams[0])
    defects = sample_defects(streams[1], spec)
    fields = [draw_defect(spec, surf, d) for d in defects] if with_defects else []
    lights, studio = sample_lights(streams[2], views), sample_studio(streams[2], spec)
    images, boxes = [], []
    for v in range(views):
        theta = 2 * math.pi * v / views
        hits = trace_view(spec, surf, theta)
        images.append(photograph(spec, surf, hits, lights[v], studio, theta, streams[3]))
        boxes.append(view_boxes(spec, defects, fields, hits, theta) if with_defects else [])
    return images, boxes, spec, defects


def plan_splits(n: int, seed: int, labeled_fraction: float) -> list[str]:
    """The split of each tool: val and test about 15 % each (one each from 3 tools, val alone at 2), the rest train,
    of which ``labeled_fraction`` (at least one tool) is labeled and the others unlabeled. Shuffled by ``seed``."""
    held = max(1, round(0.15 * n)) if n >= 3 else 0
    n_val, n_test = (held, held) if n >= 3 else (n - 1, 0)
    n_train = n - n_val - n_test
    n_labeled = min(max(1, round(labeled_fraction * n_train)), n_train)
    plan = ["train"] * n_labeled + ["unlabeled"] * (n_train - n_labeled) + ["val"] * n_val + ["test"] * n_test
    order = np.random.default_rng([seed, 7919]).permutation(n)
    return [plan[int(k)] for k in np.argsort(order, kind="stable")]


def _write_tool(job: tuple[int, str], seed: int, out: Path, views: int, height: int, width: int) -> tuple[list, list]:
    """Render tool ``index`` into ``out/images/<split>/``; returns its COCO image records and (image id, category,
    bbox) triples."""
    index, split = job
    images, boxes, _, _ = render_tool(seed, index, views=views, height=height, width=width)
    records, found = [], []
    for v, (image, view_boxes_) in enumerate(zip(images, boxes, strict=True)):
        name = f"images/{split}/t{index:05d}_v{v}.png"
        if not cv2.imwrite(str(out / name), np.ascontiguousarray(image[..., ::-1])):
            raise OSError(f"could not write {out / name}")
        image_id = index * views + v + 1
        records.append({"id": image_id, "file_name": name, "width": width, "height": height,
                        "group_id": index, "view": v})  # fmt: skip
        found += [(image_id, category, bbox) for category, bbox in view_boxes_]
    return records, found


def _coco(images: list[dict], annotations: list[dict], views: int) -> dict[str, Any]:
    info = {"description": "finescale synthetic cutting-tool defects", "views_per_group": views,
            "view_step_deg": 360 / views}  # fmt: skip
    categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(CLASSES)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def generate_defects(
    out: str | Path,
    n: int = 60,
    seed: int = 0,
    *,
    views: int = 8,
    labeled_fraction: float = 0.1,
    height: int = 360,
    width: int = 128,
    workers: int = 1,
) -> dict[str, Any]:
    """Write ``n`` tools x ``views`` photos and the COCO files described in the module docstring under ``out``.

    Byte-for-byte deterministic in ``seed`` whatever ``workers`` is. Returns counts of tools, images and
    annotations per split (``unlabeled``: those of unlabeled_truth.json), annotations per class, tools without a
    defect and seconds."""
    from rich.progress import track

    from finescale.console import stderr_console

    start = time.perf_counter()
    if n < 1 or views < 1:
        raise FinescaleError(f"--n and --views must be at least 1, got n={n}, views={views}.")
    if not 0.0 <= labeled_fraction <= 1.0:
        raise FinescaleError(f"--labeled-fraction must lie in [0, 1], got {labeled_fraction}.")
    if height < 64 or width < 32:
        raise FinescaleError(f"images must be at least 64 x 32 px, got {height} x {width}.")
    out = Path(out)
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
    splits = plan_splits(n, seed, labeled_fraction)
    job = partial(_write_tool, seed=seed, out=out, views=views, height=height, width=width)
    jobs = list(enumerate(splits))
    bar = {"total": n, "description": f"Photographing {n} tools x {views} views", "console": stderr_console()}
    if workers > 1 and n > 1:
        # fork, with OpenCV's thread pool shut first (a forked child can deadlock in a half-alive pool); imap keeps
        # the order, so ids and files do not depend on the number of workers
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with mp.get_context(method).Pool(min(workers, n)) as pool:
                results = list(track(pool.imap(job, jobs, chunksize=1), **bar))
        finally:
            cv2.setNumThreads(threads)
    else:
        results = [job(j) for j in track(jobs, **bar)]

    images: dict[str, list] = {s: [] for s in SPLITS}
    annotations: dict[str, list] = {s: [] for s in SPLITS}
    per_class = dict.fromkeys(CLASSES, 0)
    next_id = 1
    for split, (records, found) in zip(splits, results, strict=True):
        images[split] += records
        for image_id, category, (x, y, w, h) in found:
            annotations[split].append({"id": next_id, "image_id": image_id, "category_id": category,
                                       "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
            per_class[CLASSES[category - 1]] += 1
            next_id += 1
    files = {s: _coco(images[s], annotations[s], views) for s in ("train", "val", "test")}
    files["unlabeled"] = _coco(images["unlabeled"], [], views)
    files["unlabeled_truth"] = _coco(images["unlabeled"], annotations["unlabeled"], views)
    for name, coco in files.items():
        (out / f"{name}.json").write_text(json.dumps(coco) + "\n")
    return {
        "out": str(out),
        "tools": {s: splits.count(s) for s in SPLITS},
        "images": {s: len(images[s]) for s in SPLITS},
        "annotations": {s: len(annotations[s]) for s in SPLITS},
        "classes": per_class,
        "clean_tools": sum(not any(found) for _, found in results),
        "seconds": round(time.perf_counter() - start, 2),
    }
