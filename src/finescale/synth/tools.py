"""Procedural cutting tools (twist drills, end mills) standing on a turntable, seen from views around their axis.

Geometry. A tool stands upright, cutting end up, in a holder on a turntable; the camera looks at it horizontally
(orthographic projection, image rows y grow downwards). Its surface is a radius field ``r[i, j]`` on a grid of image
rows ``i`` by tool-frame azimuths ``phi_j = 2 pi j / P``: a fluted body ``R(y) * (1 - depth(y) * flute(phi - h(y)))``
with helical flutes (``h`` turns linearly with y), a conical drill point or an end mill's chamfered end on top, a
plain shank below and a wider holder at the bottom. View ``v`` turns the turntable by ``theta``: a surface point at
azimuth ``phi`` then faces the camera at ``psi = phi + theta`` (``psi = 0``: straight at the camera) and projects
to column ``cx + r sin(psi)``. A z-buffer over the grid picks the front-most sample of every pixel, so lands hide
flutes near the silhouette and the silhouette's width changes as the flutes turn.

Light, backdrop, metal shading and the camera live in :mod:`finescale.synth.tool_studio`, defects in
:mod:`finescale.synth.tool_defects`. A broken tool carries a :class:`FractureCut`: material above a rough, tilted
surface is gone, and rays that enter the tool where it is gone are marched through it until they meet the fracture
face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

COATINGS = {  # name: (albedo RGB in [0, 1], share of tools)
    "steel": ((0.62, 0.63, 0.65), 0.35),
    "black oxide": ((0.17, 0.17, 0.18), 0.2),
    "TiN": ((0.80, 0.60, 0.27), 0.15),
    "TiAlN": ((0.33, 0.30, 0.37), 0.15),
    "carbide": ((0.50, 0.51, 0.53), 0.15),
}


@dataclass(frozen=True)
class ToolSpec:
    """One tool and its place in the image; lengths in pixels of a ``height`` x ``width`` image, angles in radians."""

    kind: str  # "drill" | "endmill"
    flutes: int
    height: int
    width: int
    cx: float  # column of the axis (continuous: pixel c covers [c, c + 1))
    radius: float  # body radius R
    y_tip: float  # top of the tool
    cone: float  # height of the drill point (an end mill: of its corner chamfer)
    y_flute_end: float  # flutes run out below this row ...
    runout: float  # ... over this many rows
    y_holder: float  # top of the holder
    y_floor: float  # turntable surface (bottom of the holder)
    holder_radius: float
    helix: float  # flute twist, radians per row
    phase: float  # flute phase at row 0
    depth: float  # flute depth / R
    flute_share: float  # share of one flute period taken by the flute (the rest is land)
    clearance: float  # land relief behind the margin, / R
    albedo: tuple[float, float, float]
    shininess: float

    @property
    def period(self) -> float:
        return 2.0 * math.pi / self.flutes

    @property
    def y_body(self) -> float:
        """First row at full radius (below the point or chamfer)."""
        return self.y_tip + self.cone

    def edge_azimuth(self, y: float | np.ndarray, flute: int = 0) -> float | np.ndarray:
        """Tool-frame azimuth of cutting edge ``flute`` at row ``y`` (where the flute meets the land)."""
        return self.phase + self.helix * y + self.flute_share * self.period + flute * self.period


def sample_tool(rng: np.random.Generator, height: int, width: int) -> ToolSpec:
    """A random drill (55 %) or end mill with 2-4 flutes, coating and placement in a ``height`` x ``width`` image."""
    drill = rng.random() < 0.55
    radius = rng.uniform(0.2, 0.28) * width
    y_tip = rng.uniform(0.04, 0.09) * height
    y_holder = rng.uniform(0.8, 0.87) * height
    names = list(COATINGS)
    coating = names[int(rng.choice(len(names), p=[COATINGS[k][1] for k in names]))]
    helix_angle = math.radians(rng.uniform(22, 34) if drill else rng.uniform(30, 45))
    return ToolSpec(
        kind="drill" if drill else "endmill",
        flutes=2 if drill else int(rng.choice([2, 3, 4])),
        height=height,
        width=width,
        cx=width / 2 + rng.uniform(-0.04, 0.04) * width,
        radius=radius,
        y_tip=y_tip,
        cone=radius / math.tan(math.radians(59)) if drill else rng.uniform(0.03, 0.07) * radius,
        y_flute_end=y_tip + rng.uniform(0.55, 0.75) * (y_holder - y_tip),
        runout=rng.uniform(0.6, 1.2) * radius,
        y_holder=y_holder,
        y_floor=min(y_holder + rng.uniform(0.05, 0.08) * height, 0.97 * height),
        holder_radius=min(rng.uniform(1.3, 1.6) * radius, 0.46 * width),
        helix=math.tan(helix_angle) / radius,
        phase=rng.uniform(0, 2 * math.pi),
        depth=rng.uniform(0.32, 0.42) if drill else rng.uniform(0.22, 0.32),
        flute_share=rng.uniform(0.5, 0.6),
        clearance=0.035 if drill else 0.02,
        albedo=COATINGS[coating][0],
        shininess=rng.uniform(25, 70),
    )


@dataclass(frozen=True)
class FractureCut:
    """Material above ``y = level + sx * x + sz * z + sum a sin(kx x + kz z + p)`` is gone; (x, z) in tool-frame pixels
    from the axis (z towards the camera at theta = 0), ``waves`` rows of (a, kx, kz, p)."""

    level: float
    sx: float
    sz: float
    waves: np.ndarray  # (K, 4)

    def y(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        a, kx, kz, p = (w.reshape((-1,) + (1,) * np.ndim(x)) for w in self.waves.T)
        return self.level + self.sx * x + self.sz * z + (a * np.sin(kx * x[None] + kz * z[None] + p)).sum(0)

    def gradient(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dy/dx, dy/dz) of the surface at tool-frame points."""
        a, kx, kz, p = (w.reshape((-1,) + (1,) * np.ndim(x)) for w in self.waves.T)
        c = a * np.cos(kx * x[None] + kz * z[None] + p)
        return self.sx + (c * kx).sum(0), self.sz + (c * kz).sum(0)


@dataclass
class Surface:
    """The tool on its (H, P) grid of rows x azimuths; defects edit these fields before rendering."""

    r: np.ndarray  # (H, P) float32 radius in px, 0 where there is nothing
    albedo: np.ndarray  # (H, P, 3) float32
    gloss: np.ndarray  # (H, P) float32 weight of highlight and reflection
    edge: np.ndarray  # (H, P) float32 honed-edge brightness in [0, 1]
    holder: np.ndarray  # (H,) bool rows of the holder
    cut: FractureCut | None = None
    removed: np.ndarray | None = None  # (H, P) bool samples above the cut

    @property
    def phi(self) -> np.ndarray:
        return np.arange(self.r.shape[1]) * (2 * math.pi / self.r.shape[1])

    def break_off(self, cut: FractureCut) -> None:
        phi = self.phi[None]
        rows = np.arange(self.r.shape[0])[:, None] + 0.5
        self.cut = cut
        self.removed = rows < cut.y(self.r * np.sin(phi), self.r * np.cos(phi))


def azimuth_samples(width: int) -> int:
    """Azimuth samples P of the grid: about 0.5 px apart on the front of the widest tool."""
    return 4 * width


def flute_phase(spec: ToolSpec, phi: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position within the flute period, in [0, 1): the flute spans [0, flute_share), the cutting edge is at its end."""
    return np.mod(phi - spec.phase - spec.helix * rows, spec.period) / spec.period


def build_surface(spec: ToolSpec, rng: np.random.Generator) -> Surface:
    """The defect-free tool and holder on the (H, P) grid."""
    h, p = spec.height, azimuth_samples(spec.width)
    rows = np.arange(h)[:, None] + 0.5
    phi = np.arange(p)[None] * (2 * math.pi / p)
    t = flute_phase(spec, phi, rows)
    s = np.clip(t / spec.flute_share, 0, 1)
    groove = np.where(t < spec.flute_share, np.sin(math.pi * s**1.5) ** 0.8, 0.0)  # deepest near the cutting edge
    land = np.clip((t - spec.flute_share) / (1 - spec.flute_share), 0, 1)
    relief = np.clip((land - 0.15) / 0.1, 0, 1) * np.clip((1 - land) / 0.05, 0, 1)  # margin, then relieved land
    fade = np.clip((spec.y_flute_end + spec.runout - rows) / spec.runout, 0, 1)
    fade = fade * fade * (3 - 2 * fade)
    profile = 1 - fade * (spec.depth * groove + spec.clearance * relief)
    top = np.clip((rows - spec.y_tip) / max(spec.cone, 1e-6), 0, 1)
    outline = spec.radius * (top if spec.kind == "drill" else 0.93 + 0.07 * top) * (rows >= spec.y_tip)
    r = outline * profile
    holder = ((rows >= spec.y_holder) & (rows < spec.y_floor))[:, 0]
    nose = np.clip((rows - spec.y_holder) / (0.02 * h), 0.85, 1.0)  # chamfered collet nose
    groove_rows = np.abs(np.mod(rows - spec.y_holder, 0.03 * h) - 0.015 * h) < 0.6
    r = np.where(holder[:, None], spec.holder_radius * nose * (1 - 0.03 * groove_rows), r)
    r = np.where(rows >= spec.y_floor, 0.0, r).astype(np.float32)

    # grinding marks: fine stripes along the helix on the flutes, around the tool on the shank
    stripes = cv2.resize(rng.standard_normal((1, 64)).astype(np.float32), (256, 1), interpolation=cv2.INTER_CUBIC)[0]
    along = stripes[(t * 255).astype(int)] * fade + stripes[(rows * 7.3 % 256).astype(int)] * (1 - fade)
    albedo = np.array(spec.albedo, np.float32) * (1 + 0.06 * along[..., None])
    holder_albedo = np.array([0.12, 0.12, 0.13] if rng.random() < 0.5 else [0.45, 0.46, 0.48], np.float32)
    albedo = np.where(holder[:, None, None], holder_albedo, albedo).astype(np.float32)
    gloss = np.where(holder[:, None], 0.7, 1.0).astype(np.float32) * np.ones_like(r)
    arc = spec.radius * spec.period  # px per unit of flute phase
    edge = np.exp(-(((t - spec.flute_share) * arc / 0.9) ** 2)) + 0.4 * np.exp(-(((land - 0.15) * arc / 1.2) ** 2))
    edge = (edge * fade * (r > 0) * ~holder[:, None]).astype(np.float32)
    return Surface(r=r, albedo=albedo, gloss=gloss, edge=edge, holder=holder)


@dataclass
class ViewHits:
    """What each pixel of one view sees: ``sample`` (H, W) int grid column j of the front surface sample (-1: none;
    its row is the pixel's row), ``alpha`` (H, W) tool coverage in [0, 1], ``fracture`` (H, W) bool fracture face."""

    sample: np.ndarray
    alpha: np.ndarray
    fracture: np.ndarray
    normals: np.ndarray = field(repr=False)  # (H, W, 3) camera-frame unit normals where alpha > 0


def _front_samples(r: np.ndarray, cx: float, theta: float, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer: (H, W) grid column of the front-most sample per pixel (-1: none) and (H,) silhouette [x0, x1] rows."""
    h, p = r.shape
    psi = np.arange(p) * (2 * math.pi / p) + theta
    sin, cos = np.sin(psi)[None], np.cos(psi)[None]
    x = cx + r * sin
    keep = (r > 0) & (cos > -0.35)
    ii, jj = np.nonzero(keep)
    col = np.floor(x[ii, jj]).astype(np.int64)
    inside = (col >= 0) & (col < width)
    ii, jj, col = ii[inside], jj[inside], col[inside]
    z = np.round((r[ii, jj] * cos[0, jj] + r.max() + 1) * 32).astype(np.int64)
    best = np.full(h * width, -1, np.int64)
    np.maximum.at(best, ii * width + col, z * p + jj)
    best = best.reshape(h, width)
    sample = np.where(best >= 0, best % p, -1)
    # fill the rare gaps a steep flute wall leaves between its samples with the neighbour on the left
    cols = np.arange(width)[None]
    hit = sample >= 0
    last = np.maximum.accumulate(np.where(hit, cols, -1), axis=1)
    first_col = np.where(hit.any(1), hit.argmax(1), width)[:, None]
    last_col = np.where(hit.any(1), width - 1 - hit[:, ::-1].argmax(1), -1)[:, None]
    gap = ~hit & (cols > first_col) & (cols < last_col)
    sample[gap] = sample[np.nonzero(gap)[0], last[gap]]
    bounds = np.stack([np.where(keep, x, np.inf).min(1), np.where(keep, x, -np.inf).max(1)], 1)  # +-inf: empty
    return sample, bounds


def _march_fracture(surf: Surface, rows: np.ndarray, cols: np.ndarray, cx: float, theta: float) -> tuple:
    """Rays (row, col) that enter the tool where it is gone: march them back through the cross-section to the
    fracture face. Returns (hit bool, camera-frame normals (N, 3), tool-frame x, z of the hit)."""
    cut, r = surf.cut, surf.r
    p = r.shape[1]
    x = cols + 0.5 - cx
    reach = r[rows].max(1)
    steps = np.linspace(1.0, -1.0, 49)[None] * reach[:, None]  # z from front to back, ~R/24 apart
    xx = np.broadcast_to(x[:, None], steps.shape)
    xt, zt = xx * math.cos(theta) - steps * math.sin(theta), xx * math.sin(theta) + steps * math.cos(theta)
    j = np.round(np.mod(np.arctan2(xt, zt), 2 * math.pi) / (2 * math.pi) * p).astype(int) % p
    solid = (np.hypot(xt, zt) <= r[rows[:, None], j]) & (rows[:, None] + 0.5 >= cut.y(xt, zt))
    hit = solid.any(1)
    k = solid.argmax(1)
    n = np.arange(len(rows))
    gx, gz = cut.gradient(xt[n, k], zt[n, k])
    dx, dz = gx * math.cos(theta) + gz * math.sin(theta), -gx * math.sin(theta) + gz * math.cos(theta)
    normal = np.stack([dx, -np.ones_like(dx), dz], 1)
    return hit, normal / np.linalg.norm(normal, axis=1, keepdims=True), xt[n, k], zt[n, k]


def trace_view(spec: ToolSpec, surf: Surface, theta: float) -> ViewHits:
    """Which surface sample (or fracture face) each pixel of the view at turntable angle ``theta`` sees."""
    h, w = spec.height, spec.width
    sample, bounds = _front_samples(surf.r, spec.cx, theta, w)
    cols = np.arange(w)[None]
    alpha = np.clip(np.minimum(cols + 1, bounds[:, 1:]) - np.maximum(cols, bounds[:, :1]), 0, 1) * (sample >= 0)
    rr, cc = np.nonzero(sample >= 0)
    j = sample[rr, cc]
    p = surf.r.shape[1]
    dphi = 2 * math.pi / p
    r = surf.r[rr, j]
    n_phi = -(surf.r[rr, (j + 1) % p] - surf.r[rr, j - 1]) / (2 * dphi) / np.maximum(r, 1e-3)
    n_y = -(surf.r[np.minimum(rr + 1, h - 1), j] - surf.r[np.maximum(rr - 1, 0), j]) / 2
    psi = j * dphi + theta
    normals = np.zeros((h, w, 3), np.float32)
    n = np.stack([np.sin(psi) + n_phi * np.cos(psi), n_y, np.cos(psi) - n_phi * np.sin(psi)], 1)
    normals[rr, cc] = n / np.linalg.norm(n, axis=1, keepdims=True)
    fracture = np.zeros((h, w), bool)
    if surf.cut is not None:
        gone = surf.removed[rr, j]
        fr, fc = rr[gone], cc[gone]
        hit, fn, _, _ = _march_fracture(surf, fr, fc, spec.cx, theta)
        sample[fr, fc] = -1
        fracture[fr[hit], fc[hit]] = True
        normals[fr[hit], fc[hit]] = fn[hit]
        alpha[fr, fc] = hit
    return ViewHits(sample=sample, alpha=alpha.astype(np.float32), fracture=fracture, normals=normals)
