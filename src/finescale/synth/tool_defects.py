"""The five defect classes of a cutting tool: sampling, drawing on the tool's surface grid, and per-view boxes.

A defect lives on the tool's surface at an azimuth ``phi`` (tool frame) and a row. Drawing it edits the
:class:`~finescale.synth.tools.Surface` (radius, albedo, gloss, honed edges) and leaves a weight field on the grid;
a view annotates it when enough of it faces the camera: its visible pixels where the surface turns at most
``FACING_DEG`` from the camera number at least ``VISIBLE_SHARE`` of its unrolled area (so a small defect is annotated
exactly in the views within +-70 deg of its azimuth, a wide rust patch also in a view that sees most of it from the
side). Its box is the pixel bounding box of its visible field, so no box is ever put on something the image does not
show and foreshortening near the silhouette narrows the box as it narrows the defect. A broken tip changes the
silhouette from every side and is annotated in every view.

Looks follow the seed's difficulty: Severe_Rust is a low-contrast brownish, dull, pitted patch; Chipped a small notch
behind a cutting edge (missing honed edge, facets that catch the light differently); Scratched thin bright or dark
grooves; Tip_Wear rounded, heat-tinted, dull cutting corners at the tip; Broken a missing tip with a grainy fracture.
Box aspect ratios (height / width) are drawn so that, over the views that annotate them, Severe_Rust has a median
near 0.44 (P25-P75 0.33-0.61) and Chipped near 0.51 (0.39-0.67), as in the seed's data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from finescale.synth.tools import FractureCut, Surface, ToolSpec, ViewHits

CLASSES = ("Severe_Rust", "Scratched", "Chipped", "Broken", "Tip_Wear")  # COCO category ids 1..5 in this order
ANNOTATION_SHARES = {"Severe_Rust": 0.328, "Scratched": 0.275, "Chipped": 0.182, "Broken": 0.141, "Tip_Wear": 0.074}
# Chance of each class per drawn defect: the annotation shares divided by the views that annotate one (about 3 of
# 8 for a defect on one side, all 8 for a broken tip), tuned with test_synth_defects' sampler check.
_DRAW_WEIGHTS = {"Severe_Rust": 0.345, "Scratched": 0.29, "Chipped": 0.208, "Broken": 0.071, "Tip_Wear": 0.07}
FACING_DEG = 70.0
CLEAN_TOOLS = 0.15  # share of tools without any defect
VISIBLE_SHARE = 0.2  # a view annotates a defect when this share of its area faces it (projected, see view_boxes)
BOX_THRESHOLD = 0.4  # weight of a defect's field inside its box


@dataclass
class Defect:
    """One defect: class ``name``, centre azimuth ``phi`` (radians, tool frame; NaN for Broken: seen from everywhere)
    and row ``y`` (px), class-specific ``shape`` values, ``points`` (N, 2): (phi, y) spread evenly over its region
    (for boxes without rendering; a broken tip: the top and bottom rows its fracture reaches) and its texture seed."""

    name: str
    phi: float
    y: float
    shape: dict
    points: np.ndarray
    seed: int


def _aspect(rng: np.random.Generator, median: float, spread: float) -> float:
    return float(np.clip(median * math.exp(spread * rng.standard_normal()), 0.12, 1.6))


def _rust(rng: np.random.Generator, spec: ToolSpec, lo: float, hi: float) -> Defect:
    a = math.radians(rng.uniform(25, 55))
    # 0.31 head-on; side views narrow the box, which lifts the median over the annotating views to about 0.44
    b = 0.5 * _aspect(rng, 0.31, 0.36) * 2 * spec.radius * math.sin(a)
    y = rng.uniform(lo + b, max(hi - b, lo + b + 1))
    phi = rng.uniform(0, 2 * math.pi)
    u, v = (g.ravel() for g in np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9)))
    disc = u * u + v * v <= 1
    points = np.stack([phi + 0.85 * a * u[disc], y + 0.85 * b * v[disc]], 1)  # the part its box holds
    shape = {"a": a, "b": b, "strength": rng.uniform(0.15, 0.3), "colour": rng.uniform(0.85, 1.15)}
    return Defect("Severe_Rust", phi, y, shape, points, int(rng.integers(2**31)))


def _scratch(rng: np.random.Generator, spec: ToolSpec, lo: float, hi: float) -> Defect:
    length = rng.uniform(0.08, 0.22) * spec.height
    tilt = math.radians(rng.uniform(-55, 55))  # from the axis, on the unrolled surface
    half_y, half_s = 0.5 * length * math.cos(tilt), 0.5 * length * math.sin(tilt)
    y = rng.uniform(lo + half_y, max(hi - half_y, lo + half_y + 1))
    phi = rng.uniform(0, 2 * math.pi)
    lines = int(rng.integers(1, 4))
    t = np.linspace(-1, 1, 9)
    points = np.concatenate([np.stack([phi + (t * half_s + k * 3.0) / spec.radius, y + t * half_y], 1)
                             for k in range(lines)])  # fmt: skip
    shape = {"half_y": half_y, "half_s": half_s, "lines": lines, "width": rng.uniform(0.6, 1.1),
             "contrast": rng.uniform(0.25, 0.5) * rng.choice([-1, 1])}  # fmt: skip
    return Defect("Scratched", phi, y, shape, points, int(rng.integers(2**31)))


def _chip(rng: np.random.Generator, spec: ToolSpec, lo: float, hi: float) -> Defect:
    flute = int(rng.integers(spec.flutes))
    wide = rng.uniform(0.07, 0.14) * spec.width
    a = wide / spec.radius  # angular size into the land behind the edge
    b = 0.5 * _aspect(rng, 0.44, 0.33) * wide
    y = rng.uniform(max(lo, spec.y_body) + b, max(min(hi, spec.y_flute_end) - b, max(lo, spec.y_body) + b + 1))
    u, rows = (g.ravel() for g in np.meshgrid(np.linspace(-0.1, 0.75, 6), np.linspace(y - 0.87 * b, y + 0.87 * b, 5)))
    points = np.stack([spec.edge_azimuth(rows, flute) + u * a, rows], 1)
    shape = {"a": a, "b": b, "flute": flute, "depth": rng.uniform(0.01, 0.02), "tone": rng.uniform(-0.08, 0.08)}
    phi = float(spec.edge_azimuth(y, flute) + 0.4 * a)
    return Defect("Chipped", phi, y, shape, points, int(rng.integers(2**31)))


def _tip_wear(rng: np.random.Generator, spec: ToolSpec) -> Defect:
    flute = int(rng.integers(spec.flutes))
    a = math.radians(rng.uniform(35, 70))
    ext = rng.uniform(0.015, 0.04) * spec.height
    centre = float(spec.edge_azimuth(spec.y_body, flute) + 0.5 * a)
    u, rows = (g.ravel() for g in np.meshgrid(np.linspace(-1, 1, 7), np.linspace(spec.y_tip, spec.y_body + ext, 6)))
    points = np.stack([centre + u * a, rows], 1)
    tint = [(0.75, 0.6, 0.3), (0.3, 0.35, 0.6), (0.6, 0.4, 0.25)][int(rng.integers(3))]
    shape = {"a": a, "ext": ext, "wear": rng.uniform(0.03, 0.07), "tint": tint, "strength": rng.uniform(0.35, 0.6)}
    return Defect("Tip_Wear", centre, spec.y_body, shape, points, int(rng.integers(2**31)))


def _broken(rng: np.random.Generator, spec: ToolSpec) -> Defect:
    level = spec.y_body + rng.uniform(0.03, 0.18) * (spec.y_flute_end - spec.y_tip)
    k = 4
    amp = rng.dirichlet(np.ones(k)) * rng.uniform(0.012, 0.03) * spec.height
    wavelength = rng.uniform(0.4, 1.5, k) * spec.radius
    direction = rng.uniform(0, 2 * math.pi, k)
    kx, kz = 2 * math.pi / wavelength * np.cos(direction), 2 * math.pi / wavelength * np.sin(direction)
    waves = np.stack([amp, kx, kz, rng.uniform(0, 2 * math.pi, k)], 1)
    cut = FractureCut(level, rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), waves)
    reach = (abs(cut.sx) + abs(cut.sz)) * spec.radius + amp.sum()
    points = np.array([[0.0, level - reach], [0.0, level + reach]])
    return Defect("Broken", math.nan, level, {"cut": cut, "reach": reach}, points, int(rng.integers(2**31)))


def sample_defects(rng: np.random.Generator, spec: ToolSpec) -> list[Defect]:
    """No defect (``CLEAN_TOOLS`` of tools) or one to three, classes drawn by ``_DRAW_WEIGHTS``; at most one broken
    tip or one worn tip (not both: a broken tip has no tip left to wear), other defects below the fracture."""
    if rng.random() < CLEAN_TOOLS:
        return []
    names, weights = list(_DRAW_WEIGHTS), np.array(list(_DRAW_WEIGHTS.values()))
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17]))
    drawn = [names[int(i)] for i in rng.choice(len(names), size=count, p=weights / weights.sum())]
    at_tip = [n for n in drawn if n in ("Broken", "Tip_Wear")][:1]
    body = [n for n in drawn if n not in ("Broken", "Tip_Wear")]
    defects = [_broken(rng, spec) if at_tip == ["Broken"] else _tip_wear(rng, spec)] if at_tip else []
    lo = spec.y_body + 0.02 * spec.height
    if at_tip == ["Broken"]:
        lo = max(lo, defects[0].y + defects[0].shape["reach"] + 0.02 * spec.height)
    hi = spec.y_holder - 0.01 * spec.height
    makers = {"Severe_Rust": _rust, "Scratched": _scratch, "Chipped": _chip}
    return defects + [makers[n](rng, spec, lo, hi) for n in body]


def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return np.mod(np.asarray(angle) + math.pi, 2 * math.pi) - math.pi


def _window(spec: ToolSpec, p: int, y0: float, y1: float) -> tuple[int, np.ndarray, np.ndarray]:
    """First row, row centres (n, 1) and azimuths (1, P) of the grid rows that [y0, y1] touches."""
    r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)) + 1, spec.height)
    return r0, np.arange(r0, max(r1, r0 + 1), dtype=np.float64)[:, None] + 0.5, np.arange(p)[None] * (2 * math.pi / p)


def _noise(
    rows: int, p: int, centre: float, cell_rows: float, cell_cols: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth unit noise on (rows, P) whose seam (columns 0 / P-1) lies opposite azimuth ``centre``."""
    small = rng.standard_normal((int(rows / cell_rows) + 3, int(p / cell_cols) + 3)).astype(np.float32)
    noise = cv2.resize(small, (p, rows), interpolation=cv2.INTER_CUBIC)
    return np.roll(noise, int(round(centre / (2 * math.pi) * p)) - p // 2, axis=1)


@dataclass(frozen=True)
class DefectField:
    """Where a drawn defect lies on the (H, P) grid: weights (n, P) in [0, 1] for grid rows row0 .. row0 + n - 1,
    and ``area``: its unrolled surface area in px^2 (weights >= the box threshold)."""

    row0: int
    weights: np.ndarray
    area: float


def draw_defect(spec: ToolSpec, surf: Surface, d: Defect) -> DefectField:
    """Draw ``d`` onto ``surf`` (in place) and return where it lies."""
    row0, weights = _draw(spec, surf, d)
    arc = surf.r[row0 : row0 + len(weights)] * (2 * math.pi / surf.r.shape[1])
    return DefectField(row0, weights, float((arc * (weights >= BOX_THRESHOLD)).sum()))


def _draw(spec: ToolSpec, surf: Surface, d: Defect) -> tuple[int, np.ndarray]:
    rng, p, s = np.random.default_rng(d.seed), surf.r.shape[1], d.shape
    px = spec.radius * 2 * math.pi / p  # pixels per azimuth sample on the body
    if d.name == "Broken":
        cut, margin = s["cut"], 0.008 * spec.height
        surf.break_off(cut)
        r0, rows, phi = _window(spec, p, d.y - s["reach"], d.y + s["reach"] + margin)
        r = surf.r[r0 : r0 + len(rows)]
        gap = rows - cut.y(r * np.sin(phi), r * np.cos(phi))
        return r0, ((gap >= 0) & (gap < margin) & (r > 0)).astype(np.float32)
    y_lo, y_hi = d.points[:, 1].min() - 2, d.points[:, 1].max() + 2
    r0, rows, phi = _window(spec, p, y_lo, y_hi)
    sl = slice(r0, r0 + len(rows))
    noise = _noise(len(rows), p, d.phi, 4.0, 4.0 / px, rng)
    if d.name == "Severe_Rust":
        d2 = (_wrap(phi - d.phi) / s["a"]) ** 2 + ((rows - d.y) / s["b"]) ** 2
        field = np.clip(np.clip((1 - d2) * 2.5, 0, 1) * (0.75 + 0.3 * noise), 0, 1)
        grain = _noise(len(rows), p, d.phi, 1.5, 1.5 / px, rng)
        amount = (s["strength"] * field)[..., None]
        # rust of about the metal's own lightness: a change of hue and texture more than of brightness
        base = surf.albedo[sl]
        light = 0.8 * base.mean(-1, keepdims=True) + 0.06
        rust = np.array([1.5, 0.85, 0.45]) * s["colour"] * light * (1 + 0.12 * grain[..., None])
        surf.albedo[sl] = base * (1 - amount) + rust * amount
        surf.gloss[sl] *= 1 - 0.15 * field
        surf.r[sl] -= (0.04 * field * np.abs(grain)).astype(np.float32) * (surf.r[sl] > 0)  # shallow pitting
    elif d.name == "Scratched":
        arc, dy = _wrap(phi - d.phi) * spec.radius, rows - d.y
        seg = np.array([s["half_s"], s["half_y"]])
        field = np.zeros((len(rows), p))
        for k in range(s["lines"]):
            u = np.clip(((arc - 3.0 * k) * seg[0] + dy * seg[1]) / (seg @ seg), -1, 1)
            dist = np.hypot(arc - 3.0 * k - u * seg[0], dy - u * seg[1])
            taper = np.clip((1 - np.abs(u)) * 8, 0, 1) * np.clip(0.8 + 0.5 * noise, 0, 1)
            field = np.maximum(field, np.exp(-((dist / s["width"]) ** 2)) * taper)
        surf.r[sl] -= (0.5 * field * (surf.r[sl] > 0)).astype(np.float32)
        surf.albedo[sl] *= (1 + s["contrast"] * field)[..., None]
        surf.gloss[sl] *= 1 + 0.5 * field
    elif d.name == "Chipped":
        u = _wrap(phi - spec.edge_azimuth(rows, s["flute"])) / s["a"]
        across = np.where(u >= 0, 1 - u, 1 + u / 0.15) * ((u > -0.15) & (u < 1))
        base = np.clip(np.minimum(across, 1 - ((rows - d.y) / s["b"]) ** 2), 0, 1)
        field = np.clip(base * (1.6 + 0.4 * noise), 0, 1)  # a ragged notch
        surf.r[sl] -= (s["depth"] * spec.radius * base**1.5 * (surf.r[sl] > 0)).astype(np.float32)  # smooth crater
        surf.edge[sl] *= 1 - 0.4 * field  # the honed edge breaks off where the chip is
        surf.albedo[sl] *= (1 + s["tone"] * field)[..., None]
        surf.gloss[sl] *= 1 - 0.2 * field
    else:  # Tip_Wear
        along = np.where(rows < spec.y_body, 0.55 + 0.45 * (rows - spec.y_tip) / max(spec.cone, 1),
                         1 - (rows - spec.y_body) / s["ext"])  # fmt: skip
        field = np.clip(np.exp(-((_wrap(phi - d.phi) / s["a"]) ** 4)) * along * (0.9 + 0.2 * noise), 0, 1)
        field *= rows >= spec.y_tip
        surf.r[sl] = np.maximum(surf.r[sl] - s["wear"] * spec.radius * field**2, 0).astype(np.float32)
        amount = (s["strength"] * field)[..., None]
        surf.albedo[sl] = surf.albedo[sl] * (1 - amount) + np.array(s["tint"]) * amount
        surf.gloss[sl] *= 1 - 0.6 * field
        surf.edge[sl] *= 1 - field
    return r0, field.astype(np.float32)


def min_pixels(spec: ToolSpec) -> int:
    """Fewest visible pixels for a box: 6 at 360 x 128, scaled with the image area."""
    return max(4, round(6 * spec.height * spec.width / (360 * 128)))


def view_boxes(
    spec: ToolSpec, defects: list[Defect], fields: list[DefectField], hits: ViewHits, theta: float
) -> list[tuple[int, list[int]]]:
    """(category id 1..5, COCO ``[x, y, w, h]`` px) of each defect the view at turntable angle ``theta`` annotates
    (see the module docstring): the bounding box of its visible field, weight >= ``BOX_THRESHOLD`` on pixels at least
    half covered by the tool, plus a broken tip's fracture face."""
    p = fields[0].weights.shape[1] if fields else 1
    rr, cc = np.nonzero(hits.sample >= 0)
    jj = hits.sample[rr, cc]
    toward = np.abs(_wrap(jj * (2 * math.pi / p) + theta)) <= math.radians(FACING_DEG)
    solid = hits.alpha[rr, cc] >= 0.5
    boxes = []
    for d, f in zip(defects, fields, strict=True):
        inside = (rr >= f.row0) & (rr < f.row0 + len(f.weights))
        on = np.zeros(len(rr), bool)
        on[inside] = f.weights[rr[inside] - f.row0, jj[inside]] >= BOX_THRESHOLD
        on &= solid
        mask = np.zeros(hits.sample.shape, bool)
        mask[rr[on], cc[on]] = True
        if d.name == "Broken":
            mask |= hits.fracture
        elif (on & toward).sum() < max(min_pixels(spec), VISIBLE_SHARE * f.area):
            continue
        if mask.sum() < min_pixels(spec):
            continue
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        boxes.append((CLASSES.index(d.name) + 1, [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]))
    return boxes


def points_box(spec: ToolSpec, d: Defect, theta: float) -> list[float] | None:
    """The box the view at ``theta`` would give ``d``, from its ``points`` on the plain tool (no flutes), without
    rendering: COCO ``[x, y, w, h]`` px, or None where the view would not annotate it. For checking the sampler on
    many draws; the rendered boxes of :func:`view_boxes` follow the same rule on the real surface."""
    if d.name == "Broken":
        return [spec.cx - spec.radius, d.points[0, 1], 2 * spec.radius, d.points[1, 1] - d.points[0, 1]]
    psi = _wrap(d.points[:, 0] + theta)
    y = d.points[:, 1]
    toward = np.abs(psi) <= math.radians(FACING_DEG)
    if np.cos(psi[toward]).sum() < VISIBLE_SHARE * len(psi):  # projected share of the area facing the camera
        return None
    front = np.abs(psi) < math.pi / 2
    radius = (
        spec.radius * np.clip((y - spec.y_tip) / max(spec.cone, 1e-6), 0, 1) if spec.kind == "drill" else spec.radius
    )
    x = spec.cx + radius * np.sin(psi)
    # a region that runs round past the silhouette reaches it
    x_lo = spec.cx - spec.radius if (psi[~front] < 0).any() else x[front].min()
    x_hi = spec.cx + spec.radius if (psi[~front] > 0).any() else x[front].max()
    # + 1: a box of whole pixels holds the pixels a region only partly covers
    return [float(x_lo), float(y[front].min()), float(x_hi - x_lo + 1), float(y[front].max() - y[front].min() + 1)]
