"""Deterministic per-volume preprocessing of the ``ct`` recipe: which slices to take, non-local-means denoising and
CLAHE. HU windows and the 3 input channels are in :mod:`finescale.data.ct_windows`, the random CT augmentations in
:mod:`finescale.data.ct_augment`, batch mixing in :mod:`finescale.data.mixing`.

The denoisers work on windowed slices, float in [0, 1], shape (..., H, W) (one slice, a stack (S, H, W) or the
channels (S, 3, H, W)), each (H, W) plane on its own, and return float32 of the same shape in [0, 1].
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np


def lung_z_range(lung: np.ndarray, *, min_area_fraction: float = 0.05) -> tuple[int, int]:
    """The slices [start, stop) whose lung area is at least ``min_area_fraction`` of the largest slice's.

    ``lung`` (Z, Y, X) bool (see :func:`finescale.data.ct_windows.body_and_lung_masks`). The fraction drops the
    apex and base slices where only a trachea or bowel gas is left. No lung at all: the whole depth.
    """
    area = lung.reshape(lung.shape[0], -1).sum(axis=1)
    if area.max() == 0:
        return 0, lung.shape[0]
    rows = np.flatnonzero(area >= min_area_fraction * area.max())
    return int(rows[0]), int(rows[-1]) + 1


def slice_indices(
    depth: int,
    n_slices: int = 12,
    mode: Literal["uniform", "random"] = "uniform",
    rng: np.random.Generator | None = None,
    *,
    z_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Which ``n_slices`` axial slices to take from a volume of ``depth``: int64 (n_slices,), ascending.

    The range [start, stop) (``z_range``, default the whole depth; :func:`lung_z_range` gives the lungs') is cut
    into ``n_slices`` equal bins. ``uniform`` takes each bin's centre: the same slices every time (evaluation).
    ``random`` takes a uniformly random slice within each bin (stratified jitter, training): the spread over the
    lungs stays and every epoch sees other slices. A range shorter than ``n_slices`` repeats slices.
    """
    start, stop = z_range if z_range is not None else (0, depth)
    if not 0 <= start < stop <= depth:
        raise ValueError(f"slice range [{start}, {stop}) is not inside a depth of {depth}")
    edges = start + (stop - start) * np.arange(n_slices + 1) / n_slices
    if mode == "uniform":
        positions = (edges[:-1] + edges[1:]) / 2
    elif mode == "random":
        rng = rng if rng is not None else np.random.default_rng()
        positions = edges[:-1] + rng.random(n_slices) * (edges[1:] - edges[:-1])
    else:
        raise ValueError(f"unknown slice mode {mode!r}; choose 'uniform' or 'random'")
    return np.clip(np.floor(positions), start, stop - 1).astype(np.int64)


def _per_plane(image: np.ndarray, fn) -> np.ndarray:
    planes = np.asarray(image).reshape(-1, *image.shape[-2:])
    return np.stack([fn(p) for p in planes]).reshape(image.shape)


class NLMeansDenoise:
    """Non-local-means denoising (Buades et al. 2005; OpenCV's ``fastNlMeansDenoising``), slice by slice.

    Runs on 8 bits (OpenCV's fast path), the depth of a display window; ``strength`` is OpenCV's ``h`` on that
    scale (grey levels of 255): higher removes more noise and more fine texture. A patch is averaged with similar
    patches within ``search_window``, so a vessel's edge is kept while the flat noise around it is smoothed.
    """

    def __init__(self, *, strength: float = 7.0, template_window: int = 7, search_window: int = 21) -> None:
        self.strength, self.template_window, self.search_window = strength, template_window, search_window

    def _plane(self, plane: np.ndarray) -> np.ndarray:
        grey = np.round(np.clip(plane, 0.0, 1.0) * 255).astype(np.uint8)
        out = cv2.fastNlMeansDenoising(grey, None, self.strength, self.template_window, self.search_window)
        return out.astype(np.float32) / 255

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(..., H, W) float in [0, 1] -> float32 (..., H, W) in [0, 1]."""
        return _per_plane(image, self._plane)


class CLAHE:
    """Contrast-limited adaptive histogram equalisation (OpenCV), slice by slice.

    Equalises each of ``tile_grid`` tiles' histogram, clipped at ``clip_limit`` times the mean bin so that noise in
    flat regions is not amplified. Runs on 8 bits: OpenCV scales the limit by tile pixels / histogram bins, so on
    16 bits (65536 bins) the limit drops to one count per bin and no longer limits anything (measured: a flat noisy
    slice's noise grows 14x on 16 bits, 2.6x on 8).
    """

    def __init__(self, *, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> None:
        self.clip_limit, self.tile_grid = clip_limit, tile_grid

    def _plane(self, plane: np.ndarray) -> np.ndarray:
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.tile_grid)
        grey = np.round(np.clip(plane, 0.0, 1.0) * 255).astype(np.uint8)
        return clahe.apply(grey).astype(np.float32) / 255

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(..., H, W) float in [0, 1] -> float32 (..., H, W) in [0, 1]."""
        return _per_plane(image, self._plane)
