"""Rendering helpers for synthetic dental radiographs: implant thickness maps, bone/teeth background, degradations.

Everything is built in a *density* domain (projected attenuation; higher = brighter on the final image) and only
mapped to brightness by :func:`expose`, so overlapping structures add up the way they do on a real radiograph.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from finescale.synth.implants import ImplantModel

SUPERSAMPLE = 2


def thread_profile(phase: np.ndarray, kind: str) -> np.ndarray:
    """Thread height in [0, 1] as a function of the thread phase (any real; only its fractional part matters)."""
    p = phase - np.floor(phase)
    if kind == "v":
        return 1.0 - np.abs(2.0 * p - 1.0)
    if kind == "square":  # wide flat crest, short flanks
        return np.clip((0.28 - np.abs(p - 0.5)) / 0.08, 0.0, 1.0)
    if kind == "buttress":  # long shallow flank, flat crest, steep face toward the apex
        return np.clip(np.minimum((p - 0.1) / 0.55, (0.82 - p) / 0.07), 0.0, 1.0)
    raise ValueError(f"unknown thread profile {kind!r}")


def implant_radius(
    model: ImplantModel, length_mm: float, diameter_mm: float, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """Outer radius (mm) of the implant at axial position ``u`` (mm from the collar top) seen at lateral offset ``v``.

    ``v`` only enters through the helix: the thread phase is shifted by asin(v/R)/2pi, so the crest lines run slanted
    across the body and the left and right outlines are half a pitch apart, as in the projection of a real helix.
    """
    big_r = diameter_mm / 2.0
    depth = min(model.thread_depth_mm, 0.3 * big_r)  # keep a solid core on narrow implants
    core_top = big_r - depth
    c0, c1 = model.collar_mm, length_mm - model.apex_mm
    s = np.clip((u - c0) / (c1 - c0), 0.0, 1.0)
    taper = 0.3 if model.body == "tapered" else 0.0
    core = core_top * (1.0 - taper * s**1.6)  # tapered bodies narrow mostly in the apical part
    phase = (u - c0) / model.pitch_mm + np.arcsin(np.clip(v / big_r, -1.0, 1.0)) / (2.0 * np.pi)
    r_thread = core + depth * thread_profile(phase, model.thread_profile)

    # smooth collar, flared toward the top, with a small bevel on the top edge
    r_collar = big_r * (model.collar_flare + (1.0 - model.collar_flare) * u / c0) - 1.2 * np.maximum(0.12 - u, 0.0)

    t = np.clip((u - c1) / model.apex_mm, 0.0, 1.0)
    r0 = core_top * (1.0 - taper) + 0.3 * depth
    corner = np.sqrt(1.0 - 0.75 * np.clip((t - 0.82) / 0.18, 0.0, 1.0) ** 2)  # rounds the bottom corners
    if model.apex == "rounded":
        r_apex = r0 * np.sqrt(np.maximum(1.0 - t**2, 0.0))
    elif model.apex == "flat":
        r_apex = r0 * (1.0 - 0.12 * t) * corner
    elif model.apex == "pointed":
        r_apex = r0 * (1.0 - 0.78 * t) * corner
    else:
        raise ValueError(f"unknown apex {model.apex!r}")

    r = np.where(u < c0, r_collar, np.where(u < c1, r_thread, r_apex))
    return np.where((u < 0.0) | (u > length_mm), 0.0, r).astype(np.float32)


def rasterize_implant(
    model: ImplantModel,
    length_mm: float,
    diameter_mm: float,
    top_xy: tuple[float, float],
    tilt_deg: float,
    mm_per_px: float,
    shape: tuple[int, int],
    channel: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Projected metal thickness (mm) of the implant in its pixel crop; returns (patch, (x0, y0, x1, y1)).

    The implant is evaluated on an axis-aligned grid in its own (u, v) frame, where everything but the threads is
    separable (cheap 1-D terms), at SUPERSAMPLE x the output resolution; it is then rotated into the image crop and
    reduced with INTER_AREA for anti-aliased threads. Pixel centres sit at integer coordinates. ``channel`` =
    (depth_mm, radius_mm) hollows an internal connection below the collar top.
    """
    ss = SUPERSAMPLE
    step = mm_per_px / ss  # mm per frame sample
    half_w = diameter_mm / 2.0 * max(model.collar_flare, 1.0) + 0.15
    u = (np.arange(-0.15, length_mm + 0.15, step, dtype=np.float32))[:, None]
    v = (np.arange(-half_w, half_w, step, dtype=np.float32))[None, :]
    r = implant_radius(model, length_mm, diameter_mm, u, v)
    thick = 2.0 * cv2.sqrt(np.maximum(r * r - v * v, 0.0))
    if channel is not None:
        depth, rc = channel
        rc_u = np.where((u > 0.0) & (u < depth), rc * (1.0 - 0.3 * u / depth), 0.0)  # conical connection
        thick -= 2.0 * cv2.sqrt(np.maximum(rc_u * rc_u - v * v, 0.0).astype(np.float32))

    th = np.deg2rad(tilt_deg)
    ax, ay = np.sin(th), np.cos(th)  # axis direction (collar -> apex), image y points down
    nx, ny = np.cos(th), -np.sin(th)
    us = np.array([u[0, 0], u[0, 0], u[-1, 0], u[-1, 0]])
    vs = np.array([v[0, 0], v[0, -1], v[0, 0], v[0, -1]])
    cx, cy = top_xy[0] + (us * ax + vs * nx) / mm_per_px, top_xy[1] + (us * ay + vs * ny) / mm_per_px
    x0, x1 = max(int(np.floor(cx.min())) - 1, 0), min(int(np.ceil(cx.max())) + 2, shape[1])
    y0, y1 = max(int(np.floor(cy.min())) - 1, 0), min(int(np.ceil(cy.max())) + 2, shape[0])

    # inverse affine map: supersampled crop pixel (j, i) -> frame sample (column along v, row along u)
    ox, oy = x0 - 0.5 + 0.5 / ss - top_xy[0], y0 - 0.5 + 0.5 / ss - top_xy[1]
    m = np.array(
        [
            [nx, ny, ss * (ox * nx + oy * ny) - v[0, 0] / step],
            [ax, ay, ss * (ox * ax + oy * ay) - u[0, 0] / step],
        ]
    )
    fine = cv2.warpAffine(
        thick.astype(np.float32), m, ((x1 - x0) * ss, (y1 - y0) * ss), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    patch = cv2.resize(fine, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return patch, (x0, y0, x1, y1)


@lru_cache(maxsize=4)
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached read-only (yy, xx) float32 pixel grids."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _smooth_field(rng: np.random.Generator, size: int, cells: int, lo: float, hi: float) -> np.ndarray:
    """Low-frequency random field in [lo, hi] (bicubic upsampling of a coarse grid)."""
    g = rng.random((cells, cells), dtype=np.float32)
    f = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
    return lo + (hi - lo) * np.clip(f, 0.0, 1.0)


def _blur_low(img: np.ndarray, sigma: float, factor: int = 4) -> np.ndarray:
    """Wide Gaussian blur computed at 1/factor resolution (the result is smooth, so nothing is lost; ~10x faster)."""
    h, w = img.shape
    small = cv2.resize(img, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / factor, 0.3))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def bone_background(
    rng: np.random.Generator, size: int, mm_per_px: float, crest_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft tissue plus trabecular bone below a wavy alveolar crest; returns (density, bone mask in [0, 1])."""
    yy, xx = _coords(size)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    gx, gy = float(np.cos(ang)), float(np.sin(ang))  # Python floats: NumPy scalars would upcast to float64
    soft = rng.uniform(0.3, 0.55) + rng.uniform(0.0, 0.15) / size * (gx * xx + gy * yy)

    # trabeculae: zero crossings of band-pass noise form an irregular network of struts around marrow spaces
    noise = rng.random((size, size), dtype=np.float32) - 0.5  # uniform is 4x cheaper; Gaussian after blurring
    s1 = rng.uniform(0.1, 0.18) / mm_per_px
    fine = cv2.GaussianBlur(noise, (0, 0), s1)
    bp = fine - _blur_low(fine, 2.5 * s1)
    bp *= 1.0 / (rng.uniform(0.5, 0.9) * (bp.std() + 1e-6))
    struts = cv2.exp(-(bp * bp))
    marrow = _blur_low(noise, 6.0 * s1)
    marrow = np.clip(marrow * (0.5 / (marrow.std() + 1e-6)), -1.0, 1.0)  # soft large-scale density variation
    texture = struts * (0.6 + 0.4 * marrow) + 0.3 * marrow
    bone = rng.uniform(0.55, 0.95) * _smooth_field(rng, size, 5, 0.7, 1.25) * (0.6 + rng.uniform(0.25, 0.5) * texture)

    wave = _smooth_field(rng, size, 4, -1.0, 1.0)[0] * rng.uniform(0.3, 1.2) / mm_per_px
    edge = 0.25 / mm_per_px
    dy = yy - (crest_y + wave)[None, :]
    mask = 1.0 / (1.0 + cv2.exp(np.minimum(-dy / edge, 30.0)))  # logistic step at the crest
    c = (dy - 2.0 * edge) / (1.5 * edge)
    cortex = cv2.exp(-(c * c)) * rng.uniform(0.05, 0.2)
    return soft + mask * bone + cortex, mask


def _frame(tilt_deg: float) -> tuple[float, float, float, float]:
    """(axis x, axis y, normal x, normal y) of a structure tilted by ``tilt_deg`` from vertical (y down)."""
    th = float(np.deg2rad(tilt_deg))
    return float(np.sin(th)), float(np.cos(th)), float(np.cos(th)), -float(np.sin(th))


def _crop_for(pts: np.ndarray, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Pixel crop (x0, y0, x1, y1) around points plus margin, clipped to the image; None when off-image."""
    x0, y0 = np.floor(pts.min(0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(0) + margin).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return (x0, y0, x1, y1) if x1 - x0 > 2 and y1 - y0 > 2 else None


def _fill(pts: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Anti-aliased polygon mask (float32 in [0, 1]) inside the crop."""
    x0, y0, x1, y1 = crop
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [np.round((pts - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def _outline(cx: float, cy: float, tilt_deg: float, u: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """Closed polygon from axial positions ``u`` (down the axis) and half-widths ``hw`` around (cx, cy)."""
    ax, ay, nx, ny = _frame(tilt_deg)
    us, vs = np.concatenate([u, u[::-1]]), np.concatenate([-hw, hw[::-1]])
    return np.stack([cx + us * ax + vs * nx, cy + us * ay + vs * ny], axis=1)


def add_tooth(
    density: np.ndarray,
    bone: np.ndarray,
    rng: np.random.Generator,
    cej_xy: tuple[float, float],
    tilt_deg: float,
    mm_per_px: float,
) -> None:
    """Add a neighbouring tooth in place: enamel-capped crown, tapered root with pulp, dark PDL and lamina dura."""
    root_len, crown_h = rng.uniform(11.0, 16.0) / mm_per_px, rng.uniform(6.5, 8.5) / mm_per_px
    half = rng.uniform(2.2, 3.4) / mm_per_px
    s = np.linspace(0.0, 1.0, 20)
    root_hw = half * (1.0 - 0.55 * s**1.3) * np.sqrt(np.maximum(1.0 - s**8, 0.0))
    crown_hw = (
        half
        * (1.0 + 0.22 * np.sin(np.pi / 2 * np.clip(s / 0.5, 0, 1)))
        * np.sqrt(np.maximum(1.0 - np.clip((s - 0.72) / 0.28, 0, 1) ** 2, 0.0))
    )
    u = np.concatenate([-crown_h * s[::-1], root_len * s[1:]])
    hw = np.concatenate([crown_hw[::-1], root_hw[1:]])
    pts = _outline(*cej_xy, tilt_deg, u, hw)
    pdl = rng.uniform(0.15, 0.3) / mm_per_px  # periodontal ligament width varies (no fixed mm ruler)
    crop = _crop_for(pts, 4.0 * pdl, density.shape)
    if crop is None:
        return
    x0, y0, x1, y1 = crop
    m = _fill(pts, crop)
    pulp_u = np.array([-0.45, -0.3, 0.0, 0.3, 0.6, 0.9]) * np.array([crown_h] * 2 + [root_len] * 4)
    pulp_hw = half * np.array([0.0, 0.4, 0.3, 0.18, 0.12, 0.0])
    pulp = cv2.GaussianBlur(_fill(_outline(*cej_xy, tilt_deg, pulp_u, pulp_hw), crop), (0, 0), 0.1 / mm_per_px)

    inside = (m > 0.5).astype(np.uint8)
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    d_out = np.minimum(cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3), 8.0 * pdl)  # huge when no root in crop
    ax, ay, _, _ = _frame(tilt_deg)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    along = (xx - cej_xy[0]) * ax + (yy - cej_xy[1]) * ay
    in_crown = np.clip(0.5 - along / (0.6 / mm_per_px), 0.0, 1.0)
    enamel = in_crown * (0.25 + 0.45 * np.clip(1.0 - d_in / (1.1 / mm_per_px), 0.0, 1.0))
    dentin = rng.uniform(0.5, 0.8) * np.sqrt(np.clip(d_in / (0.6 * half), 0.0, 1.0))
    b = bone[y0:y1, x0:x1]
    ring = (1.0 - m) * b * np.clip(along / pdl, 0.0, 1.0)  # periodontium exists only around the root, in bone
    dark = np.exp(-(((d_out - 0.5 * pdl) / (0.7 * pdl)) ** 2)) * ring
    lamina = np.exp(-(((d_out - 1.8 * pdl) / (0.7 * pdl)) ** 2)) * ring
    density[y0:y1, x0:x1] += (
        m * (dentin + enamel - 0.3 * b - 0.25 * pulp) - rng.uniform(0.2, 0.35) * dark + 0.15 * lamina
    )


def add_restoration(
    density: np.ndarray, base_xy: tuple[float, float], tilt_deg: float, half: float, height: float, amp: float
) -> None:
    """Add a bright crown-like restoration in place whose flat base is centred on ``base_xy`` (pixel units)."""
    s = np.linspace(0.0, 1.0, 16)
    hw = (
        half
        * (0.8 + 0.2 * np.sin(np.pi / 2 * np.clip(s / 0.4, 0, 1)))
        * np.sqrt(np.maximum(1.0 - np.clip((s - 0.7) / 0.3, 0, 1) ** 2, 0.0))
    )
    pts = _outline(*base_xy, tilt_deg, -height * s[::-1], hw[::-1])
    crop = _crop_for(pts, 0.2 * half + 3.0, density.shape)
    if crop is None:
        return
    x0, y0, x1, y1 = crop
    m = _fill(pts, crop)
    density[y0:y1, x0:x1] += amp * cv2.GaussianBlur(m, (0, 0), 0.2 * half) * m


def expose(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Film-like exposure curve: brightness = 1 - exp(-gain * density); metal saturates toward white."""
    return 1.0 - cv2.exp(density * -rng.uniform(0.65, 0.9))


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detector blur, vignetting, contrast/gamma, signal-dependent noise; float [0, 1] in, uint8 out."""
    size = img.shape[0]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.3))
    yy, xx = _coords(size)
    cx, cy = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size
    img *= 1.0 - rng.uniform(0.0, 0.15) * ((xx - cx) ** 2 + (yy - cy) ** 2) / (0.5 * size * size)
    lo, hi = rng.uniform(-0.05, 0.15), rng.uniform(1.0, 1.1)  # hi >= 1 keeps metal unclipped
    img = cv2.pow(np.clip((img - lo) / (hi - lo), 0.0, 1.0), rng.uniform(0.75, 1.35))
    sg, sp = rng.uniform(0.005, 0.02), rng.uniform(0.01, 0.035)
    img += cv2.sqrt(sg * sg + sp * sp * img) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
