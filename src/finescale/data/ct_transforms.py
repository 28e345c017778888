"""The ``ct`` recipe's CT transforms in one namespace (``from finescale.data import ct_transforms as T``).

Defined here: the deterministic per-volume preprocessing: which slices to take (:func:`slice_indices`,
:func:`lung_z_range`), non-local-means denoising and CLAHE. Re-exported: HU windows, body/lung masks and the 3 input
channels from :mod:`finescale.data.ct_windows`, the random CT augmentations from :mod:`finescale.data.ct_augment`.
Batch mixing (torch, on a batch) is :mod:`finescale.data.mixing`.

The denoisers work on windowed slices, float in [0, 1], shape (..., H, W) (one slice, a stack (S, H, W) or the
channels (S, 3, H, W)), each (H, W) plane on its own, and return float32 of the same shape in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np

from finescale.data.ct_augment import (
    CTAugment,
    RandBreathingMotion,
    RandElastic,
    RandElastic3D,
    RandLungTexture,
    RandScannerNoise,
)
from finescale.data.ct_windows import (
    BONE,
    LUNG,
    MEDIASTINUM,
    Window,
    adaptive_window,
    apply_window,
    body_and_lung_masks,
    hu_window,
    three_channel,
)

__all__ = [
    "BONE",
    "CLAHE",
    "CTAugment",
    "LUNG",
    "MEDIASTINUM",
    "NLMeansDenoise",
    "RandBreathingMotion",
    "RandElastic",
    "RandElastic3D",
    "RandLungTexture",
    "RandScannerNoise",
    "Window",
    "adaptive_window",
    "apply_window",
    "body_and_lung_masks",
    "clahe",
    "hu_window",
    "lung_z_range",
    "nlm_denoise",
    "slice_indices",
    "three_channel",
]


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


def _per_plane(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    image = np.asarray(image)
    planes = image.reshape(-1, *image.shape[-2:])
    return np.stack([fn(p) for p in planes]).reshape(image.shape)


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    return np.round(np.clip(plane, 0.0, 1.0) * 255).astype(np.uint8)


def nlm_denoise(
    image: np.ndarray, *, strength: float = 7.0, template_window: int = 7, search_window: int = 21
) -> np.ndarray:
    """Non-local-means denoising (Buades et al. 2005; OpenCV's ``fastNlMeansDenoising``), slice by slice.

    (..., H, W) float in [0, 1] -> float32 (..., H, W) in [0, 1]. Runs on 8 bits (OpenCV's fast path), the depth of
    a display window; ``strength`` is OpenCV's ``h`` on that scale (grey levels of 255): higher removes more noise
    and more fine texture. A patch is averaged with the similar patches within ``search_window``, so a vessel's edge
    is kept while the flat noise around it is smoothed.
    """

    def plane(p: np.ndarray) -> np.ndarray:
        out = cv2.fastNlMeansDenoising(_to_uint8(p), None, strength, template_window, search_window)
        return out.astype(np.float32) / 255

    return _per_plane(image, plane)


def clahe(image: np.ndarray, *, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV), slice by slice.

    (..., H, W) float in [0, 1] -> float32 (..., H, W) in [0, 1]. Equalises each of ``tile_grid`` tiles' histogram,
    clipped at ``clip_limit`` times the mean bin so that noise in flat regions is not amplified. Runs on 8 bits:
    OpenCV scales the limit by tile pixels / histogram bins, so on 16 bits (65536 bins) the limit drops to one count
    per bin and no longer limits anything (measured: a flat noisy slice's noise grows 14x on 16 bits, 2.6x on 8).
    """
    equalizer = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid)
    return _per_plane(image, lambda p: equalizer.apply(_to_uint8(p)).astype(np.float32) / 255)


class NLMeansDenoise:
    """:func:`nlm_denoise` as a transform object, for a composed pipeline."""

    def __init__(self, *, strength: float = 7.0, template_window: int = 7, search_window: int = 21) -> None:
        self.strength, self.template_window, self.search_window = strength, template_window, search_window

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(..., H, W) float in [0, 1] -> float32 (..., H, W) in [0, 1]."""
        return nlm_denoise(
            image, strength=self.strength, template_window=self.template_window, search_window=self.search_window
        )


class CLAHE:
    """:func:`clahe` as a transform object, for a composed pipeline."""

    def __init__(self, *, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> None:
        self.clip_limit, self.tile_grid = clip_limit, tile_grid

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(..., H, W) float in [0, 1] -> float32 (..., H, W) in [0, 1]."""
        return clahe(image, clip_limit=self.clip_limit, tile_grid=self.tile_grid)
