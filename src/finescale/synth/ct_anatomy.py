"""Normal chest anatomy of the procedural CT phantoms, in Hounsfield units.

A patient is a handful of numbers (:class:`Anatomy`, drawn by :func:`sample_anatomy`); :func:`render_anatomy` turns
them into a ``(Z, Y, X)`` float32 HU volume on a :class:`~finescale.synth.ct_geometry.Grid` plus the masks and
landmarks that the abnormality signatures (``ct_findings``) draw on. Frame: ``z`` towards the feet, ``y`` towards
the back (table side), ``x`` towards the patient's left; ``zn`` is the craniocaudal position normalised so that the
lung apices sit near -0.9 and the costophrenic recesses near +0.9.

Tissue values are unenhanced-CT HU: air -1000, lung parenchyma about -860, fat -90, blood and muscle 40-50,
trabecular bone 200-300, cortical bone 700+.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from finescale.synth import ct_geometry as geo
from finescale.synth.ct_geometry import Grid, paint, soft_edge

HU_AIR, HU_FAT, HU_SOFT, HU_BLOOD, HU_LIVER, HU_BONE = -1000.0, -90.0, 45.0, 40.0, 55.0, 420.0
LUNG_EXPONENT = 2.4  # superellipse exponent of a lung's axial outline (flatter than an ellipse against the ribs)
RECESS_ZN = 0.9  # zn of the posterior costophrenic recesses, the lungs' lowest point
LOBES = ("upper", "middle", "lower")  # lobe ids of the trees: 0, 1, 2 (the left "middle" is the lingula)


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest; lengths in mm in the patient frame."""

    body_ax: float  # body half-width
    body_ay: float  # body half-depth (front to back)
    body_cy: float  # body centre, y
    fat: float  # subcutaneous fat thickness
    muscle: float  # chest-wall muscle thickness
    z_centre: float  # z (mm) of zn = 0
    z_half: float  # mm per unit of zn
    lung_width: float  # lung half-width / thoracic cavity half-width
    dome: tuple[float, float]  # zn of the right and left diaphragm dome tops
    heart_centre: tuple[float, float, float]  # (z, y, x)
    heart_axes: tuple[float, float, float]  # (z, y, x) semi-axes
    heart_angle: float  # rotation of the heart's axial outline (rad; the apex points left and forward)
    spine_y: float  # vertebral body centre, y
    rib_period: float  # craniocaudal distance between neighbouring ribs
    rib_phase: float
    parenchyma_hu: float  # mean lung attenuation at this inspiration
    tree_seed: tuple[int, ...]  # the vessel and bronchial trees' own RNG stream
    # set by findings that change the anatomy itself (ct_findings.modify_anatomy)
    pericardial_fluid_mm: float = 0.0
    airway_wall: float = 1.0  # factor on the normal bronchial wall thickness
    bronchiectasis: dict[int, float] = field(default_factory=dict)  # lobe key (side * 3 + lobe) -> lumen factor
    hernia_mm: float = 0.0  # diameter of a hiatal hernia sac, 0 = none

    @property
    def cavity(self) -> tuple[float, float]:
        """Half-width and half-depth of the thoracic cavity (inside fat and muscle)."""
        return self.body_ax - self.fat - self.muscle, self.body_ay - self.fat - self.muscle


def sample_anatomy(rng: np.random.Generator, tree_seed: tuple[int, ...]) -> Anatomy:
    """Draw one patient's normal anatomy."""
    ax = float(np.clip(rng.normal(148, 11), 120, 175))
    ay = float(np.clip(rng.normal(102, 8), 85, 122))
    fat = float(np.clip(rng.uniform(7, 24) + 0.3 * (ax - 148), 5, 32))
    muscle = float(rng.uniform(8, 13))
    cy = float(rng.normal(-6, 3))
    cax, cay = ax - fat - muscle, ay - fat - muscle
    z_half = float(rng.uniform(138, 156))
    heart = (0.22 * z_half + rng.normal(0, 4), cy - 0.28 * cay + rng.normal(0, 3), 0.14 * cax + rng.normal(0, 3))
    size = rng.uniform(0.9, 1.08)
    return Anatomy(
        body_ax=ax, body_ay=ay, body_cy=cy, fat=fat, muscle=muscle,
        z_centre=float(rng.normal(0, 6)), z_half=z_half, lung_width=float(rng.uniform(0.41, 0.45)),
        dome=(float(rng.normal(0.36, 0.03)), float(rng.normal(0.43, 0.03))),
        heart_centre=tuple(float(v) for v in heart),
        heart_axes=(float(46 * size), float(0.36 * cay * size + 5), float(0.33 * cax * size + 6)),
        heart_angle=float(rng.normal(0.5, 0.08)),
        spine_y=float(cy + ay - fat - muscle - rng.uniform(18, 24)),
        rib_period=float(rng.uniform(25, 30)), rib_phase=float(rng.uniform(0, 1)),
        parenchyma_hu=float(rng.normal(-862, 12)), tree_seed=tree_seed,
    )  # fmt: skip


@dataclass
class Phantom:
    """A rendered chest: the HU volume and what the abnormality signatures need to know about it."""

    grid: Grid
    anatomy: Anatomy
    hu: np.ndarray  # (Z, Y, X) float32 HU
    lung: np.ndarray  # (Z, Y, X) bool
    rho: np.ndarray  # (Z, Y, X) float32: lung superellipse radius, 0 at a lung's core, 1 at its pleura
    v: np.ndarray  # (Z, Y, X) float32: front-to-back position in the lung, -1 anterior .. +1 posterior (dependent)
    zn: np.ndarray  # (Z, 1, 1) float32: normalised craniocaudal position
    lumen: np.ndarray  # (Z, Y, X) float32 airway-lumen fraction inside the lungs (air bronchograms keep it)
    trees: dict[str, geo.Tree]  # "vessels", "airways"
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (3,) or (N, 3) mm points


def lung_coords(grid: Grid, a: Anatomy, zn: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, taper) of one lung (side -1 right, +1 left): u, v in lung half-axes, taper (Z, 1, 1)."""
    cax, cay = a.cavity
    taper = np.sqrt(np.clip((zn + 0.92) / 0.55, 0.0, 1.0)) * (1 + 0.08 * np.clip(zn, 0, 1))
    lx = a.lung_width * cax * taper + 1e-3
    ly = 0.80 * cay * taper + 1e-3
    u = (grid.x - side * 0.47 * cax) / lx
    v = (grid.y - (a.body_cy + 0.06 * cay)) / ly
    return u, v, taper


def superellipse(u: np.ndarray, v: np.ndarray, p: float) -> np.ndarray:
    return (np.abs(u) ** p + np.abs(v) ** p) ** (1.0 / p)


def ellipsoid_frac(grid: Grid, centre, axes, angle: float, grow_mm: float = 0.0) -> np.ndarray:
    """Partial-volume fraction of the heart-like ellipsoid, rotated by ``angle`` in the axial plane."""
    cz, cy, cx = centre
    dz, dy, dx = grid.z - cz, grid.y - cy, grid.x - cx
    c, s = np.cos(angle), np.sin(angle)
    xr, yr = c * dx + s * dy, -s * dx + c * dy
    az, ay, ax = (v + grow_mm for v in axes)
    rho = np.sqrt((dz / az) ** 2 + (yr / ay) ** 2 + (xr / ax) ** 2)
    return soft_edge((1 - rho) * min(az, ay, ax), grid.voxel_mm)


def _body_frac(grid: Grid, a: Anatomy, zn: np.ndarray, inset: float) -> np.ndarray:
    """Fraction inside the body outline shrunk by ``inset`` mm; the upper chest narrows towards the neck."""
    scale = (1 - 0.12 * np.clip(-(zn + 0.6) / 0.5, 0, 1)).ravel()
    out = np.empty(grid.shape, np.float32)
    for value in np.unique(scale):  # one axial outline per distinct scale: most slices share scale 1
        ax, ay = a.body_ax * value - inset, a.body_ay * value - inset
        r = superellipse(grid.x[0] / ax, (grid.y[0] - a.body_cy) / ay, 2.2)
        out[scale == value] = soft_edge((1 - r) * min(ax, ay), grid.voxel_mm)
    return out


def paint_wall_and_table(hu: np.ndarray, grid: Grid, a: Anatomy, zn: np.ndarray) -> None:
    y_back = a.body_cy + a.body_ay
    table = soft_edge(4.0 - np.abs(grid.y - (y_back + 8.0)), grid.voxel_mm) * np.ones_like(grid.x)
    paint(hu, np.broadcast_to(table, hu.shape), 120.0)  # carbon-fibre table under the patient
    paint(hu, _body_frac(grid, a, zn, 0.0), HU_FAT)
    paint(hu, _body_frac(grid, a, zn, a.fat), HU_SOFT)
    paint(hu, _body_frac(grid, a, zn, a.fat + a.muscle), HU_FAT + 10)  # cavity: mediastinal and pleural fat


def paint_ribs_sternum(hu: np.ndarray, grid: Grid, a: Anatomy, zn: np.ndarray) -> None:
    """Ribs as bands in the chest wall that run down and forward from the spine; sternum at the front."""
    cax, cay = a.cavity
    r = superellipse(grid.x / (cax + 2), (grid.y - a.body_cy) / (cay + 2), 2.2)
    shell = soft_edge(3.5 - np.abs(r - 1.0) * cax, grid.voxel_mm)  # about 7 mm thick radially
    phi = np.arccos(np.clip((grid.y - a.body_cy) / (np.hypot(grid.x, grid.y - a.body_cy) + 1e-3), -1, 1))
    k = (grid.z - a.z_centre + 0.95 * a.z_half) / a.rib_period - a.rib_phase - 1.4 * phi / np.pi
    in_rib = soft_edge(0.19 * a.rib_period - np.abs(k - np.round(k)) * a.rib_period, grid.voxel_mm)
    ribs = shell * in_rib * (k > -0.4) * (k < 11.5) * (phi < 0.82 * np.pi) * (zn < 0.95)
    paint(hu, ribs, HU_BONE)
    sternum = (np.abs(grid.x) < 13) * soft_edge(6 - np.abs(grid.y - (a.body_cy - cay - 3)), grid.voxel_mm)
    paint(hu, sternum * ((zn > -0.75) & (zn < 0.5)), 320.0)


def spine_frac(grid: Grid, a: Anatomy, grow_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(fraction, superellipse radius) of the vertebral bodies, (1, Y, X)."""
    r = superellipse(grid.x / (18.0 + grow_mm), (grid.y - a.spine_y) / (15.0 + grow_mm), 2.0)
    return soft_edge((1 - r) * (15.0 + grow_mm), grid.voxel_mm), r


def paint_spine(hu: np.ndarray, grid: Grid, a: Anatomy) -> None:
    """Paraspinal muscles, vertebral bodies with cortex and discs, canal, posterior arch and spinous process."""
    h = grid.voxel_mm
    paraspinal = superellipse(grid.x / 48.0, (grid.y - a.spine_y - 38) / 22.0, 2.0)
    paint(hu, soft_edge((1 - paraspinal) * 22.0, h), 50.0)
    disc = np.abs(((grid.z - a.z_centre) / 27.0 + a.rib_phase) % 1.0 - 0.5) > 0.41  # (Z, 1, 1): 5 of 27 mm
    vert, r = spine_frac(grid, a)
    paint(hu, vert, np.where(disc, 85.0, 230.0))
    paint(hu, soft_edge(2.0 - np.abs(1 - r) * 15.0, h), np.where(disc, 85.0, 650.0))
    canal = np.hypot(grid.x, grid.y - a.spine_y - 26)
    arch = soft_edge(4.0 - np.abs(canal - 11.0), h) * (grid.y > a.spine_y + 14)
    spinous = soft_edge((1 - superellipse(grid.x / 5.0, (grid.y - a.spine_y - 46) / 12.0, 2.0)) * 5.0, h)
    paint(hu, np.maximum(arch, spinous), 500.0)
    paint(hu, soft_edge(8.0 - canal, h), 25.0)


def paint_abdomen(hu: np.ndarray, grid: Grid, a: Anatomy, zn: np.ndarray, below: np.ndarray) -> None:
    """Liver on the right, spleen and stomach (with its gas bubble) on the left, below the diaphragm."""
    cav = _body_frac(grid, a, zn, a.fat + a.muscle)
    paint(hu, cav * below, np.where(grid.x < 15, HU_LIVER, 42.0))
    cax, cay = a.cavity
    gas_z = a.z_centre + (a.dome[1] + 0.12) * a.z_half
    bubble = geo.capsule(
        grid, (gas_z, a.body_cy - 0.3 * cay, 0.45 * cax), (gas_z, a.body_cy - 0.1 * cay, 0.5 * cax), 14
    )
    if bubble is not None:
        paint(hu, bubble[1] * below[bubble[0]], HU_AIR, bubble[0])


def paint_parenchyma(hu: np.ndarray, lung_frac: np.ndarray, v: np.ndarray, a: Anatomy, rng) -> None:
    """Lung attenuation with its physiological front-to-back gradient (dependent lung is denser) and fine texture."""
    texture = geo.smooth_field(rng, hu.shape, (1.5, 2.0, 2.0))
    paint(hu, lung_frac, a.parenchyma_hu + 45.0 * np.clip((v + 1) / 2, 0, 1) + 12.0 * texture)
