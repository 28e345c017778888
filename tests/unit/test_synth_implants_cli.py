"""``finescale synth implants`` through the real console entry point: the files it writes follow its options, and
the same seed gives the same bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from tests.conftest import finescale

from finescale.synth.implants import CATALOGUE, generate_implants

N, SIZE = 12, 64


def digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def synth(out: Path, seed: int) -> dict:
    result = finescale("synth", "implants", "--out", out, "--n", N, "--seed", seed, "--size", SIZE)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_synth_implants_writes_manifests_and_images_and_repeats_byte_for_byte(tmp_path: Path):
    summary = synth(tmp_path / "a", seed=3)
    root = tmp_path / "a"
    manifests = {split: json.loads((root / f"{split}.json").read_text()) for split in ("train", "val", "test")}
    assert summary["counts"] == {split: len(records) for split, records in manifests.items()}
    assert sum(summary["counts"].values()) == N
    records = [r for split in manifests.values() for r in split]
    images = sorted(r["image"] for r in records)
    assert len(set(images)) == N  # one image per record, no record twice
    assert sorted(str(p.relative_to(root)) for p in (root / "images").iterdir()) == images  # and nothing else
    models = {m.name: m for m in CATALOGUE}
    for r in records:
        assert set(r) == {"image", "length_mm", "diameter_mm", "company", "model"}
        m = models[r["model"]]
        assert r["company"] == m.company and r["length_mm"] in m.lengths_mm and r["diameter_mm"] in m.diameters_mm
        image = cv2.imread(str(root / r["image"]), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE)  # --size reached the renderer

    synth(tmp_path / "b", seed=3)
    synth(tmp_path / "c", seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    # the command writes what the library writes for the same options (its --seed, --n and --size are passed on)
    generate_implants(tmp_path / "library", n=N, seed=3, size=SIZE, workers=1)
    assert digest(tmp_path / "library") == digest(root)
