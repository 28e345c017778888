"""HU windows, body and lung masks, and the 3 input channels of the ``ct`` recipe.

Arrays are numpy, HU (int16 or float): a volume (Z, Y, X) or a stack of axial slices (S, H, W), in-plane axes last.
Everything here is deterministic, so it belongs to the cached front of a pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

BODY_THRESHOLD_HU = -500.0  # denser than aerated lung (about -850) and air (-1000): soft tissue, fluid, bone, table


class Window(NamedTuple):
    """A display window: HU in [level - width / 2, level + width / 2] maps linearly onto [0, 1].

    A tuple, so ``hu_window(hu, *LUNG)`` works as well as ``apply_window(hu, LUNG)``.
    """

    level: float
    width: float

    @property
    def lower(self) -> float:
        return self.level - self.width / 2

    @property
    def upper(self) -> float:
        return self.level + self.width / 2

    def shifted(self, hu: float) -> Window:
        """The same width, the level moved by ``hu`` (a miscalibrated scanner, a robustness check)."""
        return Window(self.level + hu, self.width)


LUNG = Window(-600.0, 1500.0)
MEDIASTINUM = Window(40.0, 400.0)
BONE = Window(400.0, 1800.0)


def hu_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU (any shape) -> float32 in [0, 1]: (hu - (level - width / 2)) / width, clipped."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(level - width / 2)) / np.float32(width)
    return np.clip(scaled, 0.0, 1.0)


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """:func:`hu_window` with a :class:`Window`."""
    return hu_window(hu, window.level, window.width)


# Connectivity within each axial plane only: a hole is a hole of its own slice, never joined through z.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def body_and_lung_masks(hu: np.ndarray, *, threshold: float = BODY_THRESHOLD_HU) -> tuple[np.ndarray, np.ndarray]:
    """Body and lung masks of a volume or slice stack (Z, Y, X), or of one slice (Y, X): bool, same shape each.

    body = voxels denser than ``threshold`` (-500 HU). lung = the air enclosed by the body within its axial slice:
    the holes that filling the body mask slice by slice closes. Air outside the patient touches the image border
    and is never a hole. The lung mask also holds the trachea and bowel gas, harmless for a histogram or a mask
    that guides augmentation.
    """
    hu = np.asarray(hu)
    planar = hu.ndim == 2
    volume = hu[None] if planar else hu
    body = volume > threshold
    # labelling the air and dropping what touches a slice's edge is the hole filling, ~2x faster than fill_holes
    air, _ = ndimage.label(~body, structure=_IN_PLANE)
    edges = np.concatenate([air[:, 0].ravel(), air[:, -1].ravel(), air[:, :, 0].ravel(), air[:, :, -1].ravel()])
    not_lung = np.zeros(air.max() + 1, dtype=bool)
    not_lung[edges] = True
    not_lung[0] = True  # label 0: the body itself
    lung = ~not_lung[air]
    return (body[0], lung[0]) if planar else (body, lung)


def adaptive_window(
    hu: np.ndarray,
    *,
    lung_percentile: float = 1.0,
    body_percentile: float = 95.0,
    fallback: Window = LUNG,
) -> Window:
    """A window from the volume's own histogram: from its darkest lung to its densest soft tissue.

    lower = the ``lung_percentile`` (1st) percentile of the lung voxels' HU, upper = the ``body_percentile`` (95th)
    percentile of the body voxels' HU (masks: :func:`body_and_lung_masks`). On a typical chest that is about
    [-950, 300]: lung parenchyma, vessels, mediastinum and pleura in one window, without the range the fixed lung
    window (-1350..150) spends below air. It follows a scanner's calibration offset and noise level (both anchors move
    with them), which fixed windows do not. Falls back to ``fallback`` when the volume has no lung or no body voxel.
    """
    body, lung = body_and_lung_masks(hu)
    if not lung.any() or not body.any():
        return fallback
    hu = np.asarray(hu, dtype=np.float32)
    lower = float(np.percentile(hu[lung], lung_percentile))
    upper = float(np.percentile(hu[body], body_percentile))
    if upper <= lower:
        return fallback
    return Window(level=(lower + upper) / 2, width=upper - lower)


def three_channel(
    volume: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    *,
    mode: Literal["windows", "adjacent"] = "windows",
    window: Window = LUNG,
    extra_windows: tuple[Window, Window] = (MEDIASTINUM, BONE),
    offset: int = 1,
) -> np.ndarray:
    """The 3 input channels of slices ``indices`` of ``volume`` (Z, H, W) HU -> float32 (S, 3, H, W) in [0, 1].

    ``windows``: each slice in ``window`` and the two ``extra_windows`` (lung, mediastinum, bone by default): three
    contrasts of one plane. ``adjacent``: the slice ``offset`` below, the slice and the slice ``offset`` above, all
    in ``window``: the through-plane context a 2-D backbone otherwise lacks (vessel vs nodule); neighbours are
    clamped at the ends. Either way ``window`` is the lung channel, the one :func:`adaptive_window` replaces.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if mode == "windows":
        planes = volume[indices]
        return np.stack([apply_window(planes, w) for w in (window, *extra_windows)], axis=1)
    if mode == "adjacent":
        depth = volume.shape[0]
        neighbours = [np.clip(indices + k, 0, depth - 1) for k in (-offset, 0, offset)]
        return np.stack([apply_window(volume[i], window) for i in neighbours], axis=1)
    raise ValueError(f"unknown three-channel mode {mode!r}; choose 'windows' or 'adjacent'")
