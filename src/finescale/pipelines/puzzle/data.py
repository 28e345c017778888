"""Data for the ``puzzle`` pipeline: manifest records -> (rescaled piece, window of the rescaled puzzle) -> batches.

A record is ``{"puzzle": "puzzles/x.jpg", "piece": "pieces/x_3.png", "box": [x1, y1, x2, y2], "rotation": k}``:
paths relative to the manifest, ``box`` the piece's axis-aligned box in puzzle pixels (xyxy), and the piece photo
shows ``np.rot90(puzzle[box], k)``.

Piece input (``piece_input``): ``cutout`` (default) gives the model the piece cut out of its photo, straightened,
on a plain background of its mean colour; ``photo`` the photo as taken, table and all.

Scale (``scale_mode: piece``): each puzzle is rescaled once by ``piece_pixels / median longer side of its piece
inputs`` and its pieces by the same factor, so that the model sees both at one pixel scale (the photos have about
the puzzle's scale). Whole-puzzle search (``puzzle.whole_puzzle``) applies the same rule to the pieces it is given.
Training does not see whole puzzles: a ``window`` crop holding the piece at a random place (fixed per record for
validation) keeps a CPU step cheap. ``scale_mode: fixed`` is the seed's: the whole puzzle at ``puzzle_size`` and
the piece at ``piece_size``, each resized on its own.

Training augmentation (``augment``): the piece photo turned by quarter turns (label follows), window and piece
flipped, the window turned, the colour channels permuted (see :func:`rand_dihedral`), the piece's colour jittered
and blurred, and window + piece zoomed together by up to ``scale_jitter``.

A batch is a dict: ``piece`` (B, 3, p, p) and ``puzzle`` (B, 3, S, S) float in [0, 1] (p = ``piece_window`` or
``piece_size``, S = ``window`` or ``puzzle_size``); ``box`` (B, 4) xyxy normalised to the window; ``rotation`` (B,)
long; ``scale`` (B,) window pixels per original puzzle pixel and ``origin`` (B, 2) the window's top-left (x, y) in
original puzzle pixels, so that a window pixel (x, y) is puzzle pixel (x / scale + origin_x, y / scale + origin_y)
(before the training augmentation, which may also flip and turn the window); ``index`` (B,) the record's position.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from rich.progress import track
from torch.utils.data import Dataset
from torchvision.transforms import v2

from finescale.data.datamodule import ManifestDataModule
from finescale.data.images import read_image, to_uint8
from finescale.data.manifest import FieldSpec, Manifest, load_manifest
from finescale.errors import EmptyManifestError
from finescale.pipelines.puzzle.config import PuzzleDataConfig
from finescale.pipelines.puzzle.piece_photo import cut_out_piece

log = logging.getLogger("finescale")

FIELDS = (FieldSpec("puzzle", "image"), FieldSpec("piece", "image"), FieldSpec("rotation", "int", low=0, high=3))
BOX_SKIP_REASONS = ("bad_box", "degenerate_box", "box_outside_image")
BOX_TOLERANCE = 1.0  # pixels a box may stick out of the puzzle (rounding in generators)


# ----------------------------------------------------------------------------------------------------- records


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


def check_box(value: object, width: int, height: int) -> tuple[list[float] | None, str | None]:
    """A record's box as 4 floats, or the reason it is unusable (one of BOX_SKIP_REASONS)."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None, "bad_box"
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in value):
        return None, "bad_box"
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 <= x1 or y2 <= y1:
        return None, "degenerate_box"
    tol = BOX_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        return None, "box_outside_image"
    return [x1, y1, x2, y2], None


def load_records(path: str | Path, *, check_images: bool = True) -> Manifest:
    """Validated records (the shared checks, then the box) with skip counts per reason."""
    manifest = load_manifest(path, FIELDS, check_images=check_images)
    sizes: dict[str, tuple[int, int]] = {}
    records, skipped = [], dict(manifest.skipped)
    for record in manifest.records:
        if record["puzzle"] not in sizes:
            sizes[record["puzzle"]] = image_size(record["puzzle"])
        box, reason = check_box(record.get("box"), *sizes[record["puzzle"]])
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        records.append({**record, "box": box})
    n_bad = len(manifest.records) - len(records)
    box_counts = {r: skipped[r] for r in BOX_SKIP_REASONS if r in skipped}
    if not records:
        raise EmptyManifestError(
            f"no valid records in {manifest.path}: {manifest.n_total} records, none with a usable box"
        )
    if n_bad:
        log.warning("manifest %s: skipped %d more records for their box (%s)", manifest.path, n_bad, box_counts)
    return Manifest(path=manifest.path, records=records, skipped=skipped, n_total=manifest.n_total)


# ----------------------------------------------------------------------------------------------------- scaling


def puzzle_scale(puzzle_hw: tuple[int, int], photo_sides: Sequence[int], cfg: PuzzleDataConfig) -> float:
    """Factor from original puzzle pixels to model pixels. ``photo_sides``: longer sides of the piece photos."""
    if cfg.scale_mode == "fixed":
        return cfg.puzzle_size / max(puzzle_hw)
    return cfg.piece_pixels / float(np.median(photo_sides))


def piece_scale(photo_hw: tuple[int, int], puzzle_factor: float, cfg: PuzzleDataConfig) -> float:
    """Factor from piece photo pixels to model pixels: the puzzle's (piece mode) or the photo's own (fixed)."""
    return cfg.piece_size / max(photo_hw) if cfg.scale_mode == "fixed" else puzzle_factor


def piece_side(cfg: PuzzleDataConfig) -> int:
    return cfg.piece_size if cfg.scale_mode == "fixed" else cfg.piece_window


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (area interpolation when shrinking, so fine detail averages instead of aliasing)."""
    if abs(factor - 1.0) < 1e-6:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(
        np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    )


def fit_square(image: np.ndarray, side: int) -> np.ndarray:
    """Centre-crop and/or pad an (h, w, 3) image to (side, side, 3); padding mirrors the photo's border (the table
    texture) rather than adding a hard black frame the correlation kernel would carry around."""
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    image = image[top : top + side, left : left + side]
    h, w = image.shape[:2]
    pad_y, pad_x = side - h, side - w
    if pad_y or pad_x:
        image = cv2.copyMakeBorder(
            np.ascontiguousarray(image),
            pad_y // 2,
            pad_y - pad_y // 2,
            pad_x // 2,
            pad_x - pad_x // 2,
            cv2.BORDER_REFLECT_101,
        )
    return image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or float in [0, 1] -> (3, H, W) float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()


def crop_padded(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The (side, side) square at (x0, y0), zero where it leaves the image."""
    out = np.zeros((side, side, *image.shape[2:]), dtype=image.dtype)
    h, w = image.shape[:2]
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if xb > xa and yb > ya:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = image[ya:yb, xa:xb]
    return out


def window_origin(box: np.ndarray, image_hw: tuple[int, int], side: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random top-left corner of a (side, side) window that holds ``box`` (xyxy) and stays inside the image
    where the image is large enough (else the image sits at a random place inside the window)."""
    origin = []
    for lo_edge, hi_edge, extent in ((box[0], box[2], image_hw[1]), (box[1], box[3], image_hw[0])):
        lo = max(hi_edge - side, min(0, extent - side))
        hi = min(lo_edge, max(0, extent - side))
        a, b = math.ceil(lo), math.floor(hi)
        origin.append(int(rng.integers(a, b + 1)) if a <= b else round((lo + hi) / 2))
    return origin[0], origin[1]


def rand_dihedral(
    window: np.ndarray, box: np.ndarray, piece: np.ndarray, rotation: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One random flip, quarter turn and channel order for a (window, piece) pair: another, equally valid puzzle.

    ``box`` is xyxy in window pixels. Flipping both images mirrors the turn (label -k); turning only the window by
    m leaves the piece showing its region turned by k - m. Few source photos go a long way with this.
    """
    side = window.shape[0]
    if rng.random() < 0.5:
        window, piece = window[:, ::-1], piece[:, ::-1]
        box = np.array([side - box[2], box[1], side - box[0], box[3]])
        rotation = -rotation % 4
    turns = int(rng.integers(4))
    for _ in range(turns):  # np.rot90 maps (x, y) to (y, side - x)
        box = np.array([box[1], side - box[2], box[3], side - box[0]])
    order = rng.permutation(3)
    return np.rot90(window, turns)[..., order], box, piece[..., order], (rotation - turns) % 4


class RandPieceJitter:
    """Colour change and blur of a piece (3, p, p) in [0, 1], on top of the generator's own; draws from torch's
    global RNG, which Lightning seeds per worker."""

    def __init__(self, *, brightness: float = 0.15, contrast: float = 0.15, saturation: float = 0.2) -> None:
        self.transform = v2.Compose(
            [
                v2.ColorJitter(brightness, contrast, saturation, 0.02),
                v2.RandomApply([v2.GaussianBlur(5, (0.1, 1.2))], p=0.3),
            ]
        )

    def __call__(self, piece: torch.Tensor) -> torch.Tensor:
        return self.transform(piece).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------- dataset


class PuzzleDataset(Dataset):
    """Records -> batch items (see the module docstring). With ``cfg.cache`` the rescaled puzzles (one per puzzle
    file, shared by its records) and pieces are decoded once and kept as uint8. With ``piece_input: cutout`` every
    piece is cut out of its photo once, here (:func:`cut_out_piece`), and the cutouts' sides set the scale."""

    def __init__(self, records: Sequence[dict], cfg: PuzzleDataConfig, *, train: bool, seed: int = 0) -> None:
        self.records = list(records)
        self.cfg = cfg
        self.train = train
        self.seed = seed
        self.jitter = RandPieceJitter() if train and cfg.augment else None
        self._cutouts: dict[int, np.ndarray] = {}
        if cfg.piece_input == "cutout":
            for i in track(range(len(self.records)), description="cutting pieces out", transient=True):
                self._cutouts[i] = cut_out_piece(read_image(self.records[i]["piece"], "rgb"))
        photo_sides: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(self.records):
            side = max(self._cutouts[i].shape[:2]) if self._cutouts else max(image_size(record["piece"]))
            photo_sides[record["puzzle"]].append(side)
        self.scales = {path: puzzle_scale(image_size(path)[::-1], sides, cfg) for path, sides in photo_sides.items()}
        self._puzzles: dict[str, np.ndarray] = {}
        self._pieces: dict[int, np.ndarray] = {}
        if cfg.cache:
            for path in track(list(self.scales), description="rescaling puzzles", transient=True):
                self._puzzles[path] = self._load_puzzle(path)
            self._pieces = {i: self._load_piece(i) for i in range(len(self.records))}

    def __len__(self) -> int:
        return len(self.records)

    def _load_puzzle(self, path: str) -> np.ndarray:
        return to_uint8(rescale(read_image(path, "rgb"), self.scales[path]))

    def _load_piece(self, index: int) -> np.ndarray:
        record = self.records[index]
        photo = self._cutouts[index] if self._cutouts else read_image(record["piece"], "rgb")
        return to_uint8(rescale(photo, piece_scale(photo.shape[:2], self.scales[record["puzzle"]], self.cfg)))

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:  # follows torch's seeding (Lightning seeds each worker)
            return np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return np.random.default_rng((self.seed, index))  # the same validation window every epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record, cfg = self.records[index], self.cfg
        factor = self.scales[record["puzzle"]]
        puzzle = self._puzzles.get(record["puzzle"])
        puzzle = self._load_puzzle(record["puzzle"]) if puzzle is None else puzzle
        piece = self._pieces.get(index)
        piece = self._load_piece(index) if piece is None else piece
        rng = self._rng(index)
        rotation = int(record["rotation"])
        augment = self.train and cfg.augment
        if augment:  # a turned photo is the same region at another rotation: the label follows
            turns = int(rng.integers(4))
            piece, rotation = np.rot90(piece, turns), (rotation + turns) % 4
        box = np.asarray(record["box"], dtype=np.float64) * factor  # in rescaled-puzzle pixels
        if cfg.scale_mode == "fixed":
            out_side, x0, y0, crop_side = cfg.puzzle_size, 0, 0, cfg.puzzle_size
        else:
            out_side = cfg.window
            jitter = math.log1p(cfg.scale_jitter) if augment else 0.0
            crop_side = max(8, round(out_side / math.exp(rng.uniform(-jitter, jitter))))
            x0, y0 = window_origin(box, puzzle.shape[:2], crop_side, rng)
        window = crop_padded(puzzle, x0, y0, crop_side)
        zoom = out_side / crop_side
        if crop_side != out_side:
            window = cv2.resize(window, (out_side, out_side), interpolation=cv2.INTER_LINEAR)
            if cfg.scale_mode == "piece":
                piece = rescale(piece, zoom)  # the piece keeps the puzzle's scale
        box_window = (box - np.array([x0, y0, x0, y0])) * zoom  # window pixels
        if augment:
            window, box_window, piece, rotation = rand_dihedral(window, box_window, piece, rotation, rng)
        piece_t = to_tensor(fit_square(piece, piece_side(cfg)))
        if self.jitter is not None:
            piece_t = self.jitter(piece_t)
        box_window = box_window / out_side
        return {
            "piece": piece_t,
            "puzzle": to_tensor(window),
            "box": torch.tensor(box_window, dtype=torch.float32),
            "rotation": torch.tensor(rotation, dtype=torch.long),
            "scale": torch.tensor(factor * zoom, dtype=torch.float32),
            "origin": torch.tensor([x0 / factor, y0 / factor], dtype=torch.float32),
            "index": torch.tensor(index, dtype=torch.long),
        }


class PuzzleDataModule(ManifestDataModule):
    def load_manifest(self, path: Path) -> Manifest:
        return load_records(path)

    def make_dataset(self, records: Sequence[dict], *, train: bool) -> Dataset:
        return PuzzleDataset(records, self.cfg.data, train=train, seed=self.cfg.trainer.seed)
