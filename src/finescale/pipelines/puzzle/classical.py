"""Training-free baseline of the ``puzzle`` pipeline: find a photographed jigsaw piece in the puzzle picture.

1. The piece is separated from the table and straightened (``puzzle.piece_photo``), so the table never pollutes the
   matching.
2. SIFT + RANSAC: the piece's keypoints are matched to the puzzle's (ratio test) and a similarity transform is fitted;
   the piece's outline projected through it gives the box, its angle the quarter turns.
3. When SIFT finds too few inliers: masked normalised cross-correlation (``cv2.TM_CCOEFF_NORMED`` with the piece
   mask) over the 4 quarter turns and 3 scales, coarse (puzzle / 4) then refined at full resolution around the best
   candidates. Memory stays bounded: only the reduced puzzle and small full-resolution windows are correlated.

Rotation convention (the manifests'): ``rotation = k`` means the piece photo shows ``np.rot90(region, k)``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from finescale.data.images import as_rgb_uint8
from finescale.pipelines.puzzle.piece_photo import piece_mask, skew_angle, straighten


def sanitize_scores(res: np.ndarray) -> np.ndarray:
    """Scores of masked ``TM_CCOEFF_NORMED`` made safe for ``cv2.minMaxLoc``: OpenCV 4.x gives NaN or inf on
    windows with no variance (5.x gives 0), and round-off can push |r| past 1; all of those become -1, the rest is
    clipped to [-1, 1]."""
    res = np.nan_to_num(res, nan=-1.0, posinf=-1.0, neginf=-1.0)
    res[np.abs(res) > 1.0 + 1e-3] = -1.0
    return np.clip(res, -1.0, 1.0, out=res)


def _peaks(res: np.ndarray, count: int, radius: int) -> list[tuple[float, int, int]]:
    """Up to ``count`` (score, x, y) maxima of a score map, each at least ``radius`` from the ones before."""
    res = res.copy()
    out = []
    for _ in range(count):
        _, score, _, (x, y) = cv2.minMaxLoc(res)
        if score <= -1.0:
            break
        out.append((float(score), int(x), int(y)))
        res[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1] = -1.0
    return out


def _window(
    image_hw: tuple[int, int], template_hw: tuple[int, int], cx: float, cy: float, pad: int
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the search window around a template of ``template_hw`` centred at (cx, cy), ``pad``
    pixels larger on every side and shifted, not shrunk, at the image border; None when the template cannot fit."""
    (height, width), (th, tw) = image_hw, template_hw
    x0, y0 = max(int(round(cx - tw / 2.0)) - pad, 0), max(int(round(cy - th / 2.0)) - pad, 0)
    x1, y1 = min(x0 + tw + 2 * pad, width), min(y0 + th + 2 * pad, height)
    x0, y0 = max(min(x0, x1 - tw), 0), max(min(y0, y1 - th), 0)
    return None if x1 - x0 < tw or y1 - y0 < th else (x0, y0, x1, y1)


@dataclass(frozen=True)
class Candidate:
    """A place to verify: correlation ``score``, quarter turns ``rotation``, centre (``x``, ``y``) in puzzle pixels."""

    score: float
    rotation: int
    x: float
    y: float


@dataclass
class PreparedPiece:
    """A piece photo ready for matching: straightened and blurred RGB float32, its eroded mask, grey copy, and the
    reduction ``factor`` of its coarse search (a template of at least about 16 px)."""

    image: np.ndarray
    mask: np.ndarray
    grey: np.ndarray
    factor: int

    def template(self, source: np.ndarray, k: int, zoom: float) -> tuple[np.ndarray, np.ndarray]:
        """``source`` (``image`` or ``grey``) turned back by ``k`` quarter turns and resized by ``zoom``, with its
        mask (float32 0/1)."""
        t_img, t_mask = np.rot90(source, -k), np.rot90(self.mask, -k)
        size = (max(round(t_img.shape[1] * zoom), 4), max(round(t_img.shape[0] * zoom), 4))
        t = cv2.resize(np.ascontiguousarray(t_img), size, interpolation=cv2.INTER_AREA)
        tm = cv2.resize(np.ascontiguousarray(t_mask), size, interpolation=cv2.INTER_AREA)
        return t, (tm > 0.5).astype(np.float32)


@dataclass
class PuzzleIndex:
    """What one puzzle costs once: float32 copies at reduced scales, and SIFT features (built on first use)."""

    image: np.ndarray  # uint8 RGB (H, W, 3)
    reduced: dict[int, np.ndarray] = field(default_factory=dict)  # factor -> grey float32 (H / factor, W / factor)
    points: np.ndarray | None = None  # (N, 2) float32 keypoint xy in puzzle pixels
    descriptors: np.ndarray | None = None  # (N, 128) float32


# what ``--matcher`` offers; the first is the default: templates alone placed every piece SIFT + templates placed, on
# the synthetic test set and on outside photos, 24-26 % faster (benchmarks/puzzle_sift.py, docs/bench/puzzle/sift.json)
MATCHERS = ("template", "sift")


class ClassicalMatcher:
    """Find a piece photo in a puzzle picture without training: masked template matching, or SIFT + RANSAC first.

    ``method="template"`` (the default) uses masked template matching only; ``method="sift"`` (``"auto"`` is its earlier
    name) tries SIFT first and falls back to templates when fewer than ``min_inliers`` matches agree. Each template
    search correlates the 4 quarter turns x ``scales`` on the puzzle reduced by up to ``coarse_factor``, then
    refines the best ``candidates`` at full resolution. The last ``cache_size`` puzzles' reduced copies and SIFT
    features are kept (keyed by ``key`` or a hash of the pixels), so matching many pieces of one puzzle pays for its
    features once.
    """

    def __init__(
        self,
        *,
        method: Literal["sift", "template", "auto"] = "template",
        scales: Sequence[float] = (0.9, 1.0, 1.1),
        coarse_scales: Sequence[float] | None = None,
        coarse_factor: int = 4,
        candidates: int = 6,
        min_inliers: int = 8,
        ratio: float = 0.8,
        blur: float = 1.0,
        sift_tile: int = 768,
        cache_size: int = 2,
    ) -> None:
        method = "sift" if method == "auto" else method
        if method not in MATCHERS:
            raise ValueError(f"method must be one of {', '.join(MATCHERS)}, got {method!r}")
        self.method = method
        self.scales = tuple(float(s) for s in scales)
        self.coarse_scales = self.scales if coarse_scales is None else tuple(float(s) for s in coarse_scales)
        self.coarse_factor = max(1, int(coarse_factor))
        self.candidates = candidates
        self.min_inliers = min_inliers
        self.ratio = ratio
        self.blur = float(blur)
        self.sift_tile = sift_tile
        self.cache_size = cache_size
        self._cache: OrderedDict[Hashable, PuzzleIndex] = OrderedDict()
        self._sift = cv2.SIFT_create()
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    @staticmethod
    def fingerprint(puzzle: np.ndarray) -> Hashable:
        """Cache key of a puzzle array: its shape and a hash of its bytes."""
        digest = hashlib.blake2b(np.ascontiguousarray(puzzle).data, digest_size=16).hexdigest()
        return (puzzle.shape, digest)

    def match(self, puzzle: np.ndarray, piece: np.ndarray, key: Hashable | None = None) -> dict:
        """Locate ``piece`` (RGB photo on a table) in ``puzzle`` (RGB H x W x 3); uint8 is expected, grey or float
        [0, 1] arrays are converted (:func:`as_rgb_uint8`).

        Returns ``{"box": [x1, y1, x2, y2]`` (float puzzle pixels, xyxy: the piece's outline at the matched scale and
        turn), ``"rotation": k`` (piece photo = ``np.rot90(region, k)``), ``"confidence"`` (SIFT: inlier ratio;
        template: correlation peak; in [0, 1]) and ``"method": "sift" | "template"}``.
        """
        index = self.index_of(as_rgb_uint8(puzzle), key)
        piece = as_rgb_uint8(piece)
        mask = piece_mask(piece)
        result = self._match_sift(index, piece, mask) if self.method == "sift" else None
        return result if result is not None else self._match_template(index, piece, mask)

    def match_many(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray]) -> list[dict]:
        """:meth:`match` for several pieces of one puzzle, hashing the puzzle once."""
        puzzle = as_rgb_uint8(puzzle)
        key = self.fingerprint(puzzle)
        return [self.match(puzzle, piece, key=key) for piece in pieces]

    def index_of(self, puzzle: np.ndarray, key: Hashable | None = None) -> PuzzleIndex:
        """The cached per-puzzle data of ``puzzle`` (uint8 RGB), built on first use."""
        key = self.fingerprint(puzzle) if key is None else key
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        index = PuzzleIndex(np.ascontiguousarray(puzzle))
        self._cache[key] = index
        while len(self._cache) > max(self.cache_size, 1):
            self._cache.popitem(last=False)
        return index

    def _sift_features(self, index: PuzzleIndex) -> None:
        """Detect SIFT on the puzzle tile by tile (bounded memory), keeping each keypoint only in its home tile."""
        if index.points is not None:
            return
        grey = cv2.cvtColor(index.image, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        t, overlap = self.sift_tile, 32
        points, descriptors = [np.zeros((0, 2), np.float32)], [np.zeros((0, 128), np.float32)]
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                ya, xa = max(y0 - overlap, 0), max(x0 - overlap, 0)
                kps, desc = self._sift.detectAndCompute(grey[ya : y0 + t + overlap, xa : x0 + t + overlap], None)
                if desc is None:
                    continue
                xy = np.float32([kp.pt for kp in kps]).reshape(-1, 2) + np.float32([xa, ya])
                home = (xy[:, 0] >= x0) & (xy[:, 0] < x0 + t) & (xy[:, 1] >= y0) & (xy[:, 1] < y0 + t)
                points.append(xy[home])
                descriptors.append(desc[home])
        index.points, index.descriptors = np.concatenate(points), np.concatenate(descriptors)

    def _match_sift(self, index: PuzzleIndex, photo: np.ndarray, mask: np.ndarray) -> dict | None:
        """Similarity transform piece -> puzzle from ratio-tested SIFT matches and RANSAC; None when unreliable."""
        self._sift_features(index)
        if len(index.descriptors) < 2:
            return None
        inner = cv2.erode(mask.astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
        kps, desc = self._sift.detectAndCompute(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), inner)
        if desc is None or len(kps) < self.min_inliers:
            return None
        pairs = self._matcher.knnMatch(desc, index.descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < self.min_inliers:
            return None
        src = np.float32([kps[m.queryIdx].pt for m in good])
        dst = index.points[[m.trainIdx for m in good]]
        fit, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0, maxIters=2000, confidence=0.995
        )
        if fit is None:
            return None
        n_in, scale = int(inliers.sum()), float(np.hypot(fit[0, 0], fit[1, 0]))
        if n_in < self.min_inliers or not 0.75 <= scale <= 1.33:
            return None
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outline = np.concatenate(contours)[:, 0, :].astype(np.float64) @ fit[:, :2].T + fit[:, 2]
        h, w = index.image.shape[:2]
        x1, y1 = np.clip(outline.min(0), 0, [w, h])
        x2, y2 = np.clip(outline.max(0) + 1.0, 0, [w, h])
        k = int(round(np.degrees(np.arctan2(fit[1, 0], fit[0, 0])) / 90.0)) % 4
        box = [float(x1), float(y1), float(x2), float(y2)]
        return {"box": box, "rotation": k, "confidence": n_in / len(good), "method": "sift"}

    def _reduced(self, index: PuzzleIndex, factor: int) -> np.ndarray:
        """The puzzle in grey, reduced by ``factor`` (area averaging), float32; cached on the index."""
        if factor not in index.reduced:
            h, w = index.image.shape[:2]
            grey = cv2.cvtColor(index.image, cv2.COLOR_RGB2GRAY)
            size = (max(w // factor, 1), max(h // factor, 1))
            index.reduced[factor] = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return index.reduced[factor]

    def prepare(self, photo: np.ndarray, mask: np.ndarray | None = None) -> PreparedPiece:
        """The piece ready for template matching: separated from the table (``mask``, estimated when None),
        straightened, blurred like the puzzle windows it is compared with."""
        photo = as_rgb_uint8(photo)
        mask = piece_mask(photo, mask)
        img, m = straighten(photo.astype(np.float32), mask, skew_angle(mask))
        img = cv2.GaussianBlur(img, (0, 0), self.blur)
        inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).astype(np.float32)
        if inner.sum() < 16:
            inner = m.astype(np.float32)
        factor = int(np.clip(min(img.shape[:2]) // 16, 1, self.coarse_factor))
        return PreparedPiece(img, inner, cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), factor)

    def coarse_candidates(self, index: PuzzleIndex, piece: PreparedPiece) -> list[Candidate]:
        """Best places of the piece on the whole puzzle: grey masked correlation on the puzzle reduced by the
        piece's coarse factor, over the 4 turns x ``coarse_scales``; the ``candidates`` best, highest first."""
        factor = piece.factor
        reduced = self._reduced(index, factor)
        found = []
        for k in range(4):
            for f in self.coarse_scales:
                t, tm = piece.template(piece.grey, k, f / factor)
                th, tw = t.shape[:2]
                if th > reduced.shape[0] or tw > reduced.shape[1] or tm.sum() < 4:
                    continue
                res = sanitize_scores(cv2.matchTemplate(reduced, t, cv2.TM_CCOEFF_NORMED, mask=tm))
                for score, x, y in _peaks(res, 2, max(th, tw) // 2):
                    found.append(Candidate(score, k, (x + tw / 2.0) * factor, (y + th / 2.0) * factor))
        found.sort(key=lambda c: -c.score)
        return found[: self.candidates]

    def check_places(
        self, index: PuzzleIndex, piece: PreparedPiece, places: Sequence[Candidate], pad: float
    ) -> list[Candidate]:
        """Cheap verification of proposed places: grey masked correlation on the reduced puzzle (the coarse search's
        resolution), each at its own turn, in a window ``pad`` puzzle pixels larger than the piece; returns the
        places re-scored and re-centred on their best match, highest first, at most ``candidates`` of them."""
        factor = piece.factor
        reduced = self._reduced(index, factor)
        margin = int(np.ceil(pad / factor)) + 1
        checked = []
        for place in places:
            for f in self.coarse_scales:
                t, tm = piece.template(piece.grey, place.rotation, f / factor)
                th, tw = t.shape[:2]
                found = self._best_in_window(reduced, t, tm, place.x / factor, place.y / factor, margin)
                if found is not None:
                    score, x, y = found
                    checked.append(Candidate(score, place.rotation, (x + tw / 2.0) * factor, (y + th / 2.0) * factor))
        checked.sort(key=lambda c: -c.score)
        return checked[: self.candidates]

    @staticmethod
    def _best_in_window(
        image: np.ndarray, t: np.ndarray, tm: np.ndarray, cx: float, cy: float, pad: int
    ) -> tuple[float, float, float] | None:
        """Best masked correlation (score, x, y of the top-left corner in ``image``) of template ``t`` in the window
        of ``image`` that extends ``pad`` pixels around the template centred at (cx, cy); None when it does not fit.
        """
        bounds = _window(image.shape[:2], t.shape[:2], cx, cy, pad)
        if bounds is None or tm.sum() < 4:
            return None
        x0, y0, x1, y1 = bounds
        res = sanitize_scores(cv2.matchTemplate(image[y0:y1, x0:x1], t, cv2.TM_CCOEFF_NORMED, mask=tm))
        _, score, _, (px, py) = cv2.minMaxLoc(res)
        return float(score), float(x0 + px), float(y0 + py)

    def refine(
        self, index: PuzzleIndex, piece: PreparedPiece, candidates: Sequence[Candidate], pad: int | None = None
    ) -> dict:
        """Verify each candidate (turn k, centre in puzzle pixels) by colour masked correlation at full resolution
        over ``scales``, in a window ``pad`` pixels larger than the piece on every side (default: what the coarse
        search's grid leaves uncertain); the best-scoring placement wins."""
        height, width = index.image.shape[:2]
        pad = 2 * piece.factor + 3 if pad is None else int(pad)
        best = (-1.0, 0, 0.0, 0.0, float(width), float(height))  # score, k, x1, y1, x2, y2
        e = int(3 * self.blur) + 1  # blur a slightly larger window so its edges are clean
        for c in candidates:
            for f in self.scales:
                t, tm = piece.template(piece.image, c.rotation, f)
                th, tw = t.shape[:2]
                bounds = _window((height, width), (th, tw), c.x, c.y, pad)
                if bounds is None:
                    continue
                x0, y0, x1, y1 = bounds
                bx0, by0 = max(x0 - e, 0), max(y0 - e, 0)
                window = cv2.GaussianBlur(index.image[by0 : y1 + e, bx0 : x1 + e].astype(np.float32), (0, 0), self.blur)
                window = window[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
                res = sanitize_scores(cv2.matchTemplate(window, t, cv2.TM_CCOEFF_NORMED, mask=tm))
                _, score, _, (px, py) = cv2.minMaxLoc(res)
                if score > best[0]:
                    best = (score, c.rotation, float(x0 + px), float(y0 + py), float(x0 + px + tw), float(y0 + py + th))
        score, k, *box = best
        return {"box": box, "rotation": k, "confidence": float(np.clip(score, 0.0, 1.0)), "method": "template"}

    def _match_template(self, index: PuzzleIndex, photo: np.ndarray, mask: np.ndarray) -> dict:
        """Masked correlation of the straightened piece: a grey search on the reduced puzzle over the 4 turns x
        ``coarse_scales``, then a colour refinement over the best candidates x ``scales`` in small full-resolution
        windows."""
        piece = self.prepare(photo, mask)
        return self.refine(index, piece, self.coarse_candidates(index, piece))
