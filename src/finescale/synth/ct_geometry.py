"""Geometry for the procedural chest phantoms: the voxel grid in patient millimetres, partial-volume rasterisation of
tubes (capsules), splatting of thin structures, smooth random fields and branching (vessel / bronchial) trees.

Coordinates are millimetres in the patient frame, ordered ``(z, y, x)`` like the arrays: ``z`` grows towards the feet,
``y`` towards the back (the table side), ``x`` towards the patient's left (the image's right, radiological view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Murray's law: a vessel splitting into two equal children keeps r^3 = 2 r_child^3.
MURRAY_RATIO = 2.0 ** (-1.0 / 3.0)
RETRIES = 4  # new directions a tree branch tries before it is cut


@dataclass(frozen=True)
class Grid:
    """A ``(Z, Y, X)`` voxel grid, ``spacing`` ``(z, y, x)`` mm, centred on the patient frame's origin + ``shift``."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (z, y, x) mm: where the patient sits in the field of view

    def axis(self, i: int) -> np.ndarray:
        """Voxel-centre coordinates (mm) along axis ``i``, shaped to broadcast against ``(Z, Y, X)``."""
        n, s = self.shape[i], self.spacing[i]
        coords = ((np.arange(n) - (n - 1) / 2) * s - self.shift[i]).astype(np.float32)
        return coords.reshape([-1 if j == i else 1 for j in range(3)])

    @property
    def z(self) -> np.ndarray:
        return self.axis(0)

    @property
    def y(self) -> np.ndarray:
        return self.axis(1)

    @property
    def x(self) -> np.ndarray:
        return self.axis(2)

    @property
    def voxel_mm(self) -> float:
        """In-plane voxel size (mm): the width of a partial-volume edge."""
        return float(np.mean(self.spacing[1:]))

    @property
    def voxel_volume(self) -> float:
        return float(np.prod(self.spacing))

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` mm -> ``(N, 3)`` float voxel indices."""
        centre = (np.asarray(self.shape) - 1) / 2
        return (points + np.asarray(self.shift)) / np.asarray(self.spacing) + centre

    def lookup(self, volume: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Nearest-voxel values of ``volume`` at ``(N, 3)`` mm points; points outside the grid read as 0."""
        idx = np.rint(self.to_index(points)).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=1)
        out = np.zeros(len(points), dtype=volume.dtype)
        out[ok] = volume[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices covering the mm box ``[lo, hi]``, or ``None`` when it misses the grid."""
        a = np.floor(self.to_index(np.asarray(lo)[None])[0]).astype(int)
        b = np.ceil(self.to_index(np.asarray(hi)[None])[0]).astype(int) + 1
        a, b = np.maximum(a, 0), np.minimum(b, self.shape)
        if np.any(b <= a):
            return None
        return tuple(slice(int(i), int(j)) for i, j in zip(a, b, strict=True))  # type: ignore[return-value]

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.z[box[0]], self.y[:, box[1]], self.x[:, :, box[2]]


def soft_edge(signed_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume fraction from a signed distance (mm, positive inside): a one-voxel linear ramp at the edge."""
    return np.clip(signed_mm / voxel_mm + 0.5, 0.0, 1.0)


def paint(hu: np.ndarray, frac: np.ndarray, value: float | np.ndarray, box: tuple[slice, ...] = ()) -> None:
    """Mix tissue ``value`` (HU) into ``hu[box]`` in place with partial-volume fraction ``frac`` (0..1)."""
    region = hu[box] if box else hu
    region += frac * (value - region)


def segment_distance(box_coords, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance (mm) from every voxel of a box to the segment ``p0``-``p1`` (mm, ``(z, y, x)``)."""
    z, y, x = box_coords
    d = p1 - p0
    length2 = float(d @ d) or 1e-6
    t = np.clip(((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / length2, 0.0, 1.0)
    return np.sqrt((z - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (x - p0[2] - t * d[2]) ** 2)


def capsule(grid: Grid, p0, p1, radius: float) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Partial-volume fraction of a capsule (tube with round ends) of ``radius`` mm: ``(box, frac)`` or ``None``."""
    p0, p1 = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    pad = radius + 2 * max(grid.spacing)
    box = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    if box is None:
        return None
    return box, soft_edge(radius - segment_distance(grid.coords(box), p0, p1), grid.voxel_mm)


def deposit(grid: Grid, p0, p1, radius: float) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Partial-volume fraction of a capsule thinner than a voxel: its volume spread over the voxels along its axis by
    trilinear weights, so a 2 mm calcification or wire keeps its true volume (a distance ramp would lose or inflate
    it). Returns ``(box, fraction)`` or ``None`` when it misses the grid."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    length = float(np.linalg.norm(p1 - p0))
    n = max(1, int(np.ceil(length / (0.5 * min(grid.spacing)))))
    points = p0 + (p1 - p0) * ((np.arange(n) + 0.5) / n)[:, None]
    volume = (np.pi * radius**2 * length + 4 / 3 * np.pi * radius**3) / n / grid.voxel_volume
    idx = grid.to_index(points)
    base = np.floor(idx).astype(np.int64)
    w = idx - base
    lo = np.maximum(base.min(0), 0)
    hi = np.minimum(base.max(0) + 2, grid.shape)
    if np.any(hi <= lo):
        return None
    frac = np.zeros(tuple(hi - lo), np.float32)
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        at = base + c - lo
        ok = np.all((at >= 0) & (at < frac.shape), axis=1)
        weight = np.prod(np.where(c, w, 1 - w), axis=1) * volume
        np.add.at(frac, tuple(at[ok].T), weight[ok])
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)), np.clip(frac, 0, 1)  # type: ignore[return-value]


def paint_tube(hu: np.ndarray, grid: Grid, p0, p1, radius: float, value: float) -> None:
    """Paint a tube of tissue ``value`` (HU) in place; sub-voxel tubes keep their volume (:func:`deposit`)."""
    tube = deposit(grid, p0, p1, radius) if radius < 0.6 * min(grid.spacing) else capsule(grid, p0, p1, radius)
    if tube is not None:
        paint(hu, tube[1], value, tube[0])


def splat(grid: Grid, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accumulate ``weights`` at the nearest voxels of ``(N, 3)`` mm ``points`` -> ``(Z, Y, X)`` float32."""
    idx = np.rint(grid.to_index(points)).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
    flat = np.ravel_multi_index(tuple(idx[ok].T), grid.shape)
    out = np.bincount(flat, weights=weights[ok], minlength=int(np.prod(grid.shape)))
    return out.reshape(grid.shape).astype(np.float32)


def upsample_linear(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of ``coarse`` onto ``shape``, both grids spanning the same extent (edges
    aligned on cell centres); a few gathers per axis, much cheaper than ``ndimage.zoom``."""
    out = coarse
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        pos = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, m - 1)
        w = (pos - i0).astype(np.float32).reshape([-1 if j == axis else 1 for j in range(out.ndim)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
    return out


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], scale_vox: tuple[float, float, float]
) -> np.ndarray:
    """A smooth zero-mean, unit-variance random field ``(Z, Y, X)`` float32 whose blobs are about ``scale_vox`` voxels
    wide: white noise on a coarse grid, smoothed and upsampled (cheap whatever the scale)."""
    coarse = tuple(max(2, int(np.ceil(n / s)) + 1) for n, s in zip(shape, scale_vox, strict=True))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.8, mode="wrap")
    fine = upsample_linear(field, shape)
    fine -= fine.mean()
    return fine / (fine.std() + 1e-6)


def random_perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to each row of ``d`` ``(N, 3)``."""
    v = rng.standard_normal(d.shape)
    v -= (v * d).sum(1, keepdims=True) * d
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-9)


def rotate(d: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of unit rows ``d`` about unit rows ``axis`` perpendicular to them by ``angle`` (rad)."""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return d * c + np.cross(axis, d) * s


@dataclass(frozen=True)
class Tree:
    """Branch segments: ``p0``, ``p1`` ``(M, 3)`` mm, radius ``r`` (mm), ``generation`` and ``lobe`` ``(M,)``."""

    p0: np.ndarray
    p1: np.ndarray
    r: np.ndarray
    generation: np.ndarray
    lobe: np.ndarray


def grow_tree(
    rng: np.random.Generator,
    roots: np.ndarray,
    directions: np.ndarray,
    lobes: np.ndarray,
    *,
    radius: float,
    length: float,
    generations: int,
    inside: Callable[[np.ndarray], np.ndarray],
) -> Tree:
    """Grow a dichotomous tree from ``roots`` ``(K, 3)`` along ``directions`` ``(K, 3)``: each branch splits in two,
    radii follow Murray's law, lengths shrink by 0.85, children diverge by 20-40 degrees; a branch whose end leaves
    ``inside`` (``(N, 3)`` mm -> bool) turns a few times, then is cut with its subtree."""
    pos = np.asarray(roots, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    lobe = np.asarray(lobes)
    parts: list[tuple[np.ndarray, ...]] = []
    r, seg = radius, length
    for g in range(generations):
        seg_len = seg * rng.uniform(0.75, 1.25, len(pos))
        base = d.copy()
        end = pos + d * seg_len[:, None]
        keep = inside(end)
        for _ in range(RETRIES):  # a branch heading out of the lung turns (by up to ~60 degrees) before it is cut
            retry = np.flatnonzero(~keep)
            if len(retry) == 0:
                break
            turn = rotate(base[retry], random_perpendicular(rng, base[retry]), rng.uniform(0.3, 1.1, len(retry)))
            d[retry] = turn
            end[retry] = pos[retry] + turn * seg_len[retry, None]
            keep[retry] = inside(end[retry])
        parts.append((pos[keep], end[keep], np.full(keep.sum(), r), np.full(keep.sum(), g), lobe[keep]))
        pos, d, lobe = np.repeat(end[keep], 2, 0), np.repeat(d[keep], 2, 0), np.repeat(lobe[keep], 2)
        if len(pos) == 0:
            break
        axis = np.repeat(random_perpendicular(rng, d[::2]), 2, 0)
        angle = rng.uniform(0.35, 0.7, len(pos)) * np.where(np.arange(len(pos)) % 2 == 0, 1.0, -1.0)
        d = rotate(d, axis, angle)
        d += 0.15 * random_perpendicular(rng, d)  # a little tortuosity
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        r, seg = r * MURRAY_RATIO, seg * 0.85
    p0, p1, rr, gen, lb = (np.concatenate(c) for c in zip(*parts, strict=True))
    return Tree(p0=p0, p1=p1, r=rr, generation=gen.astype(np.int16), lobe=lb.astype(np.int16))


def sample_segments(tree: Tree, step_mm: float, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step_mm`` along the (masked) segments -> ``(N, 3)`` mm points and the ``(N,)`` segment ids."""
    ids = np.flatnonzero(mask) if mask is not None else np.arange(len(tree.r))
    lengths = np.linalg.norm(tree.p1[ids] - tree.p0[ids], axis=1)
    counts = np.maximum(1, np.ceil(lengths / step_mm).astype(int))
    seg = np.repeat(ids, counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 0.5) / np.repeat(counts, counts)
    points = tree.p0[seg] + (tree.p1[seg] - tree.p0[seg]) * t[:, None]
    return points, seg
