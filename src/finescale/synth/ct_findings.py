"""The 18 CT-RATE abnormalities as physically motivated signatures on a rendered phantom.

Four change the anatomy before it is rendered (:func:`modify_anatomy`: an enlarged heart, pericardial fluid, a hiatal
hernia, bronchial walls and calibres); the others are painted onto the rendered :class:`~ct_anatomy.Phantom` in HU
(the painters listed in ``ct_phantom.PAINTERS``). Each finding draws from its own RNG, so switching one on or off
leaves the other findings where they were (an anatomy-level finding reshapes the lungs and, with them, the vessel
tree).

:data:`SIGNATURE_STRENGTH` scales every signature's size, contrast or extent at once (1.0 = the defaults below): the
knob that sets how hard the synthetic task is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from finescale.data.ct_io import LABELS
from finescale.synth import ct_geometry as geo
from finescale.synth.ct_anatomy import Anatomy, Phantom
from finescale.synth.ct_geometry import paint, paint_tube, soft_edge
from finescale.synth.ct_thorax import place_in_fat

# Scales every signature (size, contrast, extent). 1.0 aims at subtle-to-moderate findings: small, low-contrast and
# under the scanner's noise often enough that a plain 2-D CNN at a CPU budget lands near 0.7-0.85 macro AUROC.
SIGNATURE_STRENGTH = 1.0
HU_METAL = 3000.0
HU_FLUID = 12.0
HU_CALCIUM = 1300.0


def modify_anatomy(
    a: Anatomy, present: Sequence[bool], rngs: Sequence[np.random.Generator], strength: float
) -> Anatomy:
    """Fold the anatomy-level findings into ``a``: cardiomegaly, pericardial effusion, hiatal hernia, peribronchial
    thickening and bronchiectasis (``present`` and ``rngs`` are indexed like :data:`LABELS`)."""
    on = dict(zip(LABELS, present, strict=True))
    rng = dict(zip(LABELS, rngs, strict=True))
    changes: dict = {}
    if on["Cardiomegaly"]:  # cardiothoracic ratio pushed past 0.5: the heart grows mostly to the left and down
        g = 1 + rng["Cardiomegaly"].uniform(0.16, 0.28) * strength
        z, y, x = a.heart_centre
        changes["heart_axes"] = (a.heart_axes[0] * (1 + (g - 1) / 2), a.heart_axes[1] * g, a.heart_axes[2] * g)
        changes["heart_centre"] = (z + 0.2 * (g - 1) * a.heart_axes[0], y, x + 0.4 * (g - 1) * a.heart_axes[2])
    if on["Pericardial effusion"]:  # a rim of fluid between the heart and the pericardial fat
        changes["pericardial_fluid_mm"] = float(rng["Pericardial effusion"].uniform(5, 13) * strength)
    if on["Hiatal hernia"]:  # stomach above the diaphragm, behind the heart
        changes["hernia_mm"] = float(rng["Hiatal hernia"].uniform(28, 48) * np.sqrt(strength))
    if on["Peribronchial thickening"]:
        changes["airway_wall"] = float(1 + rng["Peribronchial thickening"].uniform(1.0, 1.6) * strength)
    if on["Bronchiectasis"]:  # dilated, non-tapering bronchi, mostly in the lower lobes
        r = rng["Bronchiectasis"]
        lobes = [lobe for lobe in (2, 5, 1, 4) if r.random() < (0.75 if lobe in (2, 5) else 0.25)] or [5]
        changes["bronchiectasis"] = {lobe: float(1 + r.uniform(0.9, 1.5) * strength) for lobe in lobes}
    return replace(a, **changes)


# ---------------------------------------------------------------------------------------------------- helpers


def lung_points(ph: Phantom, rng: np.random.Generator, n: int, weight: np.ndarray | None = None) -> np.ndarray:
    """``n`` random lung points, ``(n, 3)`` mm, drawn in proportion to ``weight`` (broadcast to the volume)."""
    flat = np.flatnonzero(ph.lung)
    p = None
    if weight is not None:
        w = np.broadcast_to(weight, ph.lung.shape).ravel()[flat].astype(np.float64)
        p = w / w.sum() if w.sum() > 0 else None
    idx = np.unravel_index(rng.choice(flat, size=n, p=p), ph.lung.shape)
    g = ph.grid
    mm = np.stack([g.z.ravel()[idx[0]], g.y.ravel()[idx[1]], g.x.ravel()[idx[2]]], axis=1).astype(np.float64)
    return mm + rng.uniform(-0.5, 0.5, mm.shape) * np.asarray(g.spacing)


def irregular_ball(ph: Phantom, rng: np.random.Generator, centre: np.ndarray, radius: float, rough: float = 0.3):
    """An irregular ball: ``(box, fraction)``; ``rough`` is the relative amplitude of its boundary's wobble."""
    g = ph.grid
    box = g.box(centre - radius * (1 + rough) - 2 * max(g.spacing), centre + radius * (1 + rough) + 2 * max(g.spacing))
    if box is None:
        return None
    z, y, x = g.coords(box)
    d = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    scale = tuple(max(1.0, radius / 2 / s) for s in g.spacing)
    wobble = geo.smooth_field(rng, d.shape, scale) if rough > 0 else 0.0
    return box, soft_edge(radius * (1 + rough * wobble) - d, g.voxel_mm)


def in_lung(ph: Phantom, box) -> np.ndarray:
    return ph.lung[box].astype(np.float32)


def _streaks(ph: Phantom, rng: np.random.Generator, centre: np.ndarray, z_half: float, strength: float) -> None:
    """Metal streak artefacts in the slices through a metal object: bright and dark rays from photon starvation and
    beam hardening, fading with distance from the metal."""
    g = ph.grid
    zs = np.abs(g.z.ravel() - centre[0]) <= z_half + g.spacing[0]
    if not zs.any():
        return
    dy, dx = g.y[0] - centre[1], g.x[0] - centre[2]  # (Y, 1), (1, X)
    r = np.hypot(dy, dx)
    field = np.zeros(r.shape, np.float32)
    for angle in rng.uniform(0, np.pi, int(rng.integers(4, 9))):
        perp = np.abs(-np.sin(angle) * dx + np.cos(angle) * dy)
        field += rng.choice([-1.0, 0.6]) * rng.uniform(120, 320) * np.exp(-((perp / 1.8) ** 2))
    field *= np.exp(-r / 70.0) * strength
    body = ph.hu[zs] > -950
    ph.hu[zs] += field * body


# ------------------------------------------------------------------------------------------------ signatures


def medical_material(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """A pacemaker (generator in the chest wall, lead into the heart), sternotomy wires or a port catheter: metal
    at 3000 HU (thin wires lose most of it to partial volume) with streaks."""
    a, g = ph.anatomy, ph.grid
    front = a.body_cy - a.body_ay + a.fat * 0.5
    kind = rng.choice(["pacemaker", "wires", "port"], p=[0.45, 0.35, 0.2])
    z_top = a.z_centre - 0.6 * a.z_half
    if kind == "wires":
        for k in range(int(rng.integers(4, 7))):
            z = a.z_centre + (-0.55 + 0.18 * k) * a.z_half
            y = a.body_cy - a.body_ay + a.fat + a.muscle + 2
            paint_tube(ph.hu, g, (z, y, -9.0), (z, y + 4, 9.0), 1.2, HU_METAL)
            if k % 2 == 0:
                _streaks(ph, rng, np.array([z, y, 0.0]), 2.0, 0.5 * s)
        return
    side = 1.0 if kind == "pacemaker" else -1.0
    box = np.array([z_top + rng.normal(0, 8), front + 4, side * 0.55 * a.body_ax])
    size = (22.0, 6.0) if kind == "pacemaker" else (8.0, 6.0)
    paint_tube(ph.hu, g, box - [0, 0, size[0] / 2], box + [0, 0, size[0] / 2], size[1], HU_METAL)
    heart = np.asarray(a.heart_centre) + [0, 0, 0.3 * a.heart_axes[2]]
    vein = np.array([z_top - 25, ph.landmarks["carina"][1] - 30, side * 25.0])
    for p0, p1 in ((box, vein), (vein, heart if kind == "pacemaker" else vein + [45, 5, -side * 10])):
        paint_tube(ph.hu, g, p0, p1, 1.0, HU_METAL)
    _streaks(ph, rng, box, size[1] + 2, s)


def arterial_calcification(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Calcified plaques: small dense deposits (3-5 mm thick, 3-10 mm long) on the aortic wall, mostly on the arch and
    the descending aorta."""
    path, radii = ph.landmarks["aorta"], ph.landmarks["aorta_r"]
    for _ in range(max(1, int(round(rng.uniform(2, 9) * s)))):
        i = int(rng.choice(len(radii), p=[0.1, 0.3, 0.3, 0.3]))
        along = (path[i + 1] - path[i]) / np.linalg.norm(path[i + 1] - path[i])
        normal = geo.random_perpendicular(rng, along[None])[0]
        spot = path[i] + rng.uniform(0, 1) * (path[i + 1] - path[i]) + normal * (radii[i] - 1.0)
        paint_tube(ph.hu, ph.grid, spot, spot + along * rng.uniform(3, 10) * s, rng.uniform(1.5, 2.5), HU_CALCIUM)


def coronary_calcification(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Calcified plaques along the coronary arteries on the heart's surface: LAD (front), LCx and RCA (AV groove)."""
    a = ph.anatomy
    (cz, cy, cx), (az, ay, ax) = a.heart_centre, a.heart_axes
    c, sn = np.cos(a.heart_angle), np.sin(a.heart_angle)

    def surface(phi: float, elev: float) -> np.ndarray:
        xr, yr, zr = ax * np.cos(elev) * np.cos(phi), ay * np.cos(elev) * np.sin(phi), az * np.sin(elev)
        return np.array([cz + zr, cy + sn * xr + c * yr, cx + c * xr - sn * yr])

    arcs = {"lad": (4.4, 5.0, -0.6, 0.4), "lcx": (0.2, 1.2, -0.7, -0.2), "rca": (2.6, 3.6, -0.6, 0.1)}
    for _ in range(max(1, int(round(rng.uniform(1, 6) * s)))):
        lo, hi, e_lo, e_hi = arcs[str(rng.choice(list(arcs), p=[0.5, 0.2, 0.3]))]
        phi, elev = rng.uniform(lo, hi), rng.uniform(e_lo, e_hi)
        length = rng.uniform(4, 12) * s  # along the vessel, which runs around the heart (in phi)
        start, end = surface(phi, elev), surface(phi + length / max(ax, ay), elev)
        paint_tube(ph.hu, ph.grid, start, end, rng.uniform(1.5, 2.5), HU_CALCIUM)


def lymphadenopathy(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Enlarged nodes (short axis > 10 mm) at mediastinal and hilar stations; normal nodes are 3-4 mm here."""
    stations = ph.landmarks["stations"]
    for k in rng.choice(len(stations), size=int(rng.integers(2, 5)), replace=False):
        centre = place_in_fat(ph, rng, stations[k])
        r = rng.uniform(6.0, 10.0) * (0.6 + 0.4 * s)
        paint_tube(ph.hu, ph.grid, centre, centre + rng.normal(0, 4, 3), r, 38.0)


def nodule(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """One to three pulmonary nodules, 5-14 mm: solid, or part-solid (ground-glass halo around a solid core)."""
    away_from_core = np.clip(ph.rho - 0.25, 0, 1)
    for centre in lung_points(ph, rng, int(rng.choice([1, 1, 2, 3])), away_from_core):
        r = rng.uniform(2.5, 6.5) * (0.7 + 0.3 * s)
        if rng.random() < 0.25:
            blob = irregular_ball(ph, rng, centre, 1.6 * r, 0.15)
            if blob is not None:
                ph.hu[blob[0]] += blob[1] * in_lung(ph, blob[0]) * 260.0 * s
            r *= 0.5
        blob = irregular_ball(ph, rng, centre, r, 0.12)
        if blob is not None:
            paint(ph.hu, blob[1], 30.0, blob[0])
