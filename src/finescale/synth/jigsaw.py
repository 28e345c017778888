"""Jigsaw cut geometry: a grid of pieces whose interior edges carry a tab on one side and the matching blank on the
other, so that neighbouring pieces tile the picture exactly; border edges are straight.

Coordinates are puzzle pixels, x to the right and y down, with OpenCV's convention that pixel (i, j) is centred at
(x=j, y=i). An edge's shape is defined once and traversed forwards or backwards by the two pieces that share it,
which is what makes a tab and its blank complementary.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # fillPoly's fixed-point shift: polygons are drawn at 1/16 pixel precision
_SUPERSAMPLE = 4  # coverage = mean of a 4 x 4 grid of samples per pixel


def tab_profile(rng: np.random.Generator, points: int = 40) -> np.ndarray:
    """One classic knob in edge units: (N, 2) array of (u along the edge in [0, 1], v outward), from (0, 0) to (1, 0).

    A wavy shoulder, a pinched neck (quadratic Bezier) and a round head (circular arc over the top), each randomised
    a little so that no two edges look the same. The head rises at most ~0.26 of the edge length.
    """
    c = 0.5 + rng.uniform(-0.06, 0.06)  # knob centre along the edge
    r = rng.uniform(0.095, 0.125)  # head radius
    top = rng.uniform(0.20, 0.26)  # highest point of the head
    neck = rng.uniform(0.55, 0.70) * r  # half-width where the neck meets the head
    base = neck + rng.uniform(0.01, 0.03)  # half-width where the neck leaves the shoulder
    vc = top - r
    vs = vc - np.sqrt(r * r - neck * neck)  # height where the arc meets the neck
    phi = float(np.arcsin((vc - vs) / r))

    m = max(points // 5, 4)
    t = np.linspace(0.0, 1.0, m)

    def shoulder(u0: float, u1: float) -> np.ndarray:
        amp = rng.uniform(-0.015, 0.015)
        u = u0 + (u1 - u0) * t
        return np.stack([u, amp * np.sin(np.pi * t)], axis=1)

    def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        s = t[:, None]
        return (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2

    a0, a1 = np.array([c - base, 0.0]), np.array([c - neck, vs])
    b0, b1 = np.array([c + neck, vs]), np.array([c + base, 0.0])
    pinch = rng.uniform(0.3, 0.6) * vs
    arc_t = np.linspace(np.pi + phi, -phi, 2 * m + 4)
    arc = np.stack([c + r * np.cos(arc_t), vc + r * np.sin(arc_t)], axis=1)
    parts = [
        shoulder(0.0, c - base),
        bezier(a0, np.array([c - neck + 0.005, pinch]), a1),
        arc,
        bezier(b0, np.array([c + neck - 0.005, pinch]), b1),
        shoulder(c + base, 1.0),
    ]
    return np.concatenate(parts, axis=0)


def _edge(a: np.ndarray, b: np.ndarray, profile: np.ndarray | None, sign: float) -> np.ndarray:
    """Polyline from ``a`` to ``b``; ``profile`` (u, v) bends it, v along the left normal times ``sign``."""
    if profile is None:
        return np.stack([a, b]).astype(np.float64)
    d = b - a
    normal = np.array([-d[1], d[0]])  # |normal| = edge length, so v is in edge units
    return a + profile[:, :1] * d + sign * profile[:, 1:] * normal


def coverage_box(alpha: np.ndarray, origin: tuple[int, int]) -> list[int]:
    """``[x1, y1, x2, y2]`` (exclusive max) of the pixels with coverage >= 128 in ``alpha`` placed at ``origin``."""
    ys, xs = np.nonzero(alpha >= 128)
    x0, y0 = origin
    return [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]


@dataclass(frozen=True)
class JigsawCut:
    """The cut of a ``width`` x ``height`` picture into ``rows`` x ``cols`` jigsaw pieces.

    ``corners`` (rows + 1, cols + 1, 2) holds the grid corners' xy. Edge shapes are drawn lazily from their own RNG
    stream ``default_rng([seed, direction, row, col])``, so cutting a 3000 x 2000 picture costs nothing until a
    piece is asked for, and a piece's shape never depends on which other pieces were asked for first.
    """

    width: int
    height: int
    rows: int
    cols: int
    corners: np.ndarray
    seed: int

    def _knob(self, direction: int, row: int, col: int) -> tuple[np.ndarray, float]:
        rng = np.random.default_rng([self.seed, direction, row, col])
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return tab_profile(rng), sign

    def h_edge(self, row: int, col: int) -> np.ndarray:
        """Horizontal edge from corner (row, col) to (row, col + 1): (N, 2) xy points; straight on the border."""
        a, b = self.corners[row, col], self.corners[row, col + 1]
        return _edge(a, b, *self._knob(0, row, col)) if 0 < row < self.rows else _edge(a, b, None, 1.0)

    def v_edge(self, row: int, col: int) -> np.ndarray:
        """Vertical edge from corner (row, col) to (row + 1, col): (N, 2) xy points; straight on the border."""
        a, b = self.corners[row, col], self.corners[row + 1, col]
        return _edge(a, b, *self._knob(1, row, col)) if 0 < col < self.cols else _edge(a, b, None, 1.0)

    def polygon(self, row: int, col: int) -> np.ndarray:
        """Closed outline of piece (row, col) as an (N, 2) float array of xy points, clockwise on screen."""
        parts = [
            self.h_edge(row, col),
            self.v_edge(row, col + 1),
            self.h_edge(row + 1, col)[::-1],
            self.v_edge(row, col)[::-1],
        ]
        return np.concatenate([p[:-1] for p in parts], axis=0)

    def mask(self, row: int, col: int, pad: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
        """Anti-aliased coverage of piece (row, col): (uint8 alpha of the window, (x0, y0) of its top-left pixel).

        The window is the polygon's bounds plus ``pad`` pixels, clipped to the picture.
        """
        poly = self.polygon(row, col)
        x0 = max(int(np.floor(poly[:, 0].min())) - pad, 0)
        y0 = max(int(np.floor(poly[:, 1].min())) - pad, 0)
        x1 = min(int(np.ceil(poly[:, 0].max())) + pad + 1, self.width)
        y1 = min(int(np.ceil(poly[:, 1].max())) + pad + 1, self.height)
        s = _SUPERSAMPLE
        fine = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
        # fine pixel centres sit at s * (x + 0.5) - 0.5 for a coarse coordinate x
        pts = np.round((s * (poly - [x0, y0] + 0.5) - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        cv2.fillPoly(fine, [pts], 255, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
        alpha = cv2.resize(fine, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        return alpha, (x0, y0)

    def box(self, row: int, col: int) -> list[int]:
        """Pixel bounding box ``[x1, y1, x2, y2]`` (exclusive max) of the pixels the piece covers at least half."""
        return coverage_box(*self.mask(row, col))


def make_cut(width: int, height: int, cell: float, rng: np.random.Generator, jitter: float = 0.04) -> JigsawCut:
    """Cut a picture into a grid of near-square cells of about ``cell`` pixels, at least 2 x 2.

    Interior grid corners move by up to ``jitter`` x cell; corners on the border slide along it only. Each interior
    edge gets its own knob profile and a random side for its tab.
    """
    cols = max(2, int(round(width / cell)))
    rows = max(2, int(round(height / cell)))
    cw, ch = width / cols, height / rows
    xs = np.arange(cols + 1) * cw
    ys = np.arange(rows + 1) * ch
    corners = np.stack(np.meshgrid(xs, ys), axis=-1).astype(np.float64)  # (rows + 1, cols + 1, 2)
    shake = rng.uniform(-jitter, jitter, corners.shape) * [cw, ch]
    shake[[0, -1], :, 1] = 0.0  # top and bottom border corners stay on their border line
    shake[:, [0, -1], 0] = 0.0
    corners += shake
    corners[..., 0] = np.clip(corners[..., 0], 0.0, width)
    corners[..., 1] = np.clip(corners[..., 1], 0.0, height)
    corners -= 0.5  # the picture spans [-0.5, size - 0.5] when pixel centres sit at integers
    return JigsawCut(width, height, rows, cols, corners, int(rng.integers(2**63)))
