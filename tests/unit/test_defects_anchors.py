"""The anchor coverage analysis: hand-computed IoUs with torchvision's anchors, percentiles against numpy, boxes
rescaled to the model's image size, and the side-by-side report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from finescale.pipelines.defects.anchors import (
    anchor_coverage,
    anchor_grid,
    anchor_report,
    best_anchor_iou,
    report_json,
    report_markdown,
)
from finescale.pipelines.defects.config import PREVIOUS_ANCHOR_RATIOS, SEED_ANCHOR_RATIOS

NO_NEARBY_RATIOS = [0.2, 1.0, 2.0]  # nothing between 0.2 and 1


def _coco(boxes: list[list[float]], *, width: int = 128, height: int = 128, categories=("Severe_Rust",)) -> dict:
    """One image holding ``boxes`` (COCO xywh), all of the first category."""
    return {
        "images": [{"id": 1, "width": width, "height": height}],
        "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(boxes)],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
    }


def _rounded_anchor(size: int, ratio: float) -> tuple[int, int]:
    """Width and height of torchvision's base anchor: w = size / sqrt(r), h = size * sqrt(r), corners at +-half
    rounded to whole pixels."""
    return 2 * round(size / math.sqrt(ratio) / 2), 2 * round(size * math.sqrt(ratio) / 2)


def _centred_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """IoU of two boxes (w, h) with the same centre."""
    inter = min(a[0], b[0]) * min(a[1], b[1])
    return inter / (a[0] * a[1] + b[0] * b[1] - inter)


def test_box_equal_to_an_anchor_is_covered() -> None:
    # The 16x16 square anchor of P2 (stride 4) centred at (32, 32) is [24, 24, 40, 40].
    rows = anchor_coverage(_coco([[24, 24, 16, 16]]), ratios=[1.0])
    assert rows[0]["cover_0.7"] == 1.0 and rows[0]["cover_0.5"] == 1.0
    assert best_anchor_iou(np.array([[24.0, 24, 40, 40]]), (128, 128), ratios=SEED_ANCHOR_RATIOS).item() == 1.0


def test_ratio_044_needs_a_nearby_anchor() -> None:
    # A 50 x 22 box (h/w = 0.44, the seed's Severe_Rust median) centred at (64, 64), on P3's grid (stride 8, size 32).
    box = [39.0, 53.0, 50.0, 22.0]
    # Targeted set: ratio 0.45 at size 32 is 48 x 22 (47.7 x 21.5 rounded), IoU = 48 * 22 / (50 * 22) = 0.96.
    assert _rounded_anchor(32, 0.45) == (48, 22)
    expected_targeted = _centred_iou((50, 22), _rounded_anchor(32, 0.45))
    assert expected_targeted == pytest.approx(0.96)
    # Without a nearby ratio the best is ratio 0.2 (72 x 14: 700 / 1408) or the 32 x 32 square (704 / 1420): < 0.5.
    expected_far = max(_centred_iou((50, 22), _rounded_anchor(32, r)) for r in NO_NEARBY_RATIOS)
    assert expected_far == pytest.approx(700 / 1408)

    xyxy = np.array([[39.0, 53.0, 89.0, 75.0]])
    assert best_anchor_iou(xyxy, (128, 128), ratios=SEED_ANCHOR_RATIOS).item() == pytest.approx(expected_targeted)
    assert best_anchor_iou(xyxy, (128, 128), ratios=NO_NEARBY_RATIOS).item() == pytest.approx(expected_far)

    coco = _coco([box])
    assert anchor_coverage(coco, ratios=SEED_ANCHOR_RATIOS)[0]["cover_0.7"] == 1.0
    far = anchor_coverage(coco, ratios=NO_NEARBY_RATIOS)[0]
    assert far["cover_0.7"] == 0.0 and far["cover_0.5"] == 0.0
    # The seed's previous set has 0.5: a 46 x 22 anchor, IoU 0.92, so it covers this centred box too.
    assert _centred_iou((50, 22), _rounded_anchor(32, 0.5)) == pytest.approx(0.92)
    assert anchor_coverage(coco, ratios=PREVIOUS_ANCHOR_RATIOS)[0]["cover_0.7"] == 1.0


def test_ratio_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    n = 300
    w, h = rng.uniform(4, 60, n), rng.uniform(4, 60, n)
    x, y = rng.uniform(0, 190, n), rng.uniform(0, 190, n)
    cats = rng.integers(1, 3, n)
    coco = {
        "images": [{"id": 1, "width": 256, "height": 256}],
        "annotations": [
            {"id": i, "image_id": 1, "category_id": int(cats[i]), "bbox": [x[i], y[i], w[i], h[i]]} for i in range(n)
        ],
        "categories": [{"id": 1, "name": "Severe_Rust"}, {"id": 2, "name": "Chipped"}, {"id": 3, "name": "Broken"}],
    }
    rows = anchor_coverage(coco, ratios=SEED_ANCHOR_RATIOS)
    assert [r["class"] for r in rows] == ["Severe_Rust", "Chipped", "Broken", "all"]
    ratio = h / w
    for row, mask in zip(rows, [cats == 1, cats == 2, np.zeros(n, bool), np.ones(n, bool)], strict=True):
        assert row["count"] == mask.sum()
        if not mask.any():
            assert row["ratio_median"] is None and row["cover_0.5"] is None
            continue
        p25, p50, p75 = np.percentile(ratio[mask], [25, 50, 75])
        assert (row["ratio_p25"], row["ratio_median"], row["ratio_p75"]) == pytest.approx((p25, p50, p75))
        assert row["narrow_share"] == pytest.approx(np.mean(ratio[mask] < 0.5))
        assert 0.0 <= row["cover_0.7"] <= row["cover_0.5"] <= 1.0
    json.dumps(rows, allow_nan=False)


def test_boxes_are_rescaled_to_the_model_image_size() -> None:
    # A 720 x 256 view resized to 288 x 96: x scales by 0.375, y by 0.4. This box becomes [24, 24, 40, 40] there,
    # exactly an anchor; at the original size its best anchor (a 32 x 32 square inside it) gives IoU 0.6 only.
    box = [24 / 0.375, 24 / 0.4, 16 / 0.375, 16 / 0.4]
    coco = _coco([box], width=256, height=720)
    resized = anchor_coverage(coco, ratios=[1.0], image_size=(288, 96))[0]
    assert resized["ratio_median"] == pytest.approx(1.0)
    assert resized["cover_0.7"] == 1.0
    original = anchor_coverage(coco, ratios=[1.0])[0]
    assert original["ratio_median"] == pytest.approx(40 / (16 / 0.375))
    assert original["cover_0.7"] == 0.0


def test_anchor_grid_follows_torchvision() -> None:
    anchors = anchor_grid((720, 256), ratios=SEED_ANCHOR_RATIOS)
    cells = sum(math.ceil(720 / s) * math.ceil(256 / s) for s in (4, 8, 16, 32))  # 180x64 + 90x32 + 45x16 + 23x8
    assert anchors.shape == (cells * 7, 4)
    # torchvision's stride is H // h: P5 has 23 rows 720 // 23 = 31 pixels apart (its 128-pixel square anchors).
    p5 = anchors[-23 * 8 * 7 :].reshape(23, 8, 7, 4)
    square = SEED_ANCHOR_RATIOS.index(1.0)
    centres_y = (p5[:, 0, square, 1] + p5[:, 0, square, 3]) / 2
    assert np.diff(centres_y.numpy()).tolist() == [31.0] * 22
    assert (p5[0, 0, square, 2] - p5[0, 0, square, 0]).item() == 128


def test_report_sets_side_by_side() -> None:
    coco = _coco([[39.0, 53.0, 50.0, 22.0], [24, 24, 16, 16]], categories=("Severe_Rust", "Chipped"))
    coco["annotations"] += [
        {"id": 10, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5]},  # unknown image
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 5]},  # zero width
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": "nonsense"},
    ]
    report = anchor_report(coco, targeted=SEED_ANCHOR_RATIOS, default=NO_NEARBY_RATIOS, image_size=(128, 128))
    assert report["skipped"] == {"unknown_image": 1, "no_image_size": 0, "unknown_category": 0, "bad_box": 2}
    rust, chipped, everything = report["rows"]
    assert rust["count"] == 2 and chipped["count"] == 0 and everything["count"] == 2
    # The 0.44 box needs the targeted set at 0.7; the square box is covered by both.
    assert rust["cover_0.7_default"] == 0.5 and rust["cover_0.7_targeted"] == 1.0
    assert rust["targeted_in_iqr"] == [0.65]  # ratios 0.44 and 1.0: P25 0.58, P75 0.86
    assert chipped["cover_0.5_targeted"] is None
    assert json.loads(report_json(report)) == report
    table = report_markdown(report)
    assert "| Severe_Rust | 2 | 0.72 | 0.58-0.86 | 50% | 0.65 | 50.0% -> 100.0% | 50.0% -> 100.0% |" in table
    assert "| Chipped | 0 | n/a | n/a | n/a | none | n/a -> n/a | n/a -> n/a |" in table
    assert "skipped annotations: {'unknown_image': 1, 'bad_box': 2}" in table


@pytest.mark.parametrize("image_size", [(720, 256), (288, 96), (100, 60)])
def test_nearest_cell_search_equals_every_anchor(image_size: tuple[int, int]) -> None:
    """The fast search against box_iou with the whole grid, on boxes of every size, also past the image's edges."""
    import torch
    from torchvision.ops import box_iou

    rng = np.random.default_rng(1)
    n = 250
    side = np.exp(rng.uniform(np.log(2), np.log(300), (n, 2)))
    centre = rng.uniform(-20, 1, (n, 2)) + rng.uniform(0, 1, (n, 2)) * np.array(image_size[::-1])
    boxes = torch.tensor(np.concatenate([centre - side / 2, centre + side / 2], axis=1), dtype=torch.float32)
    for ratios in (SEED_ANCHOR_RATIOS, NO_NEARBY_RATIOS):
        exhaustive = box_iou(boxes, anchor_grid(image_size, ratios=ratios)).amax(dim=1)
        fast = best_anchor_iou(boxes, image_size, ratios=ratios)
        torch.testing.assert_close(fast, exhaustive, rtol=0, atol=1e-6)
