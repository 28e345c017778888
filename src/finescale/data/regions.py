"""Locating an elongated bright object (an implant on a radiograph) and cutting crops at its two ends.

Everything here reads the image itself, never the labels, so the same code runs at training and at prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ObjectAxis:
    """Main axis of the object in pixel coordinates: ``top`` is the end nearer the top of the image."""

    top: tuple[float, float]  # (x, y)
    bottom: tuple[float, float]
    width: float  # extent across the axis, pixels

    @property
    def length(self) -> float:
        return float(np.hypot(self.bottom[0] - self.top[0], self.bottom[1] - self.top[1]))

    @property
    def angle(self) -> float:
        """Angle of the top->bottom direction from the image's downward vertical, in degrees."""
        dx, dy = self.bottom[0] - self.top[0], self.bottom[1] - self.top[1]
        return float(np.degrees(np.arctan2(dx, dy)))


def find_bright_axis(image: np.ndarray) -> ObjectAxis:
    """Largest bright blob (Otsu threshold after a blur) and its principal axis; (H, W) float in [0, 1].

    Falls back to the image's vertical centre line when no blob stands out (a blank or uniform image).
    """
    h, w = image.shape
    smooth = cv2.GaussianBlur((np.clip(image, 0, 1) * 255).astype(np.uint8), (0, 0), sigmaX=max(1.0, w / 200))
    _, mask = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return ObjectAxis(top=(w / 2, h * 0.1), bottom=(w / 2, h * 0.9), width=w * 0.2)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(labels == largest)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    direction = vt[0] if vt[0][1] >= 0 else -vt[0]  # point downwards
    along = (points - centre) @ direction
    across = (points - centre) @ np.array([-direction[1], direction[0]])
    top = centre + direction * along.min()
    bottom = centre + direction * along.max()
    return ObjectAxis(top=tuple(top), bottom=tuple(bottom), width=float(across.max() - across.min()))


def oriented_crop(image: np.ndarray, centre: tuple[float, float], angle_deg: float, side: float, out: int) -> np.ndarray:
    """Square crop of ``side`` pixels around ``centre``, rotated so the object axis is vertical, resized to
    ``out`` x ``out``; pixels outside the image are filled by edge replication."""
    scale = out / max(side, 1.0)
    matrix = cv2.getRotationMatrix2D(centre, -angle_deg, scale)
    matrix[:, 2] += np.array([out / 2.0, out / 2.0]) - np.array(centre)
    return cv2.warpAffine(
        image, matrix, (out, out), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def end_crops(image: np.ndarray, *, out: int, side_frac: float = 0.4, inset_frac: float = 0.12) -> np.ndarray:
    """Two crops of the object's ends, collar (top) first, tip (bottom) second: (2, out, out) float32.

    The crop side is a fraction of the object's pixel length, so thread spacing inside a crop is measured
    relative to the object, whatever the pixel spacing of the radiograph.
    """
    axis = find_bright_axis(image)
    side = max(side_frac * axis.length, 8.0)
    top, bottom = np.array(axis.top), np.array(axis.bottom)
    direction = (bottom - top) / max(axis.length, 1e-6)
    inset = inset_frac * axis.length
    centres = (top + direction * inset, bottom - direction * inset)
    crops = [oriented_crop(image.astype(np.float32), tuple(c), axis.angle, side, out) for c in centres]
    return np.stack(crops).astype(np.float32)
