"""A piece photo as both placing methods need it: the piece separated from the table (its mask), straightened so
its sides are axis-aligned, and, for the learned model, cut out onto a plain square of its mean colour."""

from __future__ import annotations

import cv2
import numpy as np

from finescale.data.images import as_rgb_uint8

MIN_PIECE_PIXELS = 16  # a smaller mask means nothing stood out from the table


def _largest_filled(fg: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask with its holes filled (bool, same shape)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(fg, dtype=bool)
    keep = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    outside = np.pad(1 - keep, 1, constant_values=1)
    cv2.floodFill(outside, None, (0, 0), 2)
    return (keep == 1) | (outside[1:-1, 1:-1] == 1)


def estimate_piece_mask(photo: np.ndarray, border: int = 4, grabcut_iters: int = 5) -> np.ndarray:
    """Bool (H, W) mask of the piece in an RGB uint8 photo whose outer ``border`` pixels show only the table.

    The table's colour statistics (mean, covariance in Lab) come from the border strip. Pixels beyond the strip's own
    99.5th percentile of Mahalanobis distance (at least 3 sigma) are sure piece, the border strip is sure table, and
    GrabCut settles the rest, starting from "probably piece" where the distance exceeds the strip's 90th percentile.
    The largest component, holes filled, is the piece. GrabCut runs with a fixed OpenCV RNG seed: reproducible.
    """
    h, w = photo.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(photo, (0, 0), 1.2), cv2.COLOR_RGB2LAB).astype(np.float32)
    ring = np.ones((h, w), bool)
    ring[border:-border, border:-border] = False
    strip = lab[ring]
    inv = np.linalg.inv(np.cov(strip.T) + np.eye(3) * 4.0)
    diff = lab - strip.mean(0)
    d2 = np.einsum("hwi,ij,hwj->hw", diff, inv, diff)
    sure = max(float(np.quantile(d2[ring], 0.995)), 9.0)
    fg = cv2.morphologyEx((d2 > sure).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    fg = _largest_filled(fg)
    if grabcut_iters <= 0 or fg.sum() < MIN_PIECE_PIXELS:
        return fg
    gc = np.where(d2 > float(np.quantile(d2[ring], 0.9)), cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    gc[cv2.erode(fg.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0] = cv2.GC_FGD
    gc[ring] = cv2.GC_BGD
    cv2.setRNGSeed(0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(photo[..., ::-1]), gc, None, bgd, fgd, grabcut_iters, cv2.GC_INIT_WITH_MASK)
    refined = _largest_filled((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD))
    return refined if refined.sum() >= MIN_PIECE_PIXELS else fg


def piece_mask(photo: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The piece's bool mask in ``photo``: ``mask`` as given, else estimated (:func:`estimate_piece_mask`); the whole
    photo when nothing stands out from the table."""
    mask = estimate_piece_mask(photo) if mask is None else mask
    return mask if mask.sum() >= MIN_PIECE_PIXELS else np.ones(photo.shape[:2], bool)


def skew_angle(mask: np.ndarray) -> float:
    """Angle in degrees, in [-45, 45), of the piece outline's dominant directions modulo 90 degrees.

    Measured as atan2(dy, dx) in image coordinates (y down): the straight shoulders of a jigsaw piece dominate a
    length-weighted 4-fold circular mean of the outline's directions, while the round knobs average out.
    ``cv2.getRotationMatrix2D(centre, skew_angle(mask), 1)`` makes the piece's sides axis-aligned.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    pts = max(contours, key=len)[:, 0, :].astype(np.float64)
    d = np.roll(pts, -4, axis=0) - pts
    z = np.sum(np.hypot(d[:, 0], d[:, 1]) * np.exp(4j * np.arctan2(d[:, 1], d[:, 0])))
    angle = float(np.degrees(np.angle(z) / 4.0))
    return (angle + 45.0) % 90.0 - 45.0


def straighten(piece: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``piece`` (H, W, C) and its bool ``mask`` by ``angle`` degrees (OpenCV sense, counter-clockwise on
    screen) on a canvas that holds the whole result, and crop both to the mask's bounding box."""
    h, w = mask.shape
    rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    nw, nh = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    rot[:, 2] += [(nw - w) / 2.0, (nh - h) / 2.0]
    img = cv2.warpAffine(piece, rot, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    m = cv2.warpAffine(mask.astype(np.float32), rot, (nw, nh), flags=cv2.INTER_LINEAR) > 0.5
    return crop_to_mask(img, m)


def cut_out_piece(photo: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The piece alone, as the learned model's input: ``photo`` (uint8 RGB on a table) straightened, the table
    (outside ``mask``, estimated when None) replaced by the piece's mean colour, centred on a square of that colour
    whose side is the piece's longer side. Without the table and the few degrees of turn, the model's correlation
    only has to match picture content (measured in the README: the learned placement improves several-fold)."""
    photo = as_rgb_uint8(photo)
    mask = piece_mask(photo, mask)
    img, m = straighten(photo, mask, skew_angle(mask))
    mean = img[m].mean(axis=0).round().astype(np.uint8)
    h, w = m.shape
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = mean
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = np.where(m[..., None], img, mean)
    return out


def crop_to_mask(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img`` and ``mask`` cut to the bounding box of ``mask`` (unchanged when the mask is empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return img, mask
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return img[y0:y1, x0:x1], mask[y0:y1, x0:x1]
