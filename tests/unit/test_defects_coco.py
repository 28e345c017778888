"""Tests for finescale.data.coco: COCO validation with skip counts, tool groups, group assignment, files out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from finescale.data.coco import assign_groups, load_coco, write_coco, write_results
from finescale.errors import EmptyManifestError, FinescaleError

# COCO ids out of order on purpose: labels follow the sorted ids (3 -> 1, 5 -> 2, 7 -> 3).
CATEGORIES = [{"id": 7, "name": "Chipped"}, {"id": 3, "name": "Broken"}, {"id": 5, "name": "Severe_Rust"}]
W, H = 20, 40


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)


def _images(root: Path, tools: int = 2, views: int = 3, grouped: bool = True) -> list[dict]:
    images = []
    for t in range(tools):
        for v in range(views):
            name = f"imgs/tool{t}_view{v}.png"
            _png(root / name)
            image = {"id": 1 + t * views + v, "file_name": name, "width": W, "height": H}
            if grouped:
                image.update(group_id=f"tool{t}", view=v)
            images.append(image)
    return images


def _write(path: Path, images: list, annotations: list | None = None, categories: Any = CATEGORIES) -> Path:
    data: dict[str, Any] = {"images": images, "categories": categories}
    if annotations is not None:
        data["annotations"] = annotations
    path.write_text(json.dumps(data))
    return path


def _ann(image_id: int, bbox: Any, category_id: int = 5) -> dict:
    return {"id": 0, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 1.0, "iscrowd": 0}


def test_labels_boxes_and_groups(tmp_path: Path) -> None:
    anns = [_ann(1, [2, 3, 4, 5], 7), _ann(1, [0, 0, 20, 40], 3), _ann(5, [1.5, 2.5, 3, 6], 5)]
    coco = load_coco(_write(tmp_path / "c.json", _images(tmp_path), anns), views=3)
    assert coco.categories == ["Broken", "Severe_Rust", "Chipped"] and coco.category_ids == [3, 5, 7]
    assert coco.n_total == 6 and len(coco) == 2 and coco.skipped == {}
    assert [(g.group_id, g.image_ids) for g in coco.records] == [("tool0", (1, 2, 3)), ("tool1", (4, 5, 6))]
    np.testing.assert_array_equal(coco.boxes[1], np.array([[2, 3, 6, 8], [0, 0, 20, 40]], np.float32))
    np.testing.assert_array_equal(coco.labels[1], [3, 1])
    np.testing.assert_allclose(coco.boxes[5], [[1.5, 2.5, 4.5, 8.5]])
    assert coco.boxes[2].shape == (0, 4) and coco.boxes[2].dtype == np.float32 and coco.labels[2].dtype == np.int64
    assert coco.image_path(4) == tmp_path / "imgs" / "tool1_view0.png"
    assert coco.summary() == {"n_total": 6, "n_valid": 2, "skipped": {}}


def test_each_bad_annotation_is_skipped_and_counted(tmp_path: Path) -> None:
    anns = [
        _ann(1, [2, 3, 4, 5]),  # good
        _ann(1, [15, 30, 10, 5]),  # x2 = 25 > 20 + 1
        _ann(1, [-3, 0, 5, 5]),  # x1 = -3 < -1
        _ann(1, [-0.5, 39.5, 5, 1.2]),  # within the 1 px tolerance: clipped, kept
        _ann(2, [2, 3, 0, 5]),  # zero width
        _ann(2, [2, 3, 4, -1]),  # negative height
        _ann(2, [2, 3, 4, 5], category_id=99),
        _ann(2, [2, 3, 4]),  # three numbers
        _ann(2, [2, "a", 4, 5]),
        _ann(2, [2, 3, float("nan"), 5]),
        {"id": 0, "image_id": 3, "category_id": 5},  # no bbox
        _ann(42, [2, 3, 4, 5]),  # no such image
        {**_ann(3, [2, 3, 4, 5]), "iscrowd": 1},
    ]
    coco = load_coco(_write(tmp_path / "c.json", _images(tmp_path), anns), views=3)
    assert coco.skipped == {
        "box_outside": 2,
        "zero_size": 2,
        "unknown_category": 1,
        "bad_box": 4,
        "unknown_image": 1,
        "crowd": 1,
    }
    np.testing.assert_allclose(coco.boxes[1], [[2, 3, 6, 8], [0, 39.5, 4.5, 40]])
    assert coco.boxes[2].shape == (0, 4) and len(coco) == 2


def test_bad_images_and_views(tmp_path: Path) -> None:
    images = _images(tmp_path, tools=3)
    (tmp_path / images[0]["file_name"]).unlink()  # tool0 view0: missing file
    images[1]["view"] = 7  # tool0 view1: out of range
    images[4]["view"] = 0  # tool1: a second view 0
    del images[8]["group_id"]  # tool2 view2: no group
    images.append({"id": 50, "width": W, "height": H})  # no file_name
    anns = [_ann(1, [2, 3, 4, 5]), _ann(5, [2, 3, 4, 5])]  # annotations of dropped images vanish uncounted
    coco = load_coco(_write(tmp_path / "c.json", images, anns), views=3)
    assert coco.n_total == 10
    assert coco.skipped == {
        "missing_file": 1,
        "bad_view": 1,
        "duplicate_view": 1,
        "missing_group": 1,
        "bad_image": 1,
        "missing_view": 4,  # tool0 lacks 2, tool1 1 (its duplicate view 0 was dropped), tool2 1
    }
    by_group = {g.group_id: g.image_ids for g in coco.records}
    assert by_group == {"tool0": (None, None, 3), "tool1": (4, None, 6), "tool2": (7, 8, None)}
    assert 5 not in coco.images and 5 not in coco.boxes


def test_without_file_checks_missing_files_are_kept(tmp_path: Path) -> None:
    images = _images(tmp_path, tools=1)
    (tmp_path / images[0]["file_name"]).unlink()
    coco = load_coco(_write(tmp_path / "c.json", images, []), views=3, check_files=False)
    assert coco.records[0].image_ids == (1, 2, 3) and coco.skipped == {}


def test_single_view_needs_no_group_fields(tmp_path: Path) -> None:
    images = _images(tmp_path, grouped=False)
    for image in images[:2]:
        del image["width"], image["height"]  # read from the PNG header
    coco = load_coco(_write(tmp_path / "c.json", images), views=None)
    assert [g.image_ids for g in coco.records] == [(i,) for i in range(1, 7)]
    assert coco.images[1]["width"] == W and coco.images[1]["height"] == H
    assert all(coco.boxes[i].shape == (0, 4) for i in range(1, 7))  # no "annotations" key: an unlabeled file


def test_grouped_views_without_group_fields_names_the_verb(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", _images(tmp_path, grouped=False), [])
    with pytest.raises(FinescaleError, match="finescale defects group --pattern") as info:
        load_coco(path, views=8)
    assert "\n" not in str(info.value)


def test_nothing_valid_is_one_sentence(tmp_path: Path) -> None:
    images = _images(tmp_path, tools=1)
    for image in images:
        (tmp_path / image["file_name"]).unlink()
    with pytest.raises(EmptyManifestError, match=r"no valid image left \(3 missing_file\)"):
        load_coco(_write(tmp_path / "c.json", images, []), views=3)
    with pytest.raises(FinescaleError, match="does not exist"):
        load_coco(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FinescaleError, match="not valid JSON"):
        load_coco(tmp_path / "bad.json")


def test_assign_groups_from_file_names(tmp_path: Path) -> None:
    names = [f"t{t}/tool{t}_view{v}.png" for t in (1, 2) for v in range(1, 11)] + ["notes/other.png"]
    coco = {"images": [{"id": i, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)]}
    out, counts = assign_groups(coco, r"(?P<group>tool\d+)_view(?P<view>\d+)")
    assert counts == {"matched": 20, "unmatched": 1, "groups": 2, "views": 10}
    # numeric order: view1..view10 -> 0..9 (not the string order where view10 sorts before view2)
    assert [(im["group_id"], im["view"]) for im in out["images"][:10]] == [("tool1", v) for v in range(10)]
    assert "group_id" not in out["images"][-1] and "group_id" not in coco["images"][0]  # input untouched

    named = {"images": [{"id": i, "file_name": f"a_{s}.png"} for i, s in enumerate(["top", "left", "right"])]}
    out, _ = assign_groups(named, r"(?P<group>a)_(?P<view>\w+)\.png")
    assert [im["view"] for im in out["images"]] == [2, 0, 1]  # sorted: left, right, top

    with pytest.raises(FinescaleError, match="must name the groups"):
        assign_groups(coco, r"(?P<group>tool\d+)")
    with pytest.raises(FinescaleError, match="not a valid regular expression"):
        assign_groups(coco, r"(?P<group>")


def test_assigned_groups_load(tmp_path: Path) -> None:
    images = _images(tmp_path, grouped=False)
    coco, _ = assign_groups({"images": images, "categories": CATEGORIES}, r"(?P<group>tool\d)_view(?P<view>\d)")
    path = write_coco(tmp_path / "g.json", images=coco["images"], annotations=[], categories=CATEGORIES)
    loaded = load_coco(path, views=3)
    assert [g.image_ids for g in loaded.records] == [(1, 2, 3), (4, 5, 6)]


def test_written_files_load_in_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    images = _images(tmp_path, tools=1)
    anns = [
        {"image_id": 1, "category_id": 5, "bbox": [2, 3, 4, 5]},
        {"image_id": 2, "category_id": 7, "bbox": [1, 1, 2, 2]},
    ]
    path = write_coco(tmp_path / "out" / "gt.json", images=images, annotations=anns, categories=CATEGORIES)
    assert not list((tmp_path / "out").glob("*.tmp"))
    gt = COCO(str(path))
    assert sorted(gt.getAnnIds()) == [1, 2] and gt.anns[1]["area"] == 20.0 and gt.anns[2]["iscrowd"] == 0

    rows = [{"image_id": 1, "category_id": 5, "bbox": [5, 5, 10, 10], "score": 0.9}]
    res_path = write_results(tmp_path / "out" / "results.json", rows)
    res = gt.loadRes(str(res_path))
    assert res.anns[1]["bbox"] == [5.0, 5.0, 10.0, 10.0] and res.anns[1]["area"] == 100.0
