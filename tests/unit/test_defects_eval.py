"""COCO metrics of the defects pipeline: hand-computed cases, pycocotools' own summary, the two backends against each
other, the seed's efficiency table, results-file errors and the detection plots."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from finescale.errors import FinescaleError
from finescale.eval.coco_eval import (
    coco_metrics,
    efficiency_markdown,
    efficiency_table,
    evaluate_coco,
    score_files,
)
from finescale.eval.detection_plots import plot_class_ap, plot_detection_examples, plot_pr_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED_CLASSES = ["Severe_Rust", "Chipped", "Scratched", "Broken", "Tip_Wear"]


def _one_image_gt() -> dict:
    """One 64x64 image with one 10x10 Severe_Rust box; Chipped has no ground truth."""
    return {
        "images": [{"id": 7, "width": 64, "height": 64, "file_name": "a.png"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 10, 10]}],  # no area/iscrowd
        "categories": [{"id": 1, "name": "Severe_Rust"}, {"id": 2, "name": "Chipped"}],
    }


def random_case(n_images: int = 60, n_dets: int = 1200, n_cats: int = 5, seed: int = 0) -> tuple[dict, list[dict]]:
    """Random tool-sized images (720 x 256) with 0..3 boxes each; detections are jittered copies of the boxes (some
    with the wrong class) plus random boxes, with random scores."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 256, "height": 720, "file_name": f"{i}.png"} for i in range(n_images)]
    cats = [{"id": c + 1, "name": SEED_CLASSES[c % 5] + ("" if c < 5 else str(c))} for c in range(n_cats)]
    anns: list[dict] = []
    for img in images:
        for _ in range(rng.integers(0, 4)):
            w, h = rng.uniform(8, 120), rng.uniform(8, 120)
            x, y = rng.uniform(0, 256 - w), rng.uniform(0, 720 - h)
            cat = int(rng.integers(1, n_cats + 1))
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})  # fmt: skip
    dets = []
    for _ in range(n_dets):
        if anns and rng.random() < 0.5:
            ann = anns[rng.integers(len(anns))]
            x, y, w, h = ann["bbox"]
            box = [x + rng.normal(0, 0.1 * w), y + rng.normal(0, 0.1 * h), w * rng.uniform(0.8, 1.2),
                   h * rng.uniform(0.8, 1.2)]  # fmt: skip
            image_id, cat = ann["image_id"], ann["category_id"] if rng.random() < 0.7 else int(rng.integers(1, 6))
            cat = min(cat, n_cats)
        else:
            w, h = rng.uniform(8, 120), rng.uniform(8, 120)
            box = [rng.uniform(0, 256 - w), rng.uniform(0, 720 - h), w, h]
            image_id, cat = int(rng.integers(1, n_images + 1)), int(rng.integers(1, n_cats + 1))
        dets.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": float(rng.random())})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def test_hand_computed_case() -> None:
    # IoU of [10,10,10,5.8] with [10,10,10,10] is 0.58: a match at thresholds 0.50 and 0.55 only -> 2 of 10.
    dets = [{"image_id": 7, "category_id": 1, "bbox": [10, 10, 10, 5.8], "score": 0.9}]
    m = coco_metrics(_one_image_gt(), dets, backend="pycocotools")
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == pytest.approx(0.0)
    assert m["map"] == pytest.approx(0.2)
    assert m["map_small"] == pytest.approx(0.2)  # area 100 < 32^2
    assert m["map_medium"] is None and m["map_large"] is None
    assert m["ar100"] == pytest.approx(0.2)
    assert m["ap_severe_rust"] == pytest.approx(0.2) and m["ap50_severe_rust"] == pytest.approx(1.0)
    assert m["ap_chipped"] is None and m["ap50_chipped"] is None  # no ground truth: None, not NaN
    json.dumps(m, allow_nan=False)


def test_exact_box_scores_one_and_a_false_positive_above_it_halves_precision() -> None:
    gt = _one_image_gt()
    exact = {"image_id": 7, "category_id": 1, "bbox": [10, 10, 10, 10], "score": 0.5}
    assert coco_metrics(gt, [exact], backend="pycocotools")["map"] == pytest.approx(1.0)
    # A higher-scored miss first: precision 1/2 at every recall point (the interpolated envelope) -> AP 0.5.
    miss = {"image_id": 7, "category_id": 1, "bbox": [40, 40, 10, 10], "score": 0.9}
    assert coco_metrics(gt, [miss, exact], backend="pycocotools")["map"] == pytest.approx(0.5)


def test_empty_results_give_zeros() -> None:
    gt, _ = random_case(n_images=20, n_dets=0)
    m = coco_metrics(gt, [], backend="pycocotools")
    assert m["map"] == 0.0 and m["ap50"] == 0.0 and m["ar100"] == 0.0
    assert all(v == 0.0 for k, v in m.items() if k.startswith("ap_"))


def test_matches_pycocotools_own_summary() -> None:
    """Our results handling and arrays against pycocotools used the standard way (loadRes, summarize)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = random_case(seed=1)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    m = coco_metrics(gt, dets, backend="pycocotools")
    keys = ["map", "ap50", "ap75", "map_small", "map_medium", "map_large"]
    assert [m[k] for k in keys] == pytest.approx(list(ev.stats[:6]), abs=1e-12)
    assert m["ar100"] == pytest.approx(ev.stats[8], abs=1e-12)
    assert m["map"] > 0.01  # the jittered copies make a non-trivial case


def test_inputs_are_not_modified_and_stdout_stays_clean(capsys: pytest.CaptureFixture[str]) -> None:
    gt, dets = random_case(n_images=10, n_dets=50, seed=2)
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    coco_metrics(gt, dets, backend="pycocotools")
    assert gt == gt_before and dets == dets_before
    assert capsys.readouterr().out == ""


def test_backends_agree_on_random_boxes(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faster_coco_eval")
    for seed in (0, 3):
        gt, dets = random_case(seed=seed)
        a = evaluate_coco(gt, dets, backend="pycocotools")
        b = evaluate_coco(gt, dets, backend="faster_coco_eval")
        np.testing.assert_allclose(a.precision, b.precision, atol=1e-12)
        np.testing.assert_allclose(a.recall, b.recall, atol=1e-12)
        ma, mb = coco_metrics(gt, dets, backend="pycocotools"), coco_metrics(gt, dets, backend="faster_coco_eval")
        assert ma.keys() == mb.keys()
        assert [ma[k] for k in ma] == pytest.approx([mb[k] for k in ma], abs=1e-12)
    assert coco_metrics(_one_image_gt(), [], backend="faster_coco_eval")["ap_severe_rust"] == 0.0
    assert capsys.readouterr().out == ""


def test_efficiency_table_reproduces_the_seed() -> None:
    counts = {"Severe_Rust": 475, "Chipped": 264, "Scratched": 398, "Broken": 204, "Tip_Wear": 107}
    aps = {"Severe_Rust": 0.006, "Chipped": 0.032, "Scratched": 0.098, "Broken": 0.252, "Tip_Wear": 0.158}
    cats = [
        {"id": i + 1, "name": n} for i, n in enumerate(["Broken", "Chipped", "Scratched", "Severe_Rust", "Tip_Wear"])
    ]
    ids = {c["name"]: c["id"] for c in cats}
    anns = [{"id": i, "image_id": 1, "category_id": ids[n], "bbox": [0, 0, 5, 5]}
            for i, n in enumerate(n for n, k in counts.items() for _ in range(k))]  # fmt: skip
    gt = {"images": [{"id": 1, "width": 256, "height": 720}], "annotations": anns, "categories": cats}

    rows = efficiency_table(gt, {f"ap_{n.lower()}": ap for n, ap in aps.items()})  # coco_metrics' keys
    assert [r["class"] for r in rows] == ["Severe_Rust", "Chipped", "Scratched", "Broken", "Tip_Wear"]  # seed order
    by_class = {r["class"]: r for r in rows}
    assert by_class["Severe_Rust"]["share"] == pytest.approx(32.8, abs=0.05)
    assert by_class["Severe_Rust"]["efficiency"] == pytest.approx(0.006 / (475 / 1448))
    assert by_class["Broken"]["efficiency"] == pytest.approx(0.252 / (204 / 1448))
    table = efficiency_markdown(rows)
    for line in ("| Severe_Rust | 32.8% | 475 | 0.006 | 0.02x |", "| Chipped | 18.2% | 264 | 0.032 | 0.18x |",
                 "| Scratched | 27.5% | 398 | 0.098 | 0.36x |", "| Broken | 14.1% | 204 | 0.252 | 1.79x |",
                 "| Tip_Wear | 7.4% | 107 | 0.158 | 2.14x |"):  # fmt: skip
        assert line in table
    # Keyed by name works too; a missing or None AP goes last with no efficiency.
    rows = efficiency_table(gt, {"Broken": 0.252, "Chipped": None})
    assert rows[0]["class"] == "Broken" and all(r["efficiency"] is None for r in rows[1:])


def test_score_files(tmp_path: Path) -> None:
    gt, dets = random_case(n_images=15, n_dets=100, seed=4)
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    assert score_files(gt_path, dets_path, backend="pycocotools") == coco_metrics(gt, dets, backend="pycocotools")

    dets_path.write_text("[]")
    assert score_files(gt_path, dets_path)["map"] == 0.0

    dets_path.write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.5}]))
    with pytest.raises(FinescaleError, match="image_id 999") as err:
        score_files(gt_path, dets_path)
    assert "\n" not in str(err.value)
    dets_path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": "high"}]))
    with pytest.raises(FinescaleError, match="score"):
        score_files(gt_path, dets_path)
    dets_path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(FinescaleError, match="JSON list"):
        score_files(gt_path, dets_path)
    gt_path.write_text("[]")
    with pytest.raises(FinescaleError, match="JSON object"):
        score_files(gt_path, tmp_path / "missing.json")
    with pytest.raises(FinescaleError, match="does not exist"):
        score_files(tmp_path / "missing.json", dets_path)


def test_plots_write_pngs(tmp_path: Path) -> None:
    from PIL import Image

    gt, dets = random_case(n_images=6, n_dets=60, seed=5)
    rng = np.random.default_rng(0)
    paths = {}
    for img in gt["images"]:
        paths[img["id"]] = tmp_path / img["file_name"]
        Image.fromarray(rng.integers(0, 255, (720, 256, 3), dtype=np.uint8)).save(paths[img["id"]])
    ev = evaluate_coco(gt, dets, backend="pycocotools")
    rows = efficiency_table(gt, coco_metrics(gt, dets, backend="pycocotools"))
    outputs = [
        plot_class_ap(rows, tmp_path / "ap.png"),
        plot_pr_curves(ev, tmp_path / "pr.png"),
        plot_detection_examples(paths, gt, dets, tmp_path / "examples.png", per_class=2),
    ]
    for out in outputs:
        assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 5000
