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


def find_bright_axis(
    image: np.ndarray, *, level: float = 0.65, grow_level: float = 0.4, max_tilt_deg: float = 45.0
) -> ObjectAxis:
    """Principal axis of the brightest blob of a grey image (H, W) in [0, 1].

    Metal is the most radio-opaque thing on a radiograph, so the threshold sits ``level`` of the way from the
    median grey to the near-maximum (99.5th percentile); of the blobs above it, the one with the largest
    brightness mass wins, which beats crowns and roots that are large but dimmer; it is then grown to the
    ``grow_level`` threshold to recover the implant's dimmer ends. Implants stand roughly upright,
    so an axis tilted more than ``max_tilt_deg`` (a short, wide implant) is replaced by its perpendicular. Falls
    back to the image's vertical centre line when nothing stands out (a blank image).
    """
    h, w = image.shape
    smooth = cv2.GaussianBlur(np.clip(image, 0, 1).astype(np.float32), (0, 0), sigmaX=max(1.0, w / 250))
    median, high = float(np.median(smooth)), float(np.percentile(smooth, 99.5))
    if high - median < 1e-3:
        return ObjectAxis(top=(w / 2, h * 0.1), bottom=(w / 2, h * 0.9), width=w * 0.2)
    seed = _brightest_blob(smooth, median + level * (high - median))
    seed_points = np.stack(np.nonzero(seed)[::-1], axis=1).astype(np.float64)  # (N, 2) as x, y
    centre = seed_points.mean(axis=0)
    _, _, vt = np.linalg.svd(seed_points - centre, full_matrices=False)
    direction = vt[0] if abs(vt[0][1]) >= np.cos(np.radians(max_tilt_deg)) else vt[1]
    direction = direction if direction[1] >= 0 else -direction  # point downwards
    # Hysteresis: grow the seed at a lower threshold so the dimmer, thinner ends (a pointed apex) are kept, but
    # only a little beyond the seed, so a low-contrast image cannot leak the blob into bright bone.
    reach = int(max(3, 0.1 * np.ptp((seed_points - centre) @ direction)))
    near = cv2.dilate(seed.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2))
    grown = (smooth >= median + grow_level * (high - median)) & (near > 0)
    count, labels = cv2.connectedComponents(grown.astype(np.uint8))
    label = np.bincount(labels[seed], minlength=count).argmax()
    points = np.stack(np.nonzero(labels == label)[::-1], axis=1).astype(np.float64)
    along = (points - centre) @ direction
    across = (points - centre) @ np.array([-direction[1], direction[0]])
    top = centre + direction * along.min()
    bottom = centre + direction * along.max()
    return ObjectAxis(top=tuple(top), bottom=tuple(bottom), width=float(across.max() - across.min()))


def _brightest_blob(smooth: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the connected component above ``threshold`` holding the most brightness above it."""
    count, labels = cv2.connectedComponents((smooth >= threshold).astype(np.uint8), connectivity=8)
    mass = np.bincount(labels.ravel(), weights=np.clip(smooth - threshold, 0, None).ravel(), minlength=count)
    mass[0] = 0
    return labels == int(np.argmax(mass))


def oriented_crop(
    image: np.ndarray, centre: tuple[float, float], angle_deg: float, side: float, out: int
) -> np.ndarray:
    """Square crop of ``side`` pixels around ``centre``, rotated so the object axis is vertical, resized to
    ``out`` x ``out``; pixels outside the image are filled by edge replication."""
    scale = out / max(side, 1.0)
    matrix = cv2.getRotationMatrix2D(centre, -angle_deg, scale)
    matrix[:, 2] += np.array([out / 2.0, out / 2.0]) - np.array(centre)
    return cv2.warpAffine(
        image,
        matrix,
        (out, out),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def object_crops(
    image: np.ndarray,
    axis: ObjectAxis,
    *,
    out: int,
    side_frac: float = 0.4,
    inset_frac: float = 0.12,
    whole: bool = True,
) -> np.ndarray:
    """Crops of the object: its top end (collar), its bottom end (tip) and, with ``whole``, the whole object with
    a small margin; each rotated upright and resized to ``out`` x ``out``: (2 or 3, out, out) float32.

    End crops have a side that is a fraction of the object's pixel length, so thread spacing inside a crop is
    measured relative to the object, whatever the pixel spacing of the radiograph; it is widened to the object's
    width (plus a margin) when needed, so that both outlines, where the threads show best, stay inside. The whole
    crop shows every thread at once in a frame normalised to the object's length.
    """
    image = image.astype(np.float32)
    side = max(side_frac * axis.length, 1.25 * axis.width, 8.0)
    top, bottom = np.array(axis.top), np.array(axis.bottom)
    direction = (bottom - top) / max(axis.length, 1e-6)
    inset = inset_frac * axis.length
    crops = [
        oriented_crop(image, tuple(c), axis.angle, side, out)
        for c in (top + direction * inset, bottom - direction * inset)
    ]
    if whole:
        crops.append(whole_object_crop(image, axis, out=out))
    return np.stack(crops)


def whole_object_crop(image: np.ndarray, axis: ObjectAxis, *, out: int) -> np.ndarray:
    """The whole object with a 10 % margin, rotated upright, resized to ``out`` x ``out``: (out, out) float32.
    The frame is normalised to the object's length, so its pixel size no longer shows; only its shape does."""
    centre = tuple((np.array(axis.top) + np.array(axis.bottom)) / 2)
    side = max(1.1 * axis.length, 1.25 * axis.width, 8.0)
    return oriented_crop(image.astype(np.float32), centre, axis.angle, side, out)


def axis_geometry(axis: ObjectAxis, shape: tuple[int, int]) -> np.ndarray:
    """Scale-free measurements of the object: length and width over the image side, their ratio, and the tilt
    (radians): (4,) float32. Pixel spacing is unknown, so these bound the length without fixing it."""
    side = float(max(shape))
    return np.array(
        [axis.length / side, axis.width / side, axis.length / max(axis.width, 1.0) / 4.0, np.radians(axis.angle)],
        dtype=np.float32,
    )


def axis_profiles(
    image: np.ndarray,
    axis: ObjectAxis,
    *,
    samples: int = 256,
    offsets: tuple[float, ...] = (-0.45, -0.3, 0.0, 0.3, 0.45),
) -> np.ndarray:
    """Intensity profiles along the object's axis at native resolution: (len(offsets), samples) float32.

    Each profile runs from 5 % before the top end to 5 % past the bottom end, at a lateral offset given as a
    fraction of the object's width, averaged over a strip a few pixels wide. Threads show as an oscillation whose
    period, relative to the profile's length, is the thread count: the finest cue on the image, kept without
    any downscaling.
    """
    top, bottom = np.array(axis.top), np.array(axis.bottom)
    direction = (bottom - top) / max(axis.length, 1e-6)
    normal = np.array([-direction[1], direction[0]])
    t = np.linspace(-0.05, 1.05, samples) * axis.length
    strip = np.linspace(-1.0, 1.0, 3) * max(1.0, 0.03 * axis.width)
    profiles = []
    for offset in offsets:
        lateral = offset * axis.width + strip[:, None]  # (3, 1)
        xs = top[0] + direction[0] * t[None, :] + normal[0] * lateral
        ys = top[1] + direction[1] * t[None, :] + normal[1] * lateral
        values = cv2.remap(
            image.astype(np.float32),
            xs.astype(np.float32),
            ys.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        profiles.append(values.mean(axis=0))
    return np.stack(profiles).astype(np.float32)
