"""Procedural jigsaw puzzles: manifests, split by source photo, determinism, piece content, user photo folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.conftest import finescale

from finescale.errors import FinescaleError
from finescale.synth.jigsaw import make_cut
from finescale.synth.photos import SPLITS, deal_photos
from finescale.synth.puzzles import generate_puzzles

TINY = {"n": 24, "seed": 0, "full_size_fraction": 0.0, "pieces_per_puzzle": 4, "workers": 1}


@pytest.fixture(scope="module")
def puzzles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("puzzles")
    return out, generate_puzzles(out, **TINY)


def _records(root: Path) -> dict[str, list[dict]]:
    return {s: json.loads((root / f"{s}.json").read_text()) for s in SPLITS}


def _rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1]


def test_manifest_fields_and_ranges(puzzles):
    root, summary = puzzles
    records = _records(root)
    assert {s: len(r) for s, r in records.items()} == summary["counts"]
    assert sum(summary["counts"].values()) == TINY["n"]
    assert all(summary["counts"][s] > 0 for s in SPLITS)
    for rec in (r for recs in records.values() for r in recs):
        assert rec["puzzle"].startswith("puzzles/") and rec["puzzle"].endswith(".jpg")
        assert rec["piece"].startswith("pieces/") and rec["piece"].endswith(".png")
        assert rec["rotation"] in (0, 1, 2, 3) and isinstance(rec["rotation"], int)
        x1, y1, x2, y2 = rec["box"]
        w, h = rec["puzzle_size"]
        assert all(isinstance(v, int) for v in rec["box"])
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert 40 <= x2 - x1 <= 200 and 40 <= y2 - y1 <= 200  # 60-110 px cells plus tabs
        assert abs(rec["angle_deg"]) <= 4.0 and 0.9 <= rec["scale"] <= 1.1
        piece = cv2.imread(str(root / rec["piece"]), cv2.IMREAD_UNCHANGED)
        assert piece.ndim == 3 and piece.shape[2] == 3 and piece.dtype == np.uint8
    first = records["train"][0]
    assert _rgb(root / first["puzzle"]).shape[:2] == tuple(first["puzzle_size"][::-1])


def test_split_by_source_photo(puzzles):
    root, summary = puzzles
    photos = [set(summary["photos"][s]) for s in SPLITS]
    assert all(photos) and not (photos[0] & photos[1] or photos[0] & photos[2] or photos[1] & photos[2])
    for s, recs in _records(root).items():
        used = set().union(*(r["sources"] for r in recs))
        assert used <= set(summary["photos"][s]), s
    dealt = deal_photos([f"p{i}" for i in range(10)], (0.7, 0.1, 0.2), seed=3)
    assert [len(dealt[s]) for s in SPLITS] == [7, 1, 2]
    with pytest.raises(FinescaleError):
        deal_photos(["a", "b"], (0.7, 0.1, 0.2), seed=0)


def test_same_seed_same_bytes(puzzles, tmp_path):
    root, _ = puzzles
    generate_puzzles(tmp_path, **{**TINY, "workers": 2})
    rec = _records(root)["test"][0]
    for rel in ("train.json", "test.json", rec["puzzle"], rec["piece"]):
        assert (root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_piece_photo_shows_the_region_under_its_box(puzzles):
    """Undo the quarter turns: the piece's central patch must be found again inside its box, not elsewhere."""
    root, _ = puzzles
    rng = np.random.default_rng(0)
    true_scores, other_scores = [], []
    for rec in (r for recs in _records(root).values() for r in recs):
        puzzle = cv2.cvtColor(_rgb(root / rec["puzzle"]), cv2.COLOR_RGB2GRAY).astype(np.float32)
        photo = np.rot90(cv2.cvtColor(_rgb(root / rec["piece"]), cv2.COLOR_RGB2GRAY), -rec["rotation"])
        x1, y1, x2, y2 = rec["box"]
        side = int(0.3 * min(x2 - x1, y2 - y1))
        cy, cx = photo.shape[0] // 2, photo.shape[1] // 2
        patch = np.ascontiguousarray(photo[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2])
        patch = patch.astype(np.float32)
        if patch.std() < 4.0:  # a flat piece (sky, shadow) matches anywhere: nothing to test
            continue
        pad = 14
        region = puzzle[max(y1 - pad, 0) : y2 + pad, max(x1 - pad, 0) : x2 + pad]
        true_scores.append(cv2.matchTemplate(region, patch, cv2.TM_CCOEFF_NORMED).max())
        h, w = region.shape
        for _ in range(3):
            ox = int(rng.integers(0, puzzle.shape[1] - w))
            oy = int(rng.integers(0, puzzle.shape[0] - h))
            if abs(ox - x1) < 2 * w and abs(oy - y1) < 2 * h:
                continue
            other_scores.append(cv2.matchTemplate(puzzle[oy : oy + h, ox : ox + w], patch, cv2.TM_CCOEFF_NORMED).max())
    assert len(true_scores) >= 8
    assert np.median(true_scores) > 0.8
    assert np.median(true_scores) > np.median(other_scores) + 0.3


def test_jigsaw_pieces_tile_the_picture():
    cut = make_cut(400, 300, 70, np.random.default_rng(1))
    cover = np.zeros((300, 400), np.float32)
    for row in range(cut.rows):
        for col in range(cut.cols):
            alpha, (x0, y0) = cut.mask(row, col)
            cover[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] += alpha / 255.0
            x1, y1, x2, y2 = cut.box(row, col)
            assert x2 - x1 > 70 * 0.9 and y2 - y1 > 70 * 0.9
    assert cover.min() > 0.9 and np.abs(cover - 1.0).mean() < 0.02
    edge = cut.h_edge(1, 1)
    assert len(edge) > 10 and np.allclose(edge[0], cut.corners[1, 1]) and np.allclose(edge[-1], cut.corners[1, 2])


def test_images_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        smooth = cv2.resize(
            rng.uniform(0, 255, (12, 16, 3)).astype(np.float32), (320, 240), interpolation=cv2.INTER_CUBIC
        )
        img = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(photos / f"photo{i}.png"), img)
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("ignored")
    summary = generate_puzzles(tmp_path / "out", n=6, seed=1, images=photos, full_size_fraction=0.0, workers=1)
    names = {f"photo{i}.png" for i in range(4)}
    assert set().union(*map(set, summary["photos"].values())) == names
    for recs in _records(tmp_path / "out").values():
        for rec in recs:
            assert set(rec["sources"]) <= names and (tmp_path / "out" / rec["piece"]).is_file()


def test_errors_are_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FinescaleError, match="no readable image"):
        generate_puzzles(tmp_path / "out", n=5, images=tmp_path / "empty")
    with pytest.raises(FinescaleError, match="at least 1"):
        generate_puzzles(tmp_path / "out", n=0)
    result = finescale("synth", "puzzles", "--out", tmp_path / "out", "--images", tmp_path / "empty", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no readable image" in result.stderr
