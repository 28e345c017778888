"""Procedural cutting-tool defects: COCO files, splits by tool, determinism, class shares and box shapes, facing
views, and boxes that hold what the pixels show."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from finescale.synth.defects import generate_defects, plan_splits, render_tool
from finescale.synth.tool_defects import (
    ANNOTATION_SHARES,
    CLASSES,
    Defect,
    draw_defect,
    points_box,
    sample_defects,
    view_boxes,
)
from finescale.synth.tools import build_surface, sample_tool, trace_view

TINY = {"n": 5, "seed": 3, "views": 8, "workers": 1}
FILES = ("train", "unlabeled", "unlabeled_truth", "val", "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("defects")
    return out, generate_defects(out, **TINY)


def _load(root: Path, name: str) -> dict:
    return json.loads((root / f"{name}.json").read_text())


def test_coco_files_load_and_boxes_lie_inside(tiny):
    root, summary = tiny
    for name in FILES:
        coco = COCO(str(root / f"{name}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        for img in coco.dataset["images"]:
            assert set(img) >= {"id", "file_name", "width", "height", "group_id", "view"}
            assert (img["width"], img["height"]) == (128, 360)
        for ann in coco.dataset["annotations"]:
            x, y, w, h = ann["bbox"]
            img = coco.imgs[ann["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            assert ann["area"] == w * h and ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 5
    first = _load(root, "train")["images"][0]
    photo = cv2.imread(str(root / first["file_name"]), cv2.IMREAD_UNCHANGED)
    assert photo.shape == (360, 128, 3) and photo.dtype == np.uint8
    assert _load(root, "unlabeled")["annotations"] == []
    assert _load(root, "unlabeled")["images"] == _load(root, "unlabeled_truth")["images"]
    counted = {s: len(_load(root, s)["annotations"]) for s in ("train", "val", "test")}
    assert counted == {s: summary["annotations"][s] for s in counted}
    assert len(_load(root, "unlabeled_truth")["annotations"]) == summary["annotations"]["unlabeled"]
    assert sum(summary["classes"].values()) == sum(summary["annotations"].values()) > 0


def test_splits_are_by_tool(tiny):
    root, summary = tiny
    groups = {}
    ids: list[int] = []
    for name in ("train", "unlabeled", "val", "test"):
        data = _load(root, name)
        groups[name] = {img["group_id"] for img in data["images"]}
        for g in groups[name]:
            assert sorted(i["view"] for i in data["images"] if i["group_id"] == g) == list(range(8))
        ids += [img["id"] for img in data["images"]]
        assert len(groups[name]) == summary["tools"][name] >= 1
    assert len(ids) == len(set(ids)) == TINY["n"] * 8
    names = list(groups)
    assert all(not groups[a] & groups[b] for i, a in enumerate(names) for b in names[i + 1 :])
    assert plan_splits(1, 0, 0.1) == ["train"]
    assert sorted(plan_splits(2, 0, 0.1)) == ["train", "val"]
    plan = plan_splits(20, 0, 0.1)
    assert [plan.count(s) for s in ("train", "unlabeled", "val", "test")] == [1, 13, 3, 3]
    assert plan_splits(20, 0, 1.0).count("unlabeled") == 0


def test_same_seed_same_bytes_whatever_the_workers(tiny, tmp_path):
    root, _ = tiny
    generate_defects(tmp_path, **{**TINY, "workers": 2})
    image = _load(root, "val")["images"][5]["file_name"]
    for rel in [f"{name}.json" for name in FILES] + [image]:
        assert (root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_sampler_class_shares_and_box_shapes():
    """Annotation shares and rust/chip aspect ratios (height / width) of the seed, over 6000 sampled tools x 8 views
    boxed from the defects' points (no rendering; about 3 s)."""
    counts = dict.fromkeys(CLASSES, 0)
    aspects: dict[str, list[float]] = {c: [] for c in CLASSES}
    clean = 0
    tools = 6000
    for i in range(tools):
        rng = np.random.default_rng([11, i])
        spec = sample_tool(rng, 360, 128)
        defects = sample_defects(rng, spec)
        clean += not defects
        for d in defects:
            for v in range(8):
                box = points_box(spec, d, 2 * math.pi * v / 8)
                if box is not None:
                    counts[d.name] += 1
                    aspects[d.name].append(box[3] / box[2])
    total = sum(counts.values())
    for name, share in ANNOTATION_SHARES.items():
        assert counts[name] / total == pytest.approx(share, abs=0.02), name
    for name, (p25, median, p75) in {"Severe_Rust": (0.33, 0.44, 0.61), "Chipped": (0.39, 0.51, 0.67)}.items():
        q = np.percentile(aspects[name], [25, 50, 75])
        assert q[1] == pytest.approx(median, abs=0.04) and q[0] == pytest.approx(p25, abs=0.05), (name, q)
        assert q[2] == pytest.approx(p75, abs=0.06), (name, q)
    assert np.median(aspects["Scratched"]) > 1.2  # thin and long, mostly along the tool
    assert 0.1 < clean / tools < 0.2


def test_rendered_boxes_follow_the_sampled_points():
    """The rendered (pixel) boxes and the point boxes agree on which views annotate a defect and where."""
    agree, total, ious = 0, 0, []
    for i in range(10):
        rng = np.random.default_rng([5, i])
        spec = sample_tool(rng, 360, 128)
        surf = build_surface(spec, rng)
        defects = sample_defects(rng, spec)
        fields = [draw_defect(spec, surf, d) for d in defects]
        for v in range(8):
            theta = 2 * math.pi * v / 8
            got = view_boxes(spec, defects, fields, trace_view(spec, surf, theta), theta)
            for d in defects:
                expected = points_box(spec, d, theta)
                mine = [b for c, b in got if CLASSES[c - 1] == d.name]
                total += 1
                agree += (expected is not None) == bool(mine)
                if expected is not None and mine:
                    ious.append(max(_iou(expected, b) for b in mine))
    assert agree / total > 0.8 and np.median(ious) > 0.55


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def test_a_defect_is_boxed_in_the_views_that_face_it():
    """A small rust spot at azimuth 100 deg on the plain shank: boxed exactly in the views within +-70 deg
    (turntable at 225, 270, 315 deg: the spot faces the camera at -35, 10, 55 deg), centred where its projection
    falls and narrower the further it turns away."""
    rng = np.random.default_rng(0)
    spec = sample_tool(rng, 360, 128)
    surf = build_surface(spec, rng)
    phi, y = math.radians(100), 0.5 * (spec.y_flute_end + spec.runout + spec.y_holder)
    a, b = math.radians(12), 5.0
    u, v = (g.ravel() for g in np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)))
    points = np.stack([phi + 0.85 * a * u, y + 0.85 * b * v], 1)
    spot = Defect("Severe_Rust", phi, y, {"a": a, "b": b, "strength": 0.4, "colour": 1.0}, points, seed=1)
    field = draw_defect(spec, surf, spot)
    boxes = {}
    for k in range(8):
        theta = 2 * math.pi * k / 8
        found = view_boxes(spec, [spot], [field], trace_view(spec, surf, theta), theta)
        if found:
            boxes[k] = found[0][1]
    assert sorted(boxes) == [5, 6, 7]
    for k, (x, top, w, h) in boxes.items():
        psi = phi + 2 * math.pi * k / 8
        assert x + w / 2 == pytest.approx(spec.cx + spec.radius * math.sin(psi), abs=1.5)
        assert top + h / 2 == pytest.approx(y, abs=1.0)
    assert boxes[7][2] < boxes[6][2] and boxes[5][2] < boxes[6][2]  # foreshortened at 55 and -35 deg


def _first_tool_with(name: str, seed: int) -> int:
    for index in range(200):
        streams = [np.random.default_rng([seed, index, k]) for k in range(2)]
        if name in [d.name for d in sample_defects(streams[1], sample_tool(streams[0], 360, 128))]:
            return index
    raise AssertionError(name)


def test_defects_change_the_pixels_inside_their_boxes():
    """Photos with and without the defects (same tool, light and noise): every box holds a visible change, and the
    strongest cue in a box (90th percentile of the change) is far weaker for rust and chips than for a broken tip."""
    mean: dict[str, list[float]] = {}
    peak: dict[str, list[float]] = {}
    for name in ("Severe_Rust", "Chipped", "Broken"):
        index = _first_tool_with(name, seed=0)
        with_defects, boxes, _, _ = render_tool(0, index)
        without, none, _, _ = render_tool(0, index, with_defects=False)
        assert none == [[]] * 8
        for image, clean, found in zip(with_defects, without, boxes, strict=True):
            diff = np.abs(image.astype(float) - clean.astype(float)).mean(2)
            for category, (x, y, w, h) in found:
                inside = diff[y : y + h, x : x + w]
                assert inside.mean() > 1.0, (CLASSES[category - 1], inside.mean())
                mean.setdefault(CLASSES[category - 1], []).append(inside.mean())
                peak.setdefault(CLASSES[category - 1], []).append(np.percentile(inside, 90))
    assert set(peak) >= {"Severe_Rust", "Chipped", "Broken"}
    broken = np.mean(peak["Broken"])
    assert np.mean(peak["Severe_Rust"]) < 0.6 * broken and np.mean(peak["Chipped"]) < 0.6 * broken, peak
    assert np.mean(mean["Severe_Rust"]) < np.mean(mean["Broken"]) and np.mean(mean["Chipped"]) < np.mean(mean["Broken"])


def test_seed_size_photos():
    """720 x 256, the seed's size: the same tool, its broken tip's box twice as large as at 360 x 128."""
    index = _first_tool_with("Broken", seed=0)
    images, boxes, spec, _ = render_tool(0, index, views=2, height=720, width=256)
    small, small_boxes, _, _ = render_tool(0, index, views=2)
    assert images[0].shape == (720, 256, 3) and spec.height == 720
    for big, little in zip(boxes, small_boxes, strict=True):
        assert {c for c, _ in little} <= {c for c, _ in big}  # a tiny defect may fall under min_pixels at 360 x 128
        broken = CLASSES.index("Broken") + 1
        b1, b2 = ([b for c, b in found if c == broken] for found in (big, little))
        assert len(b1) == len(b2) == 1 and np.allclose(b1[0], 2 * np.asarray(b2[0]), atol=6)
