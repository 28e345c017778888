"""The thorax of a phantom: mediastinum (heart, aorta, pulmonary arteries, trachea, oesophagus, nodes), the lungs
and their vessel and bronchial trees, assembled with the chest wall by :func:`render_anatomy`.

Frame and units as in :mod:`finescale.synth.ct_anatomy` (mm; ``z`` caudal, ``y`` posterior, ``x`` patient-left).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from finescale.synth import ct_anatomy as ana
from finescale.synth import ct_geometry as geo
from finescale.synth.ct_anatomy import HU_AIR, HU_BLOOD, HU_FAT, Anatomy, Phantom
from finescale.synth.ct_geometry import Grid, paint, paint_tube, soft_edge

# Normal bronchus: lumen radius = BRONCHUS_TO_ARTERY x the accompanying artery's radius (broncho-arterial ratio
# about 0.7 on the outer diameters), wall = 0.2 x lumen radius + 0.6 mm.
BRONCHUS_TO_ARTERY = 0.62
NORMAL_AIRWAY_GENERATIONS = 4  # bronchi drawn as tubes with a lumen; smaller ones are below the voxel size


def landmarks(a: Anatomy) -> dict[str, np.ndarray]:
    """Mediastinal landmarks (mm, ``(z, y, x)``): carina, hila, aorta and pulmonary-artery paths, node stations."""
    hz, hy, hx = a.heart_centre
    az, ay, ax = a.heart_axes
    cax, cay = a.cavity
    z_arch = a.z_centre - 0.42 * a.z_half
    carina = np.array([a.z_centre - 0.1 * a.z_half, a.spine_y - 48, 0.0])
    root = np.array([hz - 0.55 * az, hy - 0.1 * ay, hx - 0.45 * ax])
    asc_top = np.array([z_arch + 12, root[1] - 4, root[2] - 2])
    desc_top = np.array([z_arch + 12, a.spine_y - 26, 22.0])
    arch = np.array([z_arch, (asc_top[1] + desc_top[1]) / 2, (asc_top[2] + desc_top[2]) / 2 + 4])
    desc_bottom = np.array([a.z_centre + 1.4 * a.z_half, a.spine_y - 22, 14.0])
    lung_cy = a.body_cy + 0.06 * cay
    hila = np.array(
        [[carina[0] + 22, lung_cy - 6, -0.47 * cax + 0.5 * a.lung_width * cax],
         [carina[0] + 30, lung_cy - 6, 0.47 * cax - 0.5 * a.lung_width * cax]]
    )  # fmt: skip
    bifurcation = np.array([carina[0] + 10, a.spine_y - 64, 8.0])
    trunk_root = np.array([hz - 0.75 * az, hy - 0.55 * ay, hx + 0.05 * ax])
    stations = np.array(
        [[z_arch + 16, carina[1], -14.0], [z_arch + 14, carina[1], 14.0],  # right / left paratracheal
         [carina[0] + 18, carina[1] + 10, 0.0], [z_arch + 4, asc_top[1] - 20, 2.0],  # subcarinal, prevascular
         hila[0] + [4, 4, 8], hila[1] + [4, 4, -8]]  # hilar
    )  # fmt: skip
    hiatus = np.array([a.z_centre + (a.dome[1] - 0.08) * a.z_half, a.spine_y - 36, 12.0])
    return {
        "carina": carina, "hila": hila, "stations": stations, "hiatus": hiatus,
        "aorta": np.stack([root, asc_top, arch, desc_top, desc_bottom]), "aorta_r": np.array([15.0, 13.5, 12.5, 11.5]),
        "pa": np.stack([trunk_root, bifurcation, hila[0], hila[1]]),
    }  # fmt: skip


def _tubes(a: Anatomy, lm: dict[str, np.ndarray], z_top: float) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Mediastinal tubes (p0, p1, radius, HU) in painting order: oesophagus, aorta, pulmonary arteries."""
    tubes = [(np.array([z_top, a.spine_y - 24, 6.0]), lm["hiatus"], 7.0, 35.0)]
    path, radii = lm["aorta"], lm["aorta_r"]
    tubes += [(path[i], path[i + 1], float(radii[i]), HU_BLOOD) for i in range(len(radii))]
    pa = lm["pa"]
    tubes += [(pa[0], pa[1], 13.0, HU_BLOOD), (pa[1], pa[2], 9.5, HU_BLOOD), (pa[1], pa[3], 9.0, HU_BLOOD)]
    return tubes


def _hernia(a: Anatomy, lm: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Centre and radius of the hiatal hernia sac: stomach pushed up through the hiatus, behind the heart."""
    r = a.hernia_mm / 2
    return np.array([lm["hiatus"][0] - 0.8 * r, a.spine_y - 16.0 - r, -3.0]), r


def _mediastinum_carve(grid: Grid, a: Anatomy, lm: dict[str, np.ndarray], z_top: float) -> np.ndarray:
    """Fraction (Z, Y, X) of space the lungs cannot take: mediastinal organs plus a few mm of pleura and fat."""
    med = ana.ellipsoid_frac(grid, a.heart_centre, a.heart_axes, a.heart_angle, grow_mm=a.pericardial_fluid_mm + 7)
    for p0, p1, r, _ in _tubes(a, lm, z_top):
        tube = geo.capsule(grid, p0, p1, r + 3.0)
        if tube is not None:
            np.maximum(med[tube[0]], tube[1], out=med[tube[0]])
    trachea = geo.capsule(grid, (z_top, lm["carina"][1], 0.0), lm["carina"], 14.0)
    if trachea is not None:
        np.maximum(med[trachea[0]], trachea[1], out=med[trachea[0]])
    if a.hernia_mm > 0:
        centre, r = _hernia(a, lm)
        sac = geo.capsule(grid, centre, centre, r + 3.0)
        if sac is not None:
            np.maximum(med[sac[0]], sac[1], out=med[sac[0]])
    band = soft_edge(11.0 - np.abs(grid.x), grid.voxel_mm) * (grid.y < a.spine_y - 12)
    med = np.maximum(med, band)
    return np.maximum(med, ana.spine_frac(grid, a, grow_mm=5.0)[0])


def _lungs(grid: Grid, a: Anatomy, zn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction, rho, v) of both lungs before the mediastinum is carved out, each (Z, Y, X) float32."""
    fracs, rhos = [], []
    for side, dome in ((-1, a.dome[0]), (1, a.dome[1])):
        u, v, taper = ana.lung_coords(grid, a, zn, side)
        rho = ana.superellipse(u, v, ana.LUNG_EXPONENT)
        diaphragm = dome + (ana.RECESS_ZN - dome) * np.minimum(rho, 1.0) ** 2 + 0.12 * v
        frac = soft_edge((1 - rho) * 55.0 * taper, grid.voxel_mm) * soft_edge(
            (diaphragm - zn) * a.z_half, grid.spacing[0]
        )
        fracs.append(frac.astype(np.float32))
        rhos.append(rho.astype(np.float32))
    right = grid.x < 0
    return np.maximum(*fracs), np.where(right, *rhos), np.broadcast_to(v, fracs[0].shape).astype(np.float32)


def grow_trees(grid: Grid, a: Anatomy, lm: dict[str, np.ndarray], lung: np.ndarray) -> geo.Tree:
    """The pulmonary arterial tree from both hila (5 lobar roots each); lobe key = side (0 right, 1 left) * 3 + lobe."""
    rng = np.random.default_rng(list(a.tree_seed))
    roots, dirs, lobes = [], [], []
    for side, sign in ((0, -1.0), (1, 1.0)):
        for lobe, d in ((0, (-1.0, -0.1, 0.3)), (0, (-0.6, -0.6, 0.4)), (1, (0.2, -0.8, 0.6)), (2, (0.9, 0.6, 0.2)),
                        (2, (0.8, 0.0, 0.7))):  # fmt: skip
            roots.append(lm["hila"][side])
            dirs.append((d[0], d[1], sign * d[2]))
            lobes.append(side * 3 + lobe)
    return geo.grow_tree(
        rng, np.array(roots), np.array(dirs), np.array(lobes), radius=5.5, length=30.0, generations=9,
        inside=lambda p: grid.lookup(lung, p),
    )  # fmt: skip


def _paint_vessels(hu: np.ndarray, grid: Grid, tree: geo.Tree, lung_frac: np.ndarray) -> None:
    """Every artery as its blood volume splatted along the centreline and spread by a voxel-sized blur: vessels
    thinner than a voxel fade with partial volume, as they do on CT."""
    step = grid.voxel_mm / 2
    points, seg = geo.sample_segments(tree, step)
    density = geo.splat(grid, points, np.pi * tree.r[seg] ** 2 * step / grid.voxel_volume)
    sigma = (0.4, 0.55, 0.55)
    paint(hu, np.clip(ndimage.gaussian_filter(density, sigma), 0, 1) * lung_frac, HU_BLOOD)


def _bronchus_offset(tree: geo.Tree) -> np.ndarray:
    """Where each bronchus runs beside its artery: a unit vector perpendicular to the segment (M, 3)."""
    d = tree.p1 - tree.p0
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    perp = np.cross(d, np.array([0.0, 0.0, 1.0]))
    weak = np.linalg.norm(perp, axis=1) < 0.3
    perp[weak] = np.cross(d[weak], np.array([0.0, 1.0, 0.0]))
    return perp / (np.linalg.norm(perp, axis=1, keepdims=True) + 1e-9)


def _paint_airways(hu: np.ndarray, grid: Grid, a: Anatomy, tree: geo.Tree, lung_frac: np.ndarray) -> np.ndarray:
    """Intrapulmonary bronchi as wall + lumen tubes beside their arteries; returns the lumen fraction (Z, Y, X).

    Peribronchial thickening scales the wall (``a.airway_wall``); bronchiectasis (``a.bronchiectasis``) dilates the
    lumen of a lobe's bronchi beyond the artery and keeps it from tapering, out to the periphery."""
    wall_frac = np.zeros(hu.shape, np.float32)
    lumen_frac = np.zeros(hu.shape, np.float32)
    perp = _bronchus_offset(tree)
    for i in range(len(tree.r)):
        factor = a.bronchiectasis.get(int(tree.lobe[i]), 0.0)
        if tree.generation[i] >= (7 if factor else NORMAL_AIRWAY_GENERATIONS):
            continue
        r_artery = float(tree.r[i])
        lumen = BRONCHUS_TO_ARTERY * (factor * max(r_artery, 2.8) if factor else r_artery)
        wall = (0.2 * lumen + 0.6) * a.airway_wall
        shift = perp[i] * (r_artery + lumen + wall + 0.5)
        p0, p1 = tree.p0[i] + shift, tree.p1[i] + shift
        pad = lumen + wall + 2 * max(grid.spacing)
        box = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
        if box is None:
            continue
        dist = geo.segment_distance(grid.coords(box), p0.astype(np.float32), p1.astype(np.float32))
        np.maximum(wall_frac[box], soft_edge(lumen + wall - dist, grid.voxel_mm), out=wall_frac[box])
        np.maximum(lumen_frac[box], soft_edge(lumen - dist, grid.voxel_mm), out=lumen_frac[box])
    inside = np.clip(2 * lung_frac, 0, 1)
    paint(hu, wall_frac * inside, HU_BLOOD)
    paint(hu, lumen_frac * inside, HU_AIR)
    return lumen_frac * inside


def _paint_mediastinum(hu: np.ndarray, grid: Grid, a: Anatomy, lm: dict[str, np.ndarray], z_top: float) -> None:
    """Heart in its pericardial fat (and fluid), great vessels, trachea and main bronchi, normal small nodes."""
    heart = (a.heart_centre, a.heart_axes, a.heart_angle)
    paint(hu, ana.ellipsoid_frac(grid, *heart, grow_mm=a.pericardial_fluid_mm + 4.0), HU_FAT)
    if a.pericardial_fluid_mm > 0:
        paint(hu, ana.ellipsoid_frac(grid, *heart, grow_mm=a.pericardial_fluid_mm), 12.0)
    paint(hu, ana.ellipsoid_frac(grid, *heart), HU_BLOOD)
    for p0, p1, r, value in _tubes(a, lm, z_top):
        paint_tube(hu, grid, p0, p1, r, value)
    carina, hila = lm["carina"], lm["hila"]
    top = np.array([z_top, carina[1], 0.0])
    for p0, p1, lumen in ((top, carina, 8.5), (carina, hila[0], 6.0), (carina, hila[1], 5.5)):
        paint_tube(hu, grid, p0, p1, lumen + 2.0, HU_BLOOD)
    for p0, p1, lumen in ((top, carina, 8.5), (carina, hila[0], 6.0), (carina, hila[1], 5.5)):
        paint_tube(hu, grid, p0, p1, lumen, HU_AIR)
    if a.hernia_mm > 0:
        centre, r = _hernia(a, lm)
        paint_tube(hu, grid, centre, centre, r, HU_BLOOD)  # stomach wall
        paint_tube(hu, grid, centre, centre, r - 3.0, 15.0)  # fluid content
        sac = geo.capsule(grid, centre, centre, r - 3.0)
        if sac is not None:  # gas rises to the anterior side in a supine patient: an air-fluid level
            box, frac = sac
            paint(hu, frac * (grid.y[:, box[1]] < centre[1] - 0.3 * r), HU_AIR, box)


def place_in_fat(ph: Phantom, rng: np.random.Generator, near: np.ndarray, spread_mm: float = 8.0) -> np.ndarray:
    """A point near ``near`` (mm) that lies in mediastinal fat or lung rather than inside an organ or vessel, as lymph
    nodes do (the first of a few random tries that does; else the last try)."""
    point = near
    for _ in range(12):
        point = near + rng.normal(0, spread_mm, 3)
        if ph.grid.lookup(ph.hu, point[None])[0] < -30:
            break
    return point


def _paint_normal_nodes(ph: Phantom) -> None:
    """Two or three normal small nodes (3-4 mm) in the mediastinal fat, so that a node alone is not a finding."""
    rng = np.random.default_rng([*ph.anatomy.tree_seed, 11])
    for station in ph.landmarks["stations"][: int(rng.integers(2, 4))]:
        centre = place_in_fat(ph, rng, station)
        paint_tube(ph.hu, ph.grid, centre, centre + [0, 0, 2.0], rng.uniform(3.0, 4.0), HU_BLOOD)


def render_anatomy(grid: Grid, a: Anatomy, rng: np.random.Generator) -> Phantom:
    """Render a normal chest (modified by the anatomy-level findings already folded into ``a``) on ``grid``.
    ``rng`` draws the lung texture only; everything else follows from ``a``."""
    zn = ((grid.z - a.z_centre) / a.z_half).astype(np.float32)
    z_top = float(grid.z.min()) - 40.0
    lm = landmarks(a)
    hu = np.full(grid.shape, HU_AIR, np.float32)
    ana.paint_wall_and_table(hu, grid, a, zn)
    lung_frac, rho, v = _lungs(grid, a, zn)
    below = (rho > 0) & (lung_frac < 0.5) & (zn > min(a.dome) - 0.05)
    ana.paint_abdomen(hu, grid, a, zn, below)
    ana.paint_ribs_sternum(hu, grid, a, zn)
    ana.paint_spine(hu, grid, a)
    lung_frac *= 1 - _mediastinum_carve(grid, a, lm, z_top)
    ana.paint_parenchyma(hu, lung_frac, v, a, rng)
    lung = lung_frac > 0.5
    tree = grow_trees(grid, a, lm, lung)
    _paint_vessels(hu, grid, tree, lung_frac)
    lumen = _paint_airways(hu, grid, a, tree, lung_frac)
    _paint_mediastinum(hu, grid, a, lm, z_top)
    phantom = Phantom(grid=grid, anatomy=a, hu=hu, lung=lung, rho=rho, v=v, zn=zn, lumen=lumen,
                      trees={"vessels": tree}, landmarks=lm)  # fmt: skip
    _paint_normal_nodes(phantom)
    return phantom
