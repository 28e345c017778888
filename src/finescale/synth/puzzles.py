"""Procedural jigsaw puzzles: a puzzle picture, and photos of some of its pieces lying on a table.

Each record says where the piece lies in the picture (``box``) and how it was turned (``rotation``). The task is
hard in the way the puzzle seed describes: a full-size picture is about 3000 x 2000 pixels while a piece covers
about 0.1 % of it, at the picture's own pixel scale (+-10 %), so the piece can only be found by its fine detail.

Rotation convention: ``rotation = k`` means the piece photo shows ``np.rot90(region, k)`` (k quarter turns
counter-clockwise on screen) of the puzzle region under ``box``, then turned by a further small ``angle_deg``
(positive = counter-clockwise, within +-4 degrees), scaled by ``scale`` (0.9-1.1), warped by a mild perspective and
photographed (white balance, exposure, blur, noise, JPEG) on a textured table.

Splits are by source photo: the photos are shuffled once (``default_rng([seed])``) and dealt to train/val/test
first; every picture of a split is built only from its split's photos, so no test photo is ever seen in training.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from functools import lru_cache, partial
from pathlib import Path

import cv2
import numpy as np

from finescale.errors import FinescaleError
from finescale.synth.jigsaw import coverage_box, make_cut
from finescale.synth.photos import SPLITS, deal_photos, load_photos

FULL_SIZE = (3000, 2000)


def _cuts(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``parts`` + 1 integer positions from 0 to ``total``, each part at least half the mean width."""
    w = rng.uniform(0.5, 1.5, parts)
    return np.round(np.concatenate([[0.0], np.cumsum(w / w.sum())]) * total).astype(int)


def add_fine_detail(tile: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Give a zoomed-in float32 RGB tile the fine texture a real high-resolution photo would have.

    Band-limited noise (features of 1-6 px) is added to the luminance, scaled by the tile's local contrast, so
    textured areas gain detail while flat areas (sky, walls) get only a faint grain and stay hard to place. Without
    it a picture made from small photos holds nothing below the source's resolution and a 4x-reduced puzzle would
    lose no information, which is not what makes real puzzles hard.
    """
    h, w = tile.shape[:2]
    small = cv2.resize(
        cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY), (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA
    )
    mean = cv2.GaussianBlur(small, (0, 0), 0.75)
    contrast = np.sqrt(np.maximum(cv2.GaussianBlur(small * small, (0, 0), 0.75) - mean * mean, 0.0))
    amplitude = cv2.resize(12.0 * strength * np.clip(contrast / 20.0, 0.1, 1.0), (w, h), interpolation=cv2.INTER_LINEAR)
    white = rng.standard_normal((h, w), dtype=np.float32)
    fine = cv2.GaussianBlur(white, (0, 0), 0.8)
    coarse = cv2.GaussianBlur(white, (0, 0), 2.5)
    noise = fine / (fine[::4, ::4].std() + 1e-6) + 0.5 * coarse / (coarse[::4, ::4].std() + 1e-6)
    tile += (amplitude * noise / 1.118)[..., None]  # 1.118 = std of the sum of the two unit bands (nearly independent)
    return tile


def build_picture(
    photos: list[np.ndarray], width: int, height: int, rng: np.random.Generator, full: bool = False
) -> tuple[np.ndarray, list[int]]:
    """A ``height`` x ``width`` RGB puzzle picture: one photo, or a mosaic of 2-4 tiles (4-9 when ``full``), each a
    random crop of a source photo, zoomed to fill its tile, maybe mirrored and tinted. Returns (picture, indices of
    the photos used).

    Photos are dealt to tiles from a random permutation; a photo that must serve m tiles is first cut into m
    disjoint strips along its long side, so no content ever appears twice in one picture.
    """
    if full:
        nx, ny = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    elif rng.random() < 0.35:
        nx = ny = 1
    else:
        nx, ny = [(1, 2), (2, 1), (2, 2), (3, 1), (3, 2)][int(rng.integers(5))]
        if height > width:
            nx, ny = ny, nx
    xs, ys = _cuts(width, nx, rng), _cuts(height, ny, rng)
    order = rng.permutation(len(photos))
    assigned = [int(order[t % len(photos)]) for t in range(nx * ny)]
    seen: dict[int, int] = {}
    picture = np.empty((height, width, 3), np.uint8)
    for t, idx in enumerate(assigned):
        i, j = t % nx, t // nx
        tw, th = int(xs[i + 1] - xs[i]), int(ys[j + 1] - ys[j])
        part, parts = seen.get(idx, 0), assigned.count(idx)
        seen[idx] = part + 1
        photo = photos[idx]
        ph, pw = photo.shape[:2]
        if pw >= ph:  # the strip of this use: (left, top, width, height) in photo pixels
            sx, sy, sw, sh = part * pw / parts, 0.0, pw / parts, float(ph)
        else:
            sx, sy, sw, sh = 0.0, part * ph / parts, float(pw), ph / parts
        zoom = max(tw / sw, th / sh) * rng.uniform(1.0, 1.3)
        cw, ch = tw / zoom, th / zoom
        cx, cy = sx + rng.uniform(0, sw - cw), sy + rng.uniform(0, sh - ch)
        crop = photo[
            int(cy) : max(int(math.ceil(cy + ch)), int(cy) + 1), int(cx) : max(int(math.ceil(cx + cw)), int(cx) + 1)
        ]
        interp = cv2.INTER_CUBIC if zoom > 1 else cv2.INTER_AREA
        tile = cv2.resize(crop, (tw, th), interpolation=interp).astype(np.float32)
        if zoom > 1.2:
            tile = add_fine_detail(tile, min((zoom - 1.0) / 2.0, 1.0), rng)
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
        tile *= rng.uniform(0.92, 1.08, 3).astype(np.float32)
        picture[ys[j] : ys[j + 1], xs[i] : xs[i + 1]] = np.clip(tile, 0, 255)
    return picture, assigned


def _smooth_noise(h: int, w: int, cells: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise with features about ``cells`` px wide (a small random grid, upsampled)."""
    gh, gw = max(2, int(h / cells) + 2), max(2, int(w / cells) + 2)
    return cv2.resize(rng.standard_normal((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def table_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 RGB table surface in [0, 255]: wood grain, woven cloth or a mottled plain top, in a random colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    kind = rng.choice(["wood", "cloth", "plain"])
    if kind == "wood":
        warp = 6.0 * _smooth_noise(h, w, 25, rng)
        pattern = 0.5 + 0.5 * np.sin((v + warp) * rng.uniform(0.25, 0.6))
        pattern += 0.15 * _smooth_noise(h, w, 3, rng)
    elif kind == "cloth":
        f = rng.uniform(0.9, 1.6)
        pattern = 0.5 + 0.25 * (np.sin(u * f) + np.sin(v * f)) + 0.2 * _smooth_noise(h, w, 2, rng)
    else:
        pattern = 0.5 + 0.35 * _smooth_noise(h, w, 12, rng) + 0.1 * rng.standard_normal((h, w)).astype(np.float32)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(20, 200), rng.integers(60, 230)]]])
    base = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(3).astype(np.float32)
    second = base * rng.uniform(0.55, 0.9)
    return np.clip(base + (second - base) * pattern[..., None], 0, 255)


def photograph_piece(
    picture: np.ndarray, alpha: np.ndarray, origin: tuple[int, int], k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Photograph the piece cut from ``picture`` by ``alpha`` (uint8 window at ``origin`` = (x0, y0)) after ``k``
    counter-clockwise quarter turns. Returns (uint8 RGB photo, float32 piece coverage in the photo, info with
    ``angle_deg`` and ``scale``)."""
    x0, y0 = origin
    h, w = alpha.shape
    region = np.rot90(picture[y0 : y0 + h, x0 : x0 + w], k).astype(np.float32)
    a = np.rot90(alpha, k).astype(np.float32) / 255.0
    h, w = a.shape
    angle, scale = float(rng.uniform(-4.0, 4.0)), float(rng.uniform(0.9, 1.1))
    rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src @ rot[:, :2].T + rot[:, 2] + rng.uniform(-0.03, 0.03, (4, 2)) * max(w, h)
    margin = rng.uniform(6, 20, 4)  # left, top, right, bottom, in pixels
    dst += margin[:2] - dst.min(0)
    size = (int(np.ceil(dst[:, 0].max() + margin[2])), int(np.ceil(dst[:, 1].max() + margin[3])))
    hom = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    piece = cv2.warpPerspective(region, hom, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(a, hom, size, flags=cv2.INTER_LINEAR)

    table = table_texture(size[1], size[0], rng)
    shadow = cv2.GaussianBlur(np.roll(cover, (2, 2), axis=(0, 1)), (0, 0), 2.0)
    table *= 1.0 - rng.uniform(0.15, 0.4) * shadow[..., None]
    photo = cover[..., None] * piece + (1.0 - cover[..., None]) * table
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    light = 1.0 + rng.uniform(-0.08, 0.08) * (xx / size[0] - 0.5) + rng.uniform(-0.08, 0.08) * (yy / size[1] - 0.5)
    photo *= (light * rng.uniform(0.8, 1.2))[..., None] * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    photo = 255.0 * (np.clip(photo, 0, 255) / 255.0) ** rng.uniform(0.85, 1.15)
    photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.3, 1.0))
    photo += rng.normal(0.0, rng.uniform(1.0, 4.0), photo.shape).astype(np.float32)
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    quality = int(rng.integers(70, 96))
    ok, buf = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    photo = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(photo), cover, {"angle_deg": angle, "scale": scale}


def _picture_size(full: bool, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): about 3000 x 2000 when ``full``, else 768-1536 px wide; a quarter of them in portrait."""
    if full:
        long = int(rng.integers(FULL_SIZE[0] - 200, FULL_SIZE[0] + 201))
        short = int(round(long / rng.uniform(1.4, 1.6)))
    else:
        long = int(rng.integers(768, 1537))
        short = int(round(long / rng.uniform(1.3, 1.6)))
    return (short, long) if rng.random() < 0.25 else (long, short)


@lru_cache(maxsize=1)
def _cached_photos(images: str | None) -> dict[str, np.ndarray]:
    """:func:`load_photos` kept for the duration of one generation (forked workers inherit it)."""
    return load_photos(images)


def _make_puzzle(job: tuple[int, int, bool, tuple[str, ...]], seed: int, images: str | None, out: Path) -> list[dict]:
    """Build puzzle ``index`` from the photos ``names`` and photograph ``count`` of its pieces; write them and return
    their records. ``job`` = (index, count, full size?, names); everything derives from ``default_rng([seed, index])``.
    """
    index, count, full, names = job
    photos = _cached_photos(images)
    rng = np.random.default_rng([seed, index])
    width, height = _picture_size(full, rng)
    picture, used = build_picture([photos[n] for n in names], width, height, rng, full)
    cut = make_cut(width, height, rng.uniform(60, 110), rng)
    name = f"{index:05d}"
    if not cv2.imwrite(str(out / "puzzles" / f"{name}.jpg"), picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"could not write {out / 'puzzles' / name}.jpg")
    cells = rng.choice(cut.rows * cut.cols, size=min(count, cut.rows * cut.cols), replace=False)
    records = []
    for cell in sorted(int(c) for c in cells):
        row, col = divmod(cell, cut.cols)
        alpha, origin = cut.mask(row, col)
        k = int(rng.integers(4))
        photo, _, info = photograph_piece(picture, alpha, origin, k, rng)
        piece = f"pieces/{name}_{cell}.png"
        if not cv2.imwrite(str(out / piece), photo[..., ::-1]):
            raise OSError(f"could not write {out / piece}")
        records.append(
            {
                "puzzle": f"puzzles/{name}.jpg",
                "piece": piece,
                "box": coverage_box(alpha, origin),
                "rotation": k,
                "angle_deg": round(info["angle_deg"], 3),
                "scale": round(info["scale"], 4),
                "cell": [row, col],
                "grid": [cut.rows, cut.cols],
                "puzzle_size": [width, height],
                "sources": sorted({names[i] for i in used}),
            }
        )
    return records


def _allocate(n: int, split: tuple[float, float, float]) -> dict[str, int]:
    """Split ``n`` records by fractions with the largest-remainder rule."""
    share = np.asarray(split, float) / sum(split) * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return dict(zip(SPLITS, (int(c) for c in counts), strict=True))


def generate_puzzles(
    out: str | Path,
    n: int = 600,
    seed: int = 0,
    images: str | Path | None = None,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    full_size_fraction: float = 0.1,
    pieces_per_puzzle: int = 6,
    workers: int = 2,
) -> dict:
    """Write ``out/puzzles/*.jpg`` (JPEG quality 92), ``out/pieces/*.png`` and ``out/{train,val,test}.json``.

    Each manifest is a JSON list of records ``{"puzzle": "puzzles/00012.jpg", "piece": "pieces/00012_37.png",
    "box": [x1, y1, x2, y2], "rotation": k, ...}``: paths relative to the manifest; ``box`` = the piece's pixel
    bounding box in the picture, tabs included (ints, xyxy, exclusive max, so ``picture[y1:y2, x1:x2]`` is the
    region); ``rotation`` = quarter turns, the photo shows ``np.rot90(region, k)`` (see the module docstring).
    Extra keys: ``angle_deg``, ``scale``, ``cell`` [row, col], ``grid`` [rows, cols], ``puzzle_size`` [w, h] and
    ``sources`` (names of the source photos the picture was made of).

    ``n`` records in all, split by source photo; each puzzle gives ``pieces_per_puzzle`` records (fewer for the last
    of a split) and about ``full_size_fraction`` of each split's puzzles are full size (~3000 x 2000), the rest
    768-1536 px wide. Byte-for-byte deterministic in ``seed`` whatever ``workers`` is (each puzzle owns its RNG
    stream).
    """
    from rich.progress import track

    from finescale.console import stderr_console

    if n < 1:
        raise FinescaleError(f"--n must be at least 1, got {n}.")
    if not 0.0 <= full_size_fraction <= 1.0:
        raise FinescaleError(f"--full-size-fraction must lie in [0, 1], got {full_size_fraction}.")
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split must be three non-negative fractions, got {split}")
    if pieces_per_puzzle < 1:
        raise ValueError(f"pieces_per_puzzle must be at least 1, got {pieces_per_puzzle}")
    images = None if images is None else str(Path(images).resolve())
    photos = _cached_photos(images)
    dealt = deal_photos(sorted(photos), split, seed)
    out = Path(out)
    (out / "puzzles").mkdir(parents=True, exist_ok=True)
    (out / "pieces").mkdir(parents=True, exist_ok=True)

    jobs, splits = [], []  # (index, records, full size?, photo names), and the split of each job
    for which, count in _allocate(n, split).items():
        for j in range(math.ceil(count / pieces_per_puzzle)):
            full = math.floor((j + 1) * full_size_fraction) > math.floor(j * full_size_fraction)
            jobs.append((len(jobs), min(pieces_per_puzzle, count - j * pieces_per_puzzle), full, tuple(dealt[which])))
            splits.append(which)
    job = partial(_make_puzzle, seed=seed, images=images, out=out)
    bar = {"total": len(jobs), "description": f"Cutting {n} puzzle pieces", "console": stderr_console()}
    try:
        if workers > 1 and len(jobs) >= 8:
            # fork (workers inherit the loaded photos), with OpenCV's thread pool shut first: a forked child inherits
            # it half-alive and can deadlock in it. imap keeps the order, so the manifests do not depend on workers.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                with mp.get_context(method).Pool(workers) as pool:
                    results = list(track(pool.imap(job, jobs, chunksize=1), **bar))
            finally:
                cv2.setNumThreads(threads)
        else:
            results = [job(j) for j in track(jobs, **bar)]
    finally:
        _cached_photos.cache_clear()
    manifests: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for which, records in zip(splits, results, strict=True):
        manifests[which] += records
    for s in SPLITS:
        (out / f"{s}.json").write_text(json.dumps(manifests[s], indent=1) + "\n")
    sizes = [r["puzzle_size"] for recs in manifests.values() for r in recs]
    return {
        "out": str(out),
        "counts": {s: len(manifests[s]) for s in SPLITS},
        "puzzles": {s: splits.count(s) for s in SPLITS},
        "full_size_puzzles": sum(1 for j in jobs if j[2]),
        "photos": dealt,
        "largest_picture": max(sizes, key=lambda s: s[0] * s[1]),
        "smallest_picture": min(sizes, key=lambda s: s[0] * s[1]),
    }
