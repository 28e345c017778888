"""Signatures of the lung and pleural abnormalities, painted in place on a rendered phantom's HU volume.

Each takes ``(phantom, rng, strength)``; ``strength`` is :data:`ct_findings.SIGNATURE_STRENGTH` (1.0 = default).
"""

from __future__ import annotations

import numpy as np

from finescale.synth import ct_geometry as geo
from finescale.synth.ct_anatomy import HU_AIR, Phantom
from finescale.synth.ct_findings import HU_FLUID, in_lung, irregular_ball, lung_points
from finescale.synth.ct_geometry import paint, soft_edge


def _lung_field(ph: Phantom, rng: np.random.Generator, size_mm: float) -> np.ndarray:
    """A unit-variance smooth random field whose blobs are about ``size_mm`` across."""
    return geo.smooth_field(rng, ph.grid.shape, tuple(max(1.0, size_mm / s) for s in ph.grid.spacing))


def _threshold_for(field: np.ndarray, mask: np.ndarray, fraction: float) -> float:
    """The value above which ``fraction`` of ``field``'s voxels inside ``mask`` lie."""
    return float(np.quantile(field[mask], 1 - fraction)) if mask.any() else np.inf


def _lattice_lines(ph: Phantom, rng: np.random.Generator, cell_mm: float, width_mm: float, box=()) -> np.ndarray:
    """Fraction (of the volume, or of ``box``) of thin sheets outlining polyhedral cells about ``cell_mm`` across:
    the interlobular septa around secondary pulmonary lobules, on a gently warped lattice."""
    g = ph.grid
    z, y, x = g.coords(box) if box else (g.z, g.y, g.x)
    shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    scale = tuple(max(1.0, 3 * cell_mm / s) for s in g.spacing)
    lines = np.zeros(shape, np.float32)
    for coord in (z, y, x):
        warp = geo.smooth_field(rng, shape, scale) * 0.35 * cell_mm
        phase = (coord + warp) / cell_mm + rng.uniform(0, 1)
        distance = np.abs(phase - np.round(phase)) * cell_mm  # mm to the nearest sheet of this family
        np.maximum(lines, soft_edge(width_mm / 2 - distance, g.voxel_mm) * width_mm / g.voxel_mm, out=lines)
    return np.clip(lines, 0, 1)


def emphysema(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Low-attenuation areas (about -980 HU) without visible walls, upper-zone predominant (centrilobular), some
    along the pleura (paraseptal); the vessels inside them are lost too."""
    field = _lung_field(ph, rng, 6.0) + 1.2 * np.clip(-ph.zn, -0.3, 1.0) + 0.6 * (ph.rho > 0.85)
    fraction = rng.uniform(0.05, 0.13) * s
    cut = _threshold_for(field, ph.lung, fraction)
    holes = np.clip((field - cut) / 0.25, 0, 1) * ph.lung
    paint(ph.hu, holes, -985.0)


def lung_opacity(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Ground-glass opacity: patches where attenuation rises by 150-260 HU while vessels stay visible (added, not
    replaced)."""
    for centre in lung_points(ph, rng, int(rng.integers(1, 4))):
        blob = irregular_ball(ph, rng, centre, rng.uniform(12, 28) * np.sqrt(s), 0.45)
        if blob is not None:
            ph.hu[blob[0]] += blob[1] * in_lung(ph, blob[0]) * rng.uniform(150, 260) * s


def consolidation(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Airspace consolidation: a segment-sized region at soft-tissue attenuation (about 35 HU), mostly dependent and
    lower, through which the bronchi still show as dark branching tubes (air bronchograms)."""
    weight = np.clip(ph.v + 1.2, 0, None) * np.clip(ph.zn + 0.8, 0.1, None) * (ph.rho < 0.8)
    for centre in lung_points(ph, rng, int(rng.choice([1, 1, 2])), weight):
        blob = irregular_ball(ph, rng, centre, rng.uniform(18, 32) * np.sqrt(s), 0.25)
        if blob is None:
            continue
        box, frac = blob
        frac = frac * in_lung(ph, box)
        paint(ph.hu, frac, 35.0, box)
        paint(ph.hu, frac * np.clip(ph.lumen[box] * 1.3, 0, 1), HU_AIR, box)


def atelectasis(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Collapsed lung at soft-tissue attenuation (about 25 HU) without air bronchograms: a dependent subpleural
    band at the lung base, or an oblique plate-like band in a lower lobe."""
    g = ph.grid
    side = rng.choice([-1.0, 1.0, 0.0])  # right, left or both
    in_side = (g.x * side >= 0) if side else np.ones_like(g.x, bool)
    if rng.random() < 0.6:
        depth = rng.uniform(0.10, 0.22) * s * np.clip((ph.zn + 0.1) / 0.9, 0, 1)
        edge = 1 - 0.08 * _lung_field(ph, rng, 25.0)
        band = soft_edge((ph.v - (edge - depth)) * 60.0, g.voxel_mm) * ph.lung * in_side
    else:
        centre = lung_points(ph, rng, 1, np.clip(ph.zn, 0, None) * in_side)[0]
        normal = np.array([1.0, rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3)])
        normal /= np.linalg.norm(normal)
        plane = (g.z - centre[0]) * normal[0] + (g.y - centre[1]) * normal[1] + (g.x - centre[2]) * normal[2]
        radial = np.sqrt(np.maximum((g.z - centre[0]) ** 2 + (g.y - centre[1]) ** 2 + (g.x - centre[2]) ** 2
                                    - plane**2, 0))  # fmt: skip
        band = soft_edge(2.5 * s - np.abs(plane), g.spacing[0]) * soft_edge(rng.uniform(25, 45) - radial, 5.0)
        band = band * ph.lung
    paint(ph.hu, band, 25.0)


def pleural_effusion(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Free pleural fluid (about 12 HU) layering in the dependent (posterior) pleural space, deepest at the base,
    with a concave meniscus: it takes the place of the posterior-basal lung."""
    g = ph.grid
    side = rng.choice([-1.0, 1.0, 0.0], p=[0.4, 0.25, 0.35])
    in_side = (g.x * side >= 0) if side else np.ones_like(g.x, bool)
    depth_mm = rng.uniform(12, 32) * s * np.clip((ph.zn + 0.3) / 1.0, 0, 1.2)  # (Z, 1, 1)
    ly = 0.8 * ph.anatomy.cavity[1]
    fluid = soft_edge(depth_mm - (1 - ph.v) * ly, g.voxel_mm) * ph.lung * in_side
    paint(ph.hu, fluid, HU_FLUID)


def mosaic_attenuation(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Geographic patchwork of lobular regions of lower and higher attenuation (air trapping or perfusion
    differences), sharply marginated: +/- 45-80 HU."""
    field = _lung_field(ph, rng, 18.0)
    ph.hu += np.tanh(3.0 * field) * rng.uniform(45, 80) * s * ph.lung


def septal_thickening(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Thickened interlobular septa: fine lines outlining 10-20 mm lobules, subpleural and basal predominant."""
    lines = _lattice_lines(ph, rng, rng.uniform(11, 18), 1.2 * s)
    where = np.clip((ph.rho - 0.55) / 0.3, 0, 1) * np.clip(ph.zn + 0.6, 0.2, 1.2) * ph.lung
    ph.hu += lines * where * rng.uniform(350, 500)


def fibrotic_sequela(ph: Phantom, rng: np.random.Generator, s: float) -> None:
    """Post-inflammatory fibrosis: a few parenchymal bands reaching the pleura plus a patch of fine subpleural
    reticulation, usually apical or basal."""
    g = ph.grid
    upper = rng.random() < 0.6
    weight = np.clip(ph.rho - 0.75, 0, None) * (np.clip(-ph.zn, 0, None) if upper else np.clip(ph.zn, 0, None))
    anchors = lung_points(ph, rng, int(rng.integers(2, 5)), weight + 1e-6 * ph.lung)
    for p0 in anchors:
        direction = rng.normal(0, 1, 3)
        direction /= np.linalg.norm(direction)
        tube = geo.capsule(g, p0, p0 + direction * rng.uniform(18, 40), rng.uniform(1.0, 1.8) * s)
        if tube is not None:
            paint(ph.hu, tube[1] * in_lung(ph, tube[0]) * 0.8, -50.0, tube[0])
    blob = irregular_ball(ph, rng, anchors[0], rng.uniform(15, 25), 0.4)
    if blob is not None:
        box, frac = blob
        ph.hu[box] += _lattice_lines(ph, rng, 7.0, 1.0, box) * frac * in_lung(ph, box) * 300.0 * s
