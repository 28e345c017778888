import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from finescale.config import TrainerConfig
from finescale.pipelines.puzzle.config import PuzzleConfig, PuzzleDataConfig
from finescale.pipelines.puzzle.data import PuzzleDataModule, PuzzleDataset, load_records, rand_dihedral

MARGIN = 8
GOOD = [([40, 30, 88, 80], 0), ([300, 200, 350, 246], 1), ([420, 300, 470, 350], 2), ([150, 120, 196, 170], 3)]
CFG = {"piece_pixels": 48, "piece_window": 56, "window": 128}


def write_puzzle(root: Path) -> Path:
    """A 360 x 480 photo as the puzzle, pieces = rot90 of box regions on a flat background, plus bad records."""
    (root / "pieces").mkdir(parents=True)
    puzzle = cv2.resize(skimage.data.astronaut(), (480, 360), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "puzzle.jpg"), puzzle[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    records = []
    for i, ((x1, y1, x2, y2), k) in enumerate(GOOD):
        region = np.rot90(puzzle[y1:y2, x1:x2], k)
        photo = np.full((region.shape[0] + 2 * MARGIN, region.shape[1] + 2 * MARGIN, 3), 90, np.uint8)
        photo[MARGIN:-MARGIN, MARGIN:-MARGIN] = region
        cv2.imwrite(str(root / "pieces" / f"{i}.png"), photo[..., ::-1])
        records.append({"puzzle": "puzzle.jpg", "piece": f"pieces/{i}.png", "box": [x1, y1, x2, y2], "rotation": k})
    bad = [
        {"piece": "pieces/missing.png"},
        {"box": [1, 2, 3]},
        {"box": [50, 50, 40, 60]},
        {"rotation": 5},
        {"box": [440, 300, 600, 350]},
    ]
    records += [{**records[0], **change} for change in bad]
    path = root / "manifest.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_puzzle(tmp_path_factory.mktemp("puzzle"))


def test_bad_records_are_skipped_with_counts(manifest: Path):
    loaded = load_records(manifest)
    assert loaded.n_valid == 4 and loaded.n_total == 9
    assert loaded.skipped == {
        "missing_file": 1,
        "bad_box": 1,
        "degenerate_box": 1,
        "out_of_range": 1,
        "box_outside_image": 1,
    }


def content_match(item: dict, turns: int) -> float:
    """Correlation between the window's box region and the piece's content turned back by ``turns``."""
    window = item["puzzle"].permute(1, 2, 0).numpy().mean(axis=2)
    side = window.shape[0]
    x1, y1, x2, y2 = (item["box"].numpy() * side).round().astype(int)
    region = window[y1:y2, x1:x2]
    piece = item["piece"].permute(1, 2, 0).numpy().mean(axis=2)
    h, w = region.shape if turns % 2 == 0 else region.shape[::-1]
    top, left = (piece.shape[0] - h) // 2, (piece.shape[1] - w) // 2
    content = np.rot90(piece[top + 2 : top + h - 2, left + 2 : left + w - 2], -turns)
    region = region[2:-2, 2:-2]
    content = cv2.resize(np.ascontiguousarray(content), region.shape[::-1])
    return float(np.corrcoef(region.ravel(), content.ravel())[0, 1])


@pytest.mark.parametrize(("train", "piece_input"), [(False, "photo"), (True, "photo"), (False, "cutout")])
def test_window_holds_the_piece_at_the_shared_scale(manifest: Path, train: bool, piece_input: str):
    records = load_records(manifest).records
    torch.manual_seed(0)
    dataset = PuzzleDataset(records, PuzzleDataConfig(**CFG, piece_input=piece_input), train=train)
    region_sides = [max(y2 - y1, x2 - x1) for (x1, y1, x2, y2), _ in GOOD]
    if piece_input == "photo":  # the photo's table margin counts
        assert next(iter(dataset.scales.values())) == pytest.approx(48 / (np.median(region_sides) + 2 * MARGIN))
    else:  # the cutout is the piece alone: its side is the region's (up to the mask's edge pixels)
        assert next(iter(dataset.scales.values())) == pytest.approx(48 / np.median(region_sides), rel=0.05)
    for _ in range(3):
        for index, record in enumerate(records):
            item = dataset[index]
            assert item["puzzle"].shape == (3, 128, 128) and item["piece"].shape == (3, 56, 56)
            box = item["box"]
            assert torch.all((box >= -1e-6) & (box <= 1 + 1e-6)) and box[2] > box[0] and box[3] > box[1]
            k = int(item["rotation"])
            if not train:  # training windows may be flipped and turned on top
                back = box.numpy() * 128 / float(item["scale"]) + np.tile(item["origin"].numpy(), 2)
                np.testing.assert_allclose(back, record["box"], atol=1e-3)
                assert k == record["rotation"]
                assert float(item["scale"]) == pytest.approx(dataset.scales[record["puzzle"]])
            scores = [content_match(item, t) for t in range(4)]
            assert scores[k] > 0.75 and scores[k] == max(scores), scores


def test_dihedral_augmentation_keeps_the_pair_consistent():
    rng = np.random.default_rng(0)
    region = rng.random((5, 7, 3))
    window = np.zeros((16, 16, 3))
    window[3:8, 6:13] = region
    for seed in range(12):
        piece = np.rot90(region, seed % 4)
        out_window, box, out_piece, k = rand_dihedral(window, np.array([6.0, 3, 13, 8]), piece, seed % 4, rng)
        x1, y1, x2, y2 = box.astype(int)
        np.testing.assert_array_equal(np.rot90(out_piece, -k), out_window[y1:y2, x1:x2])


def test_validation_items_are_fixed_and_cache_changes_nothing(manifest: Path):
    records = load_records(manifest).records
    cached = PuzzleDataset(records, PuzzleDataConfig(**CFG, cache=True), train=False)
    lazy = PuzzleDataset(records, PuzzleDataConfig(**CFG, cache=False), train=False)
    for index in range(len(records)):
        a, b = cached[index], lazy[index]
        for key in a:
            torch.testing.assert_close(a[key], b[key])
        torch.testing.assert_close(a["origin"], cached[index]["origin"])


def test_fixed_scale_mode_shows_the_whole_puzzle(manifest: Path):
    records = load_records(manifest).records
    cfg = PuzzleDataConfig(scale_mode="fixed", puzzle_size=128, piece_size=64)
    dataset = PuzzleDataset(records, cfg, train=False)
    item = dataset[1]
    assert item["puzzle"].shape == (3, 128, 128) and item["piece"].shape == (3, 64, 64)
    assert float(item["scale"]) == pytest.approx(128 / 480) and item["origin"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(item["box"].numpy() * 128 / float(item["scale"]), records[1]["box"], atol=1e-3)


def test_data_module_serves_batches(manifest: Path):
    cfg = PuzzleConfig(
        train_json=manifest,
        val_json=manifest,
        data=PuzzleDataConfig(**CFG),
        trainer=TrainerConfig(batch_size=2),
    )
    module = PuzzleDataModule(cfg)
    module.setup("fit")
    assert module.manifests["train"].skipped["bad_box"] == 1
    batch = next(iter(module.train_dataloader()))
    assert batch["piece"].shape == (2, 3, 56, 56) and batch["puzzle"].shape == (2, 3, 128, 128)
    assert batch["box"].shape == (2, 4) and batch["rotation"].dtype == torch.long
    assert batch["scale"].shape == (2,) and batch["origin"].shape == (2, 2)
