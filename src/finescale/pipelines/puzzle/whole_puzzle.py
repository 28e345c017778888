"""Whole-puzzle search with bounded memory: the puzzle is rescaled and encoded ONCE, in overlapping tiles whose
feature maps are stitched, then every piece is scored against the stitched pyramid in chunks, the correlation
computed in row bands. Encoding the puzzle once for all pieces is the learned method's speed advantage over
per-piece template matching, which must sweep the whole picture for every piece.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from finescale.data.images import as_rgb
from finescale.pipelines.puzzle.classical import Candidate
from finescale.pipelines.puzzle.config import PuzzleConfig, PuzzleDataConfig
from finescale.pipelines.puzzle.data import fit_square, piece_scale, piece_side, puzzle_scale, rescale, to_tensor
from finescale.pipelines.puzzle.model import PuzzleLocator
from finescale.pipelines.puzzle.piece_photo import cut_out_piece

ALIGN = 32  # the coarsest stride: tiles start on multiples of it so every level's grid lines up


def tile_starts(extent: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``extent`` with at least ``overlap`` shared between neighbours."""
    if extent <= tile:
        return [0]
    return [*range(0, extent - tile, tile - overlap), extent - tile]


def pad_to_multiple(image: np.ndarray, multiple: int = ALIGN) -> np.ndarray:
    """Zero-pad the bottom and right so that both sides are multiples of ``multiple`` (origin unchanged)."""
    h, w = image.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0))) if pad_h or pad_w else image


@torch.no_grad()
def encode_tiled(model: PuzzleLocator, image: np.ndarray, *, tile: int, overlap: int) -> list[torch.Tensor]:
    """(H, W, 3) image, sides multiples of 32 -> the pyramid [(1, C, H / s, W / s)] of the whole image.

    Each tile keeps its interior (``overlap / 2`` is cut where it meets a neighbour, so every kept cell saw enough
    context), and the kept parts tile the image exactly. Peak memory: one tile's activations + the stitched maps.
    """
    height, width = image.shape[:2]
    half = overlap // 2
    strides = model.puzzle_encoder.strides
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for y0 in tile_starts(height, tile, overlap):
        for x0 in tile_starts(width, tile, overlap):
            y1, x1 = min(height, y0 + tile), min(width, x0 + tile)
            feats = model.encode_puzzle(to_tensor(image[y0:y1, x0:x1])[None].to(device))
            if not out:
                out = [f.new_zeros(1, f.shape[1], height // s, width // s) for f, s in zip(feats, strides, strict=True)]
            ky0, ky1 = y0 + (half if y0 > 0 else 0), y1 - (half if y1 < height else 0)
            kx0, kx1 = x0 + (half if x0 > 0 else 0), x1 - (half if x1 < width else 0)
            for level, f, s in zip(out, feats, strides, strict=True):
                level[..., ky0 // s : ky1 // s, kx0 // s : kx1 // s] = f[
                    ..., (ky0 - y0) // s : (ky1 - y0) // s, (kx0 - x0) // s : (kx1 - x0) // s
                ]
    return out


def _as_float(image: np.ndarray) -> np.ndarray:
    image = as_rgb(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


@torch.no_grad()
def locate(
    model: PuzzleLocator,
    puzzle_rgb: np.ndarray,
    pieces: Sequence[np.ndarray],
    cfg: PuzzleConfig | PuzzleDataConfig,
    *,
    proposals: int = 0,
    masks: Sequence[np.ndarray] | None = None,
) -> list[dict]:
    """Find each piece in the whole puzzle.

    ``puzzle_rgb`` (H, W, 3) and each piece photo (h, w, 3), uint8 or float in [0, 1]. The scale follows the
    training rule (``puzzle.data``): in piece mode the puzzle is rescaled by ``piece_pixels`` / the median longer
    side of the piece photos, every piece by the same factor. Returns per piece ``{"box": [x1, y1, x2, y2]`` in
    original puzzle pixels, ``"rotation": k`` (the photo shows ``np.rot90(puzzle[box], k)``), ``"confidence"``}; with
    ``proposals`` > 0 also ``"proposals"``: that many :class:`Candidate` places (the highest local maxima of the
    score over turn x position, best first) and ``"cell_px"``, the size of one score cell in puzzle pixels.
    With ``piece_input: cutout`` each piece is cut out of its photo first, along its mask in ``masks`` (estimated
    where not given).
    """
    cfg = getattr(cfg, "data", cfg)
    if not pieces:
        return []
    if cfg.piece_input == "cutout":
        masks = list(masks) if masks is not None else [None] * len(pieces)
        pieces = [cut_out_piece(p, m) for p, m in zip(pieces, masks, strict=True)]
    model.eval()
    device = next(model.parameters()).device
    height, width = puzzle_rgb.shape[:2]
    factor = puzzle_scale((height, width), [max(p.shape[:2]) for p in pieces], cfg)
    scaled = pad_to_multiple(_as_float(rescale(np.asarray(puzzle_rgb), factor)))
    levels = encode_tiled(model, scaled, tile=cfg.tile, overlap=cfg.tile_overlap)
    side = piece_side(cfg)
    to_pixels = torch.tensor([scaled.shape[1], scaled.shape[0]] * 2, dtype=torch.float32) / factor
    results: list[dict] = []
    for start in range(0, len(pieces), cfg.piece_chunk):
        chunk = pieces[start : start + cfg.piece_chunk]
        batch = torch.stack(
            [to_tensor(fit_square(rescale(_as_float(p), piece_scale(p.shape[:2], factor, cfg)), side)) for p in chunk]
        ).to(device)
        encoded = model.encode_pieces(batch)
        scores = model.score(encoded, levels, band_bytes=cfg.band_mb * 2**20)
        pred = model.decode(scores, encoded, levels, input_hw=scaled.shape[:2], piece_px=side)
        boxes = pred["box"].float().cpu() * to_pixels
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        places = top_places(model, scores, pred, boxes, proposals, model.stride / factor) if proposals else None
        for i, (box, rotation, confidence) in enumerate(zip(boxes, pred["rotation"], pred["confidence"], strict=True)):
            result = {"box": [float(v) for v in box], "rotation": int(rotation), "confidence": float(confidence)}
            if places is not None:
                result.update(proposals=places[i], cell_px=model.stride / factor)
            results.append(result)
    return results


def top_places(
    model: PuzzleLocator, scores: dict, pred: dict, boxes: torch.Tensor, count: int, cell_px: float
) -> list[list[Candidate]]:
    """Per piece the ``count`` highest local maxima (3 x 3) of the dense head's logits over turn x position, as
    :class:`Candidate` centres in puzzle pixels. Heads without a dense map propose their box centre at each turn,
    the predicted one first."""
    if not model.dense:
        out = []
        for box, rotation in zip(boxes.tolist(), pred["rotation"].tolist(), strict=True):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            turns = [rotation] + [k for k in range(4) if k != rotation]
            out.append([Candidate(float(4 - i), k, cx, cy) for i, k in enumerate(turns[:count])])
        return out
    logits = scores["logits"].float()  # (B, K, H, W)
    b, k, h, w = logits.shape
    peaks = logits == F.max_pool2d(logits.view(b * k, 1, h, w), 3, stride=1, padding=1).view(b, k, h, w)
    ranked = torch.where(peaks, logits, torch.full_like(logits, float("-inf"))).flatten(1)
    values, flat = ranked.topk(min(count, ranked.shape[1]), dim=1)
    out = []
    for row, (vals, idx) in enumerate(zip(values.tolist(), flat.tolist(), strict=True)):
        places = []
        for value, i in zip(vals, idx, strict=True):
            if value == float("-inf"):
                break
            turn = i // (h * w) if model.match_rotations else int(pred["rotation"][row])
            places.append(Candidate(value, turn, (i % w + 0.5) * cell_px, (i // w % h + 0.5) * cell_px))
        out.append(places)
    return out
