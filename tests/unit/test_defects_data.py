"""Tests for finescale.pipelines.defects.data: tool groups -> batches, masked views, the Soft Teacher loaders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from finescale.data.coco import load_coco
from finescale.errors import FinescaleError
from finescale.pipelines.defects.config import DefectsConfig
from finescale.pipelines.defects.data import DefectsDataModule, ToolGroups, collate_groups

CATEGORIES = [{"id": 1, "name": "Broken"}, {"id": 2, "name": "Chipped"}]
W0, H0 = 20, 40  # original image size
V = 3


def _write_set(root: Path, name: str, tools: int, *, labeled: bool = True, drop: tuple = ()) -> Path:
    """A COCO file of ``tools`` groups of V views: view v of tool t is coloured (R, G, B) = (10 t + v, 100, 200)
    with a left half brighter than the right; each labeled view has one box [2 + v, 4, 6, 12] (xyxy)."""
    images, anns = [], []
    for t in range(tools):
        for v in range(V):
            iid = 1 + t * V + v
            if (t, v) in drop:
                continue
            rgb = np.zeros((H0, W0, 3), np.uint8)
            rgb[:] = (10 * t + v, 100, 200)
            rgb[:, : W0 // 2, 1] = 150
            file_name = f"{name}/t{t}v{v}.png"
            (root / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / file_name), rgb[..., ::-1])  # OpenCV writes BGR
            images.append({"id": iid, "file_name": file_name, "width": W0, "height": H0, "group_id": t, "view": v})
            if labeled:
                anns.append({"id": iid, "image_id": iid, "category_id": 2, "bbox": [2 + v, 4, 4, 8], "iscrowd": 0})
    path = root / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


def test_views_resized_with_scaled_boxes(tmp_path: Path) -> None:
    coco = load_coco(_write_set(tmp_path, "train", 2), views=V)
    item = ToolGroups(coco, (20, 40))[1]  # H, W = 20, 40: sx = 2, sy = 0.5
    assert item["images"].shape == (V, 3, 20, 40) and item["images"].dtype == torch.float32
    assert item["view_mask"].all() and item["image_ids"].tolist() == [4, 5, 6]
    torch.testing.assert_close(item["scales"], torch.tensor([[2.0, 0.5]] * V))
    for v, target in enumerate(item["targets"]):
        torch.testing.assert_close(target["boxes"], torch.tensor([[2 * (2 + v), 2.0, 2 * (6 + v), 6.0]]))
        assert target["labels"].tolist() == [2] and target["labels"].dtype == torch.int64
    # RGB order: red channel carries 10 t + v, the left half is greener
    torch.testing.assert_close(item["images"][2, :, 0, -1], torch.tensor([12, 100, 200]) / 255.0)
    assert item["images"][0, 1, 0, 0] == pytest.approx(150 / 255)


def test_missing_and_unreadable_views_are_masked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    coco = load_coco(_write_set(tmp_path, "train", 2, drop=((0, 1),)), views=V)
    assert coco.skipped == {"missing_view": 1}
    (tmp_path / "train" / "t1v0.png").write_bytes(b"not a png")  # readable at load time, broken at training time
    (tmp_path / "train" / "t1v2.png").write_bytes(b"")
    data = ToolGroups(coco, (32, 16))
    with caplog.at_level(logging.WARNING, logger="finescale"):
        items = [data[0], data[1]]
    assert items[0]["view_mask"].tolist() == [True, False, True] and items[0]["image_ids"].tolist() == [1, -1, 3]
    assert items[1]["view_mask"].tolist() == [False, True, False] and items[1]["image_ids"].tolist() == [-1, 5, -1]
    assert items[0]["images"][1].abs().sum() == 0 and items[1]["images"][0].abs().sum() == 0
    assert items[0]["targets"][1]["boxes"].shape == (0, 4) and items[1]["targets"][2]["labels"].shape == (0,)
    warnings = [r for r in caplog.records if "masked" in r.getMessage()]
    assert len(warnings) == 1 and "t1v0.png" in warnings[0].getMessage()


def test_flip_moves_whole_tool_and_its_boxes(tmp_path: Path) -> None:
    coco = load_coco(_write_set(tmp_path, "train", 1), views=V)
    plain = ToolGroups(coco, (40, 20))[0]
    train = ToolGroups(coco, (40, 20), train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        item = train[0]
        flipped = not torch.equal(item["images"], plain["images"])
        seen.add(flipped)
        if flipped:
            torch.testing.assert_close(item["images"], plain["images"].flip(-1))
            for v, target in enumerate(item["targets"]):  # [2 + v, 4, 6 + v, 12] mirrored in a 20 px wide image
                torch.testing.assert_close(target["boxes"], torch.tensor([[14.0 - v, 4.0, 18.0 - v, 12.0]]))
        else:
            assert all(
                torch.equal(a["boxes"], b["boxes"]) for a, b in zip(item["targets"], plain["targets"], strict=True)
            )
    assert seen == {True, False}
    assert not ToolGroups(coco, (40, 20), train=True, flip=False).flip


def test_collate_is_view_major(tmp_path: Path) -> None:
    coco = load_coco(_write_set(tmp_path, "train", 2), views=V)
    data = ToolGroups(coco, (32, 16))
    batch = collate_groups([data[0], data[1]])
    assert batch["images"].shape == (2, V, 3, 32, 16) and batch["view_mask"].shape == (2, V)
    assert batch["image_ids"].tolist() == [[1, 2, 3], [4, 5, 6]] and batch["scales"].shape == (2, V, 2)
    assert len(batch["targets"]) == 2 * V
    torch.testing.assert_close(batch["targets"][1 * V + 2]["boxes"], data[1]["targets"][2]["boxes"])


def _config(tmp_path: Path, **semi: object) -> DefectsConfig:
    return DefectsConfig(
        train_json=tmp_path / "train.json",
        val_json=tmp_path / "val.json",
        data={"views": V, "image_height": 32, "image_width": 32, "unlabeled_json": semi.pop("unlabeled_json", None)},
        semi={"semi_supervised": semi.pop("semi_supervised", True), "unsup_ratio": 4},
        trainer={"batch_size": 2, "seed": 3},
    )


def test_supervised_datamodule(tmp_path: Path) -> None:
    _write_set(tmp_path, "train", 5)
    _write_set(tmp_path, "val", 3)
    dm = DefectsDataModule(_config(tmp_path, semi_supervised=False))
    dm.setup("fit")
    assert set(dm.manifests) == {"train", "val"} and dm.categories == ["Broken", "Chipped"]
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0]["images"].shape == (2, V, 3, 32, 32)  # 5 groups, last one dropped
    order = [b["image_ids"][:, 0].tolist() for b in batches]
    assert order == [b["image_ids"][:, 0].tolist() for b in dm.train_dataloader()]  # seeded shuffle
    val = list(dm.val_dataloader())
    assert [b["images"].shape[0] for b in val] == [2, 1] and val[0]["image_ids"][0].tolist() == [1, 2, 3]

    from finescale.engine.run import manifest_metrics

    metrics = manifest_metrics(dm.manifests)
    assert metrics["train_n_total"] == 15 and metrics["train_n_valid"] == 5 and metrics["val_n_valid"] == 3


def test_soft_teacher_batches_one_to_four(tmp_path: Path) -> None:
    _write_set(tmp_path, "train", 5)
    _write_set(tmp_path, "val", 2)
    _write_set(tmp_path, "unlabeled", 12, labeled=True)  # its annotations, if any, are not used
    dm = DefectsDataModule(_config(tmp_path, unlabeled_json=tmp_path / "unlabeled.json"))
    dm.setup("fit")
    loader = dm.train_dataloader()
    steps = list(loader)
    assert len(steps) == 2  # max_size_cycle: as long as the longer loader (5 // 2 = 2 labeled; 12 // 8 = 1 cycled)
    for batch, _, _ in steps:
        assert set(batch) == {"labeled", "unlabeled"}
        assert batch["labeled"]["images"].shape == (2, V, 3, 32, 32)
        assert batch["unlabeled"]["images"].shape == (8, V, 3, 32, 32)
        assert len(batch["unlabeled"]["targets"]) == 8 * V
        assert all(t["boxes"].shape == (0, 4) for t in batch["unlabeled"]["targets"])
        assert all(t["boxes"].shape == (1, 4) for t in batch["labeled"]["targets"])


def test_soft_teacher_without_unlabeled_file_names_the_flag(tmp_path: Path) -> None:
    _write_set(tmp_path, "train", 2)
    _write_set(tmp_path, "val", 2)
    with pytest.raises(FinescaleError, match="--unlabeled-json") as info:
        DefectsDataModule(_config(tmp_path)).setup("fit")
    assert "\n" not in str(info.value)


def test_validation_categories_must_match(tmp_path: Path) -> None:
    _write_set(tmp_path, "train", 2)
    val = _write_set(tmp_path, "val", 2)
    data = json.loads(val.read_text())
    data["categories"] = [{"id": 1, "name": "Broken"}, {"id": 2, "name": "Scratched"}]
    val.write_text(json.dumps(data))
    with pytest.raises(FinescaleError, match="categories"):
        DefectsDataModule(_config(tmp_path, semi_supervised=False)).setup("fit")
