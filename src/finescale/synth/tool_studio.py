"""The turntable studio around a tool: per-view key lights, the backdrop and bench, metal shading and the camera.

Every view of one tool shares the studio (backdrop, bench, soft boxes, camera white balance and noise level) while
its key light changes: direction (azimuth +-35 deg around a per-tool setting, elevation 10-60 deg), intensity
(+-25 %) and colour temperature (3000-7500 K), so the same rust patch reads differently from view to view.
Colours are floats in [0, 1] until the camera writes uint8 RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from finescale.synth.tools import Surface, ToolSpec, ViewHits

_KELVIN = np.array([3000, 4000, 5000, 6500, 7500], float)  # light colour by temperature, green about 1
_KELVIN_RGB = np.array(
    [[1.18, 0.93, 0.62], [1.1, 0.97, 0.82], [1.04, 0.99, 0.93], [0.98, 1.0, 1.02], [0.9, 0.98, 1.12]]
)
_BACKDROPS = np.array([[0.78, 0.78, 0.76], [0.55, 0.57, 0.6], [0.42, 0.5, 0.6], [0.22, 0.22, 0.23], [0.7, 0.64, 0.54]])
_BENCHES = np.array([[0.45, 0.3, 0.18], [0.2, 0.21, 0.22], [0.5, 0.5, 0.52], [0.15, 0.3, 0.22]])  # wood mat steel green


@dataclass(frozen=True)
class Light:
    """The key light of one view: unit direction towards the light (camera frame: x right, y down, z to the camera),
    intensity, RGB colour and its temperature in kelvin."""

    direction: tuple[float, float, float]
    intensity: float
    colour: tuple[float, float, float]
    kelvin: float


def sample_lights(rng: np.random.Generator, views: int) -> list[Light]:
    """One key light per view around a per-tool setting (see the module docstring)."""
    base_az, base_gain = rng.uniform(-50, 50), rng.uniform(0.85, 1.15)
    lights = []
    for _ in range(views):
        az, el = math.radians(base_az + rng.uniform(-35, 35)), math.radians(rng.uniform(10, 60))
        kelvin = float(rng.uniform(3000, 7500))
        rgb = tuple(float(np.interp(kelvin, _KELVIN, _KELVIN_RGB[:, c])) for c in range(3))
        d = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
        lights.append(Light(d, float(base_gain * rng.uniform(0.75, 1.25)), rgb, kelvin))
    return lights


@dataclass(frozen=True)
class Studio:
    """What stays fixed while the turntable turns: backdrop (H, W, 3), bench texture (rows below the floor, 3 W wide,
    shifted as the turntable turns), soft boxes (azimuth, width, strength) seen in the metal, camera settings."""

    backdrop: np.ndarray
    bench: np.ndarray
    softboxes: np.ndarray  # (K, 3)
    ambient: float
    white_balance: np.ndarray  # (3,)
    exposure: float
    noise: float
    blur: float


def _smooth(h: int, w: int, cells: float, rng: np.random.Generator) -> np.ndarray:
    small = rng.standard_normal((max(2, int(h / cells) + 2), max(2, int(w / cells) + 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def sample_studio(rng: np.random.Generator, spec: ToolSpec) -> Studio:
    """A backdrop with a soft vertical gradient, a textured bench or turntable plate and two to three soft boxes."""
    h, w = spec.height, spec.width
    y = (np.arange(h, dtype=np.float32)[:, None, None] + 0.5) / h
    colour = _BACKDROPS[rng.integers(len(_BACKDROPS))] * rng.uniform(0.85, 1.1, 3)
    backdrop = colour * (1 + rng.uniform(-0.25, 0.25) * (y - 0.5)) * (1 + 0.03 * _smooth(h, w, 0.2 * w, rng)[..., None])
    floor = int(math.ceil(spec.y_floor))
    bh = max(h - floor, 1)
    grain = _smooth(bh, 3 * w, 2.0, rng) * 0.35 + _smooth(bh, 3 * w, 0.3 * w, rng)
    grain[: max(1, int(0.015 * h))] += 0.8  # the lit rim of the turntable plate
    depth = np.linspace(0.85, 1.1, bh, dtype=np.float32)[:, None, None]  # nearer rows catch more light
    bench = _BENCHES[rng.integers(len(_BENCHES))] * rng.uniform(0.85, 1.15) * depth * (1 + 0.12 * grain[..., None])
    k = int(rng.integers(2, 4))
    boxes = np.stack([rng.uniform(-1.3, 1.3, k), rng.uniform(0.15, 0.4, k), rng.uniform(0.4, 1.0, k)], 1)
    return Studio(
        backdrop=backdrop.astype(np.float32), bench=bench.astype(np.float32), softboxes=boxes,
        ambient=float(rng.uniform(0.12, 0.22)), white_balance=rng.uniform(0.93, 1.07, 3).astype(np.float32),
        exposure=float(rng.uniform(0.9, 1.15)), noise=float(rng.uniform(0.006, 0.016)),
        blur=float(rng.uniform(0.35, 0.6)),
    )  # fmt: skip


def _reflection(n: np.ndarray, studio: Studio) -> np.ndarray:
    """Brightness of the studio mirrored in unit normals ``n`` (N, 3): soft boxes around, dark turntable below."""
    rx, ry, rz = 2 * n[:, 2] * n[:, 0], 2 * n[:, 2] * n[:, 1], 2 * n[:, 2] ** 2 - 1
    az = np.arctan2(rx, rz)
    env = 0.15 + 0.1 * (ry < 0)
    for centre, width, gain in studio.softboxes:
        env = env + gain * np.exp(-(((az - centre) / width) ** 2)) / (1 + np.exp(8 * (ry - 0.35)))
    return env


def shade_metal(
    n: np.ndarray,
    albedo: np.ndarray,
    gloss: np.ndarray,
    edge: np.ndarray,
    shininess: float,
    light: Light,
    studio: Studio,
) -> np.ndarray:
    """RGB (N, 3) of metal with unit normals ``n`` (N, 3), ``albedo`` (N, 3), ``gloss`` and honed ``edge`` (N,)."""
    to_light = np.array(light.direction, np.float32)
    half = to_light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    lit = light.intensity * np.array(light.colour, np.float32)
    diffuse = np.clip(n @ to_light, 0, None)[:, None]
    highlight = (np.clip(n @ half, 0, None) ** shininess)[:, None]
    tint = 0.3 + 0.7 * albedo  # metals tint their reflections
    env = _reflection(n, studio)[:, None] * (0.5 + 0.5 * light.intensity)
    rgb = albedo * (studio.ambient + 0.75 * diffuse * lit) + gloss[:, None] * tint * (
        0.9 * highlight * lit + 0.45 * env
    )
    return rgb + (0.4 * edge[:, None]) * lit * (0.3 + diffuse)


def photograph(
    spec: ToolSpec, surf: Surface, hits: ViewHits, light: Light, studio: Studio, theta: float, rng: np.random.Generator
) -> np.ndarray:
    """The uint8 RGB (H, W, 3) photo of one view: shaded tool over the lit backdrop and turntable, then the camera."""
    h, w = spec.height, spec.width
    image = np.zeros((h, w, 3), np.float32)
    rr, cc = np.nonzero(hits.sample >= 0)
    j = hits.sample[rr, cc]
    image[rr, cc] = shade_metal(hits.normals[rr, cc], surf.albedo[rr, j], surf.gloss[rr, j], surf.edge[rr, j],
                                spec.shininess, light, studio)  # fmt: skip
    # draws of a fixed size, so a view with a fracture face leaves the noise of every later view as it was
    sensor = rng.standard_normal((h, w, 3), dtype=np.float32)
    speckle = rng.standard_normal((h, w), dtype=np.float32)
    fr, fc = np.nonzero(hits.fracture)
    if len(fr):  # grainy, dull fracture face
        grain = np.clip(0.42 * (1 + 0.3 * speckle[fr, fc]), 0.05, 1)[:, None] * np.ones(3, np.float32)
        image[fr, fc] = shade_metal(hits.normals[fr, fc], grain, np.full(len(fr), 0.15, np.float32),
                                    np.zeros(len(fr), np.float32), 8.0, light, studio)  # fmt: skip

    floor = int(math.ceil(spec.y_floor))
    shift = int(round(theta / (2 * math.pi) * w)) % w  # the turntable plate turns with the tool
    background = studio.backdrop.copy()
    background[floor:] = studio.bench[: h - floor, shift : shift + w]
    lx = light.direction[0]
    across = 1 + 0.3 * lx * (np.arange(w, dtype=np.float32) / w - 0.5) * 2
    lit = studio.ambient + 0.8 * light.intensity * np.array(light.colour, np.float32) * across[:, None]
    background *= lit
    sigma = 0.05 * w
    offset = np.float32([[1, 0, -lx * 0.15 * w], [0, 1, 0.05 * h]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(hits.alpha, offset, (w, h)), (0, 0), sigma)
    background *= 1 - 0.3 * light.intensity * shadow[..., None] / (1 + light.intensity)

    alpha = hits.alpha[..., None]
    image = alpha * image + (1 - alpha) * background
    image *= studio.exposure * studio.white_balance
    image = cv2.GaussianBlur(image, (0, 0), studio.blur)
    image += studio.noise * sensor * np.sqrt(np.clip(image, 0.05, 1))
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
