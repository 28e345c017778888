"""Procedural dental-implant radiographs with a fictional catalogue of manufacturers and models.

The data is built to be honest and hard: pixel spacing varies per image (unknown magnification), so the implant's
pixel length alone does not give its length in mm. Only the model-specific thread pitch (thread count x pitch),
collar and apex heights tie the image to millimetres.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import zlib
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import cv2
import numpy as np

from finescale.synth import radiograph as rg

SPLITS = ("train", "val", "test")
TEST_ONLY_FRACTION = 0.08


@dataclass(frozen=True)
class ImplantModel:
    """One implant line of a (fictional) manufacturer; every geometric field is in mm unless noted."""

    company: str
    name: str
    pitch_mm: float
    body: str  # "parallel" | "tapered"
    thread_profile: str  # "v" | "square" | "buttress"
    thread_depth_mm: float
    collar_mm: float  # smooth collar height at the top
    collar_flare: float  # collar half-width / body half-width
    apex: str  # "rounded" | "flat" | "pointed"
    apex_mm: float  # unthreaded apex height
    lengths_mm: tuple[float, ...]
    diameters_mm: tuple[float, ...]


# Companies share a family trait (apex style) and differ by pitch, body and thread profile between models.
# lengths: "lo-hi" = 0.5 mm grid, "lo-hi:step" = other step, "a/b/c" = explicit list; diameters: "a/b/c".
_TABLE = """
company  |model        |pitch|body    |profile |depth|collar|flare|apex   |apex_mm|lengths        |diameters
Nordent  |Tapered TX   |0.80 |tapered |v       |0.35 |0.8   |1.05 |rounded|1.2    |6-13           |3.5/4.1/4.8/5.5
Nordent  |Parallel PX  |1.00 |parallel|v       |0.30 |1.5   |1.00 |rounded|0.9    |8-16           |3.3/4.1/4.8
Nordent  |Short S      |1.20 |parallel|square  |0.45 |0.6   |1.10 |rounded|0.7    |6-9            |4.8/5.5/6.0
Ossivia  |Conical C    |0.60 |tapered |v       |0.30 |1.8   |1.12 |flat   |1.0    |7-16:1.5       |3.5/4.3/5.0
Ossivia  |Bone Level BL|1.05 |parallel|buttress|0.40 |0.5   |1.00 |flat   |0.6    |6-14           |3.3/4.1/4.8
Ossivia  |Wide W       |1.25 |tapered |buttress|0.50 |1.0   |1.08 |flat   |1.5    |6-12:1         |5.0/6.0
Kalyx    |Helix H      |0.70 |tapered |v       |0.45 |0.4   |1.00 |pointed|2.0    |8-16           |3.75/4.3/5.0
Kalyx    |Active A     |0.90 |tapered |buttress|0.50 |0.8   |1.03 |pointed|1.6    |8/10/11.5/13/15|3.5/4.3/5.0
Kalyx    |Straight KS  |1.10 |parallel|v       |0.30 |1.2   |1.00 |pointed|1.4    |6.5-12         |3.3/4.1
Brennar  |Cylinder Q   |0.75 |parallel|square  |0.30 |2.0   |1.15 |flat   |0.8    |6-16:1         |3.75/4.5/5.0
Brennar  |Taper QT     |1.20 |tapered |square  |0.40 |1.4   |1.06 |flat   |1.2    |8-15           |4.1/5.0/6.0
Titanor  |Classic      |0.65 |parallel|v       |0.28 |1.0   |1.00 |rounded|0.5    |7-16           |3.3/3.75/4.1
Titanor  |Progressive  |0.85 |tapered |buttress|0.38 |0.7   |1.04 |rounded|1.8    |6-11           |3.75/4.5/5.2
Titanor  |Max          |1.15 |parallel|buttress|0.48 |1.6   |1.10 |rounded|1.0    |10-16          |4.8/5.5
Medisolid|Spiral SP    |0.95 |tapered |v       |0.42 |0.9   |1.00 |pointed|1.7    |9-16           |3.5/4.2/5.0
Medisolid|Root RF      |0.72 |tapered |square  |0.35 |1.3   |1.07 |pointed|1.1    |6-10           |3.0/3.6/4.2
Zephyra  |One          |1.00 |parallel|v       |0.33 |0.5   |1.00 |flat   |0.7    |6-13:1         |3.4/4.0/4.6/5.2
Zephyra  |Tapered ZT   |0.80 |tapered |buttress|0.45 |1.1   |1.09 |flat   |1.3    |10-16          |4.0/4.6/5.2/6.0
"""


def _sizes(spec: str) -> tuple[float, ...]:
    """Parse "lo-hi[:step]" (default step 0.5) or "a/b/c" into a tuple of floats."""
    if "-" in spec:
        rng, _, step = spec.partition(":")
        lo, hi = (float(x) for x in rng.split("-"))
        return tuple(float(x) for x in np.round(np.arange(lo, hi + 1e-6, float(step or 0.5)), 2))
    return tuple(float(x) for x in spec.split("/"))


def _parse(table: str) -> tuple[ImplantModel, ...]:
    models = []
    for line in table.strip().splitlines()[1:]:
        co, name, pitch, body, prof, depth, collar, flare, apex, apex_mm, lengths, diams = (
            c.strip() for c in line.split("|")
        )
        models.append(
            ImplantModel(
                company=co,
                name=f"{co} {name}",
                pitch_mm=float(pitch),
                body=body,
                thread_profile=prof,
                thread_depth_mm=float(depth),
                collar_mm=float(collar),
                collar_flare=float(flare),
                apex=apex,
                apex_mm=float(apex_mm),
                lengths_mm=_sizes(lengths),
                diameters_mm=_sizes(diams),
            )
        )
    return tuple(models)


CATALOGUE: tuple[ImplantModel, ...] = _parse(_TABLE)
_BY_NAME = {m.name: m for m in CATALOGUE}


def get_model(name: str) -> ImplantModel:
    """Catalogue entry by its full model name (as written in manifests)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown implant model {name!r}") from None


def render_radiograph(
    model: ImplantModel, length_mm: float, diameter_mm: float, rng: np.random.Generator, size: int = 384
) -> tuple[np.ndarray, dict]:
    """Render one periapical-like radiograph of ``model`` at the given size; returns (uint8 HxW image, info).

    info: mm_per_px, tilt_deg, implant_box_xyxy (pixel bbox, exclusive max), axis_top_xy / axis_bottom_xy (pixel
    centres at integer coordinates), length_px.
    """
    # Pixel spacing spans a factor of 2 (log-uniform, as from sensors and magnifications that differ), so an
    # implant's pixel length alone leaves its length uncertain by about +-1.5 mm; threads x pitch resolve it.
    mpp = float(np.exp(rng.uniform(np.log(0.050), np.log(0.100))) * 384.0 / size)
    tilt = float(rng.uniform(-8.0, 8.0))
    th = np.deg2rad(tilt)
    ax, ay = np.sin(th), np.cos(th)

    # place the collar-top point so the whole rotated implant rectangle stays inside with a margin
    half_w = diameter_mm / 2.0 * model.collar_flare
    us = np.array([0.0, 0.0, length_mm, length_mm])
    vs = np.array([-half_w, half_w, -half_w, half_w])
    cx = (us * ax + vs * np.cos(th)) / mpp
    cy = (us * ay - vs * np.sin(th)) / mpp
    margin = 0.03 * size + 4.0
    top_x = float(rng.uniform(margin - cx.min(), size - 1 - margin - cx.max()))
    top_y = float(rng.uniform(margin - cy.min(), size - 1 - margin - cy.max()))
    bottom = (top_x + length_mm * ax / mpp, top_y + length_mm * ay / mpp)

    crest_y = top_y + rng.uniform(-0.3, 1.5) / mpp  # alveolar bone level around the collar
    density, bone = rg.bone_background(rng, size, mpp, crest_y)
    sides = [-1, 1] if rng.random() < 0.5 else [int(rng.choice([-1, 1]))]
    for side in sides:
        gap = (diameter_mm / 2.0 + rng.uniform(1.5, 3.5) + 2.8) / mpp
        y_cej = crest_y - rng.uniform(0.5, 2.0) / mpp
        x_cej = top_x + side * gap + (y_cej - top_y) * np.tan(th)
        rg.add_tooth(density, bone, rng, (x_cej, y_cej), tilt + rng.uniform(-8, 8), mpp)
    if top_y * mpp > 3.5 and rng.random() < 0.35:  # crown / healing cap above the implant, never touching the collar
        gap = rng.uniform(1.5, 2.5) / mpp
        base = (top_x - gap * ax, top_y - gap * ay)
        half = rng.uniform(0.9, 1.3) * diameter_mm / 2.0 / mpp
        rg.add_restoration(density, base, tilt, half, rng.uniform(5.0, 8.0) / mpp, rng.uniform(0.8, 1.6))

    channel = None
    if rng.random() < 0.7:  # internal connection, hollow in the upper part
        channel = (min(rng.uniform(2.2, 3.6), length_mm / 3.0), rng.uniform(0.35, 0.45) * diameter_mm / 2.0)
    patch, (x0, y0, x1, y1) = rg.rasterize_implant(
        model, length_mm, diameter_mm, (top_x, top_y), tilt, mpp, (size, size), channel
    )
    density[y0:y1, x0:x1] += rng.uniform(0.28, 0.42) * patch
    img = rg.degrade(rg.expose(density, rng), rng)

    ys, xs = np.nonzero(patch > 0.05)
    box = [int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max() + 1), int(y0 + ys.max() + 1)]
    info = {
        "mm_per_px": mpp,
        "tilt_deg": tilt,
        "implant_box_xyxy": box,
        "axis_top_xy": (top_x, top_y),
        "axis_bottom_xy": (float(bottom[0]), float(bottom[1])),
        "length_px": length_mm / mpp,
        "has_channel": channel is not None,
    }
    return img, info


def combinations() -> list[tuple[str, float, float]]:
    """All (model name, length_mm, diameter_mm) combinations of the catalogue."""
    return [(m.name, ln, d) for m in CATALOGUE for ln in m.lengths_mm for d in m.diameters_mm]


@lru_cache(maxsize=1)
def held_out_combinations() -> frozenset[tuple[str, float, float]]:
    """~8% of combinations reserved for test; a stable hash so the pick never depends on the seed or table order."""
    return frozenset(c for c in combinations() if zlib.crc32(repr(c).encode()) % 1000 < TEST_ONLY_FRACTION * 1000)


def _sample(
    index: int, rng: np.random.Generator, split: tuple[float, float, float]
) -> tuple[ImplantModel, float, float, str]:
    """Label and split for one image. The first len(CATALOGUE) images cover every model once in train."""
    held = held_out_combinations()
    if index < len(CATALOGUE):
        model = CATALOGUE[index]
        free = [c for c in combinations() if c[0] == model.name and c not in held]
        _, length, diameter = free[int(rng.integers(len(free)))]
        return model, length, diameter, "train"
    model = CATALOGUE[int(rng.integers(len(CATALOGUE)))]
    length = model.lengths_mm[int(rng.integers(len(model.lengths_mm)))]
    diameter = model.diameters_mm[int(rng.integers(len(model.diameters_mm)))]
    if (model.name, length, diameter) in held:
        return model, length, diameter, "test"
    k = int(np.searchsorted(np.cumsum(split), rng.random() * sum(split), side="right"))
    return model, length, diameter, SPLITS[min(k, 2)]


def _make_one(index: int, seed: int, size: int, images: str, split: tuple[float, float, float]) -> tuple[str, dict]:
    """Sample, render and write image ``index``; everything derives from default_rng([seed, index])."""
    rng = np.random.default_rng([seed, index])
    model, length, diameter, which = _sample(index, rng, split)
    img, _ = render_radiograph(model, length, diameter, rng, size)
    name = f"{index:06d}.png"
    if not cv2.imwrite(str(Path(images) / name), img):
        raise OSError(f"could not write {Path(images) / name}")
    rec = {"image": f"images/{name}", "length_mm": float(length), "diameter_mm": float(diameter)}
    rec.update(company=model.company, model=model.name)
    return which, rec


def generate_implants(
    out: str | Path,
    n: int = 1200,
    seed: int = 0,
    size: int = 384,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    workers: int = 2,
) -> dict:
    """Write ``out/images/*.png`` and ``out/{train,val,test}.json``; return counts per split and test-only stats.

    Byte-for-byte deterministic in ``seed`` whatever ``workers`` is (each image owns its RNG stream).
    """
    from rich.progress import track

    from finescale.console import stderr_console

    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split must be three non-negative fractions, got {split}")
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    split = tuple(float(s) for s in split)
    job = partial(_make_one, seed=seed, size=size, images=str(images), split=split)
    desc = f"Rendering {n} implant radiographs"
    bar = {"total": n, "description": desc, "console": stderr_console()}  # stdout stays clean for CLI JSON
    if workers > 1 and n >= 64:
        # fork (no __main__ guard needed in user scripts), but first shut OpenCV's thread pool down: a forked child
        # inherits it half-alive and can deadlock in it. One cv2 thread per worker process is what we want anyway.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with mp.get_context(method).Pool(workers) as pool:
                results = list(track(pool.imap(job, range(n), chunksize=8), **bar))
        finally:
            cv2.setNumThreads(threads)
    else:
        results = [job(i) for i in track(range(n), **bar)]

    manifests: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for which, rec in results:
        manifests[which].append(rec)
    for s in SPLITS:
        (out / f"{s}.json").write_text(json.dumps(manifests[s], indent=1) + "\n")
    held = held_out_combinations()
    n_held = sum((r["model"], r["length_mm"], r["diameter_mm"]) in held for r in manifests["test"])
    return {
        "out": str(out),
        "counts": {s: len(manifests[s]) for s in SPLITS},
        "test_only_combinations": len(held),
        "test_only_records": n_held,
        "combinations": len(combinations()),
        "models": len(CATALOGUE),
    }
