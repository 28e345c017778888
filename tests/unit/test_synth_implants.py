"""Procedural implant radiographs: catalogue invariants, rendering geometry, dataset writing and determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from finescale.synth.implants import (
    CATALOGUE,
    combinations,
    generate_implants,
    get_model,
    held_out_combinations,
    render_radiograph,
)

LENGTH_BINS = [float(x) for x in np.round(np.arange(6.0, 16.0 + 1e-6, 0.5), 1)]


def _axis_extent_px(img: np.ndarray, info: dict, diameter_px: float) -> float:
    """Bright run along the implant axis measured on the image (max over a central band so a hollow connection
    does not break it), with each end thresholded at 30% between the local background and the implant level."""
    (tx, ty), (bx, by) = info["axis_top_xy"], info["axis_bottom_xy"]
    length = float(np.hypot(bx - tx, by - ty))
    dx, dy = (bx - tx) / length, (by - ty) / length
    t = np.arange(-0.25 * length, 1.25 * length, 0.25)
    off = np.linspace(-0.3, 0.3, 7)[:, None] * diameter_px
    xs = (tx + t * dx - off * dy).astype(np.float32)
    ys = (ty + t * dy + off * dx).astype(np.float32)
    prof = cv2.remap(img.astype(np.float32), xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).max(0)
    prof = np.convolve(prof, np.ones(5) / 5, mode="same")
    inside = np.median(prof[(t > 0.2 * length) & (t < 0.8 * length)])
    w0, w1 = 0.3 / info["mm_per_px"], 1.2 / info["mm_per_px"]
    top_bg = np.median(prof[(t > -w1) & (t < -w0)])
    bot_bg = np.median(prof[(t > length + w0) & (t < length + w1)])
    lo = hi = int(np.argmin(np.abs(t - 0.5 * length)))
    while lo > 0 and prof[lo - 1] > top_bg + 0.3 * (inside - top_bg):
        lo -= 1
    while hi < len(t) - 1 and prof[hi + 1] > bot_bg + 0.3 * (inside - bot_bg):
        hi += 1
    return float(t[hi] - t[lo])


# ----------------------------------------------------------------------------------------------------- catalogue


def test_catalogue_invariants():
    assert len(CATALOGUE) >= 15
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)
    per_company = Counter(m.company for m in CATALOGUE)
    assert len(per_company) >= 6
    assert all(2 <= k <= 4 for k in per_company.values())
    for m in CATALOGUE:
        assert m.name.startswith(m.company)
        assert 0.6 <= m.pitch_mm <= 1.25
        assert m.body in ("parallel", "tapered")
        assert m.thread_profile in ("v", "square", "buttress")
        assert 0.25 <= m.thread_depth_mm <= 0.5
        assert 0.4 <= m.collar_mm <= 2.0
        assert 1.0 <= m.collar_flare <= 1.15
        assert m.apex in ("rounded", "flat", "pointed")
        assert 0.5 <= m.apex_mm <= 2.0
        assert m.lengths_mm and all(6.0 <= x <= 16.0 and (x * 2).is_integer() for x in m.lengths_mm)
        assert m.diameters_mm and all(3.0 <= d <= 6.0 for d in m.diameters_mm)
        assert all(type(x) is float for x in m.lengths_mm + m.diameters_mm)
        # at least one full thread fits in the shortest implant
        assert min(m.lengths_mm) - m.collar_mm - m.apex_mm > m.pitch_mm
    for b in LENGTH_BINS:
        assert sum(b in m.lengths_mm for m in CATALOGUE) >= 2, b
    assert len({m.pitch_mm for m in CATALOGUE}) >= 6
    assert min(m.pitch_mm for m in CATALOGUE) <= 0.7 and max(m.pitch_mm for m in CATALOGUE) >= 1.2


def test_held_out_combinations():
    held = held_out_combinations()
    frac = len(held) / len(combinations())
    assert 0.05 <= frac <= 0.11
    assert held <= set(combinations())
    for m in CATALOGUE:  # every model keeps trainable combinations
        assert any(c[0] == m.name and c not in held for c in combinations())


# ----------------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", ["Nordent Tapered TX", "Kalyx Helix H", "Brennar Cylinder Q", "Titanor Max"])
def test_render_shape_box_and_brightness(name):
    m = get_model(name)
    img, info = render_radiograph(m, m.lengths_mm[-1], m.diameters_mm[-1], np.random.default_rng([1, 2]), size=384)
    assert img.dtype == np.uint8 and img.shape == (384, 384)
    x0, y0, x1, y1 = info["implant_box_xyxy"]
    assert 0 <= x0 < x1 <= 384 and 0 <= y0 < y1 <= 384
    for key in ("mm_per_px", "tilt_deg", "axis_top_xy", "axis_bottom_xy"):
        assert key in info
    assert abs(info["tilt_deg"]) <= 8.0
    inside = np.zeros(img.shape, bool)
    inside[y0:y1, x0:x1] = True
    # central band along the axis is metal; everything outside the box is background
    (tx, ty), (bx, by) = info["axis_top_xy"], info["axis_bottom_xy"]
    ts = np.linspace(0.1, 0.9, 50)
    axis_vals = img[np.round(ty + ts * (by - ty)).astype(int), np.round(tx + ts * (bx - tx)).astype(int)]
    assert axis_vals.mean() > img[~inside].mean() + 30


def test_render_other_size():
    m = get_model("Nordent Parallel PX")
    img, info = render_radiograph(m, 16.0, 4.8, np.random.default_rng(3), size=192)
    assert img.shape == (192, 192) and img.dtype == np.uint8
    x0, y0, x1, y1 = info["implant_box_xyxy"]
    assert 0 <= x0 < x1 <= 192 and 0 <= y0 < y1 <= 192


def test_pixel_length_varies_with_spacing_and_matches_mm_length():
    m = get_model("Titanor Classic")  # rounded apex: its tip is not thinned out like a pointed one
    length, diameter = 12.0, 3.75
    lengths_px, errors = [], []
    for seed in range(8):
        img, info = render_radiograph(m, length, diameter, np.random.default_rng([seed, 0]))
        expected = length / info["mm_per_px"]
        lengths_px.append(expected)
        measured = _axis_extent_px(img, info, diameter / info["mm_per_px"])
        errors.append(measured / expected - 1.0)
        (tx, ty), (bx, by) = info["axis_top_xy"], info["axis_bottom_xy"]
        assert np.hypot(bx - tx, by - ty) == pytest.approx(expected, rel=1e-6)
    assert max(lengths_px) / min(lengths_px) > 1.2  # same mm length, very different pixel lengths
    assert max(abs(e) for e in errors) < 0.05, errors


@pytest.mark.parametrize("model", CATALOGUE, ids=lambda m: m.name)
def test_measured_extent_every_model(model):
    """Non-pointed apices end within 5 %; a pointed tip is thin, so its last fraction of a mm fades (10 %)."""
    tol = 0.10 if model.apex == "pointed" else 0.05
    length, diameter = model.lengths_mm[len(model.lengths_mm) // 2], model.diameters_mm[0]
    img, info = render_radiograph(model, length, diameter, np.random.default_rng([11, 0]))
    measured = _axis_extent_px(img, info, diameter / info["mm_per_px"])
    assert abs(measured * info["mm_per_px"] / length - 1.0) < tol


def test_render_deterministic_per_rng():
    m = CATALOGUE[5]
    a, ia = render_radiograph(m, m.lengths_mm[0], m.diameters_mm[0], np.random.default_rng([4, 4]))
    b, ib = render_radiograph(m, m.lengths_mm[0], m.diameters_mm[0], np.random.default_rng([4, 4]))
    assert np.array_equal(a, b) and ia == ib


# ----------------------------------------------------------------------------------------------------- datasets


def _digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_generate_implants_manifests_and_determinism(tmp_path):
    summary = generate_implants(tmp_path / "a", n=40, seed=7, workers=1)
    assert sum(summary["counts"].values()) == 40
    assert summary["test_only_combinations"] == len(held_out_combinations())

    held = held_out_combinations()
    names = {m.name: m for m in CATALOGUE}
    seen_images = set()
    records = {}
    for split in ("train", "val", "test"):
        path = tmp_path / "a" / f"{split}.json"
        data = json.loads(path.read_text())
        assert len(data) == summary["counts"][split]
        records[split] = data
        for r in data:
            assert set(r) == {"image", "length_mm", "diameter_mm", "company", "model"}
            assert (path.parent / r["image"]).is_file()
            assert r["image"] not in seen_images
            seen_images.add(r["image"])
            m = names[r["model"]]
            assert r["company"] == m.company
            assert type(r["length_mm"]) is float and r["length_mm"] in m.lengths_mm
            assert type(r["diameter_mm"]) is float and r["diameter_mm"] in m.diameters_mm
            combo = (r["model"], r["length_mm"], r["diameter_mm"])
            if split != "test":
                assert combo not in held
    assert {r["model"] for r in records["train"]} == set(names)  # every model is trainable
    img = cv2.imread(str(tmp_path / "a" / records["train"][0]["image"]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (384, 384)

    generate_implants(tmp_path / "b", n=40, seed=7, workers=1)
    generate_implants(tmp_path / "c", n=40, seed=8, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_generate_workers_do_not_change_results(tmp_path):
    generate_implants(tmp_path / "serial", n=64, seed=3, size=96, workers=1)
    generate_implants(tmp_path / "pool", n=64, seed=3, size=96, workers=2)
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "pool")


def test_generate_rejects_bad_split(tmp_path):
    with pytest.raises(ValueError):
        generate_implants(tmp_path, n=2, split=(0.5, 0.5))  # type: ignore[arg-type]
