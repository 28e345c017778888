"""Placing pieces in whole puzzles, by the trained model or by the classical matcher, behind one interface:
``locate(puzzle_rgb, piece_photos) -> [{"box", "rotation", "confidence"}]`` with boxes in puzzle pixels.

:class:`HybridPredictor` is what ``finescale.load(run)`` returns for a puzzle run (:func:`puzzle_predictor` picks
the method); ``predict(pieces, puzzle=...)`` gives the dicts the CLI prints, one per piece, and can write an overlay
PNG of the boxes on the puzzle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader

from finescale.console import stderr_console
from finescale.data.images import read_image, to_uint8
from finescale.engine.predictor import (
    Input,
    PreparedInputs,
    expand_inputs,
    image_reader,
    input_name,
    resolve_device,
)
from finescale.errors import FinescaleError
from finescale.pipelines.puzzle.classical import MATCHERS, Candidate, ClassicalMatcher, PreparedPiece, PuzzleIndex
from finescale.pipelines.puzzle.piece_photo import as_rgb_uint8, piece_mask
from finescale.pipelines.puzzle.whole_puzzle import locate

PRED_COLOUR, TRUE_COLOUR = (255, 40, 40), (40, 220, 40)
log = logging.getLogger("finescale")


def inference_model(task: Any, device: str = "cpu") -> torch.nn.Module:
    """The task's locator ready for placing pieces: eval mode on ``device`` (``auto``: CUDA when present), weights
    in channels-last memory format (the convolutions over the large puzzle run about a third faster on CPU that way;
    same numbers up to round-off)."""
    return task.model.eval().to(resolve_device(device), memory_format=torch.channels_last)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3): the one format both methods take."""
    return to_uint8(read_image(path, "rgb"))


class FilePredictor:
    """What the three methods share: ``predict(pieces, puzzle=...)`` reads the piece photos in DataLoader workers
    (``batch_size`` per read batch, ``num_workers`` processes) and places them all against the puzzle encoded once
    (see :func:`predict_files`); subclasses implement ``locate``."""

    method = ""

    def __init__(self, *, batch_size: int = 32, num_workers: int = 0) -> None:
        self.batch_size = batch_size
        self.num_workers = num_workers

    def locate(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray], *, progress: bool = False) -> list[dict]:
        """Place ``pieces`` in ``puzzle``; ``progress``: show on stderr what is being done (a large puzzle takes a
        while)."""
        raise NotImplementedError

    def predict(
        self,
        pieces: Input | Sequence[Input],
        *,
        puzzle: str | Path | None = None,
        overlay: str | Path | None = None,
        progress: bool = False,
    ) -> list[dict]:
        return predict_files(self, pieces, puzzle=puzzle, overlay=overlay, progress=progress)


class PuzzlePredictor(FilePredictor):
    """The trained locator: the puzzle is encoded once per call, then every piece is scored against it."""

    method = "learned"

    def __init__(self, task: Any, *, batch_size: int = 32, num_workers: int = 0, device: str = "auto") -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.cfg = task.cfg
        self.model = inference_model(task, device)

    def locate(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray], *, progress: bool = False) -> list[dict]:
        if progress:
            log.info("encoding the %dx%d puzzle", puzzle.shape[1], puzzle.shape[0])
        with torch.inference_mode():
            return locate(self.model, puzzle, list(pieces), self.cfg)


class ClassicalPredictor(FilePredictor):
    """The training-free matcher (SIFT + RANSAC, else masked template matching; or templates only) behind the same
    interface; each result says which of the two placed the piece (``matched_by``: ``sift`` or ``template``)."""

    method = "classical"

    def __init__(self, matcher: ClassicalMatcher | None = None, *, batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.matcher = matcher or ClassicalMatcher()

    def locate(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray], *, progress: bool = False) -> list[dict]:
        puzzle = as_rgb_uint8(puzzle)
        key = self.matcher.fingerprint(puzzle)  # hashed once for all pieces, as match_many does
        found = [self.matcher.match(puzzle, piece, key=key) for piece in shown(pieces, progress, "placing pieces")]
        return [
            {
                "box": r["box"],
                "rotation": int(r["rotation"]),
                "confidence": float(r["confidence"]),
                "matched_by": r["method"],
            }
            for r in found
        ]


class HybridPredictor(FilePredictor):
    """The method used with a checkpoint: the trained locator proposes, the classical matcher verifies.

    The model scores every piece against the puzzle encoded once and proposes its ``proposals`` best (turn,
    position) places; each is checked by masked correlation on the reduced puzzle, the ``refine_top`` best are
    refined at full resolution (the classical matcher's own steps), and the best-verified placement wins. A piece
    whose best verified correlation stays under ``accept`` also gets the classical coarse search over the whole
    puzzle (the fallback, :func:`search_whole_puzzle`), so a poor proposal mostly costs time; the extra candidates
    can still outscore the true place now and then (measured in the README). ``stage_seconds`` accumulates the
    time of the mask, learned and verification stages; each result says whether it fell back and what the model
    alone predicted.
    """

    method = "hybrid"

    def __init__(
        self,
        task: Any,
        *,
        proposals: int = 8,
        refine_top: int = 2,
        accept: float = 0.96,  # the lowest whose validation accuracy equals always falling back (README)
        matcher: ClassicalMatcher | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str = "auto",
    ) -> None:
        if proposals < 1:
            raise ValueError(f"proposals must be at least 1, got {proposals}")
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.cfg = task.cfg
        self.model = inference_model(task, device)
        self.proposals = proposals
        self.accept = accept
        self.refine_top = refine_top
        self.matcher = matcher or ClassicalMatcher(method="template")
        self.stage_seconds = {"mask": 0.0, "learned": 0.0, "verify": 0.0}

    def locate(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray], *, progress: bool = False) -> list[dict]:
        # each piece is separated from the table once: the model's cutout and the verification share the mask
        start = time.perf_counter()
        pieces = [as_rgb_uint8(p) for p in pieces]
        masks = [piece_mask(p) for p in pieces]
        masked = time.perf_counter()
        if progress:
            log.info("encoding the %dx%d puzzle for the model's proposals", puzzle.shape[1], puzzle.shape[0])
        with torch.inference_mode():
            learned = locate(self.model, puzzle, pieces, self.cfg, proposals=self.proposals, masks=masks)
        middle = time.perf_counter()
        index = self.matcher.index_of(as_rgb_uint8(puzzle))
        checks = shown(zip(pieces, learned, masks, strict=True), progress, "verifying places", total=len(pieces))
        results = [
            verify_guess(self.matcher, index, piece, guess, accept=self.accept, refine_top=self.refine_top, mask=mask)
            for piece, guess, mask in checks
        ]
        self.stage_seconds["mask"] += masked - start
        self.stage_seconds["learned"] += middle - masked
        self.stage_seconds["verify"] += time.perf_counter() - middle
        return results


def verify_guess(
    matcher: ClassicalMatcher,
    index: PuzzleIndex,
    photo: np.ndarray,
    guess: dict,
    *,
    accept: float,
    refine_top: int,
    mask: np.ndarray | None = None,
) -> dict:
    """One piece through the hybrid's verification: the model's ``guess`` (its ``proposals``, ``cell_px``, ``box``
    and ``rotation``) checked by ``matcher`` on the puzzle ``index``; the classical search runs too when the best
    verified correlation is under ``accept``. ``mask``: the piece's mask in ``photo`` (estimated when None).
    Returns ``{"box", "rotation", "confidence", "fallback", "learned"}``."""
    piece = matcher.prepare(photo, mask)
    # a proposal is a score cell's centre: the true centre lies within about one cell of it
    pad = int(np.ceil(1.5 * guess["cell_px"])) + 3
    checked = matcher.check_places(index, piece, guess["proposals"], pad=pad)
    found = matcher.refine(index, piece, checked[:refine_top])
    fallback = found["confidence"] < accept
    if fallback:
        found = search_whole_puzzle(matcher, index, piece, found, refined=checked[:refine_top], accept=accept)
    return {
        "box": found["box"],
        "rotation": int(found["rotation"]),
        "confidence": float(found["confidence"]),
        "fallback": fallback,
        "learned": {"box": guess["box"], "rotation": guess["rotation"]},
    }


def search_whole_puzzle(
    matcher: ClassicalMatcher,
    index: PuzzleIndex,
    piece: PreparedPiece,
    found: dict,
    *,
    refined: Sequence[Candidate],
    accept: float,
) -> dict:
    """The hybrid's fallback: the classical coarse search over the whole puzzle, its candidates refined best first.
    Unlike the classical matcher's own refinement, a candidate at a place already ``refined`` (same turn, centre
    within one cell of the coarse grid) is skipped, and the refinement stops at the first placement that reaches
    ``accept``; the best of ``found`` and the refined candidates wins (measured: same answers, about one refinement
    fewer per fallback)."""
    done = list(refined)
    for candidate in matcher.coarse_candidates(index, piece):
        if any(same_place(candidate, other, piece.factor) for other in done):
            continue
        done.append(candidate)
        found = max(found, matcher.refine(index, piece, [candidate]), key=lambda r: r["confidence"])
        if found["confidence"] >= accept:
            break
    return found


def same_place(a: Candidate, b: Candidate, tolerance: float) -> bool:
    """Whether two candidates share their turn and their centres lie within ``tolerance`` pixels on both axes."""
    return a.rotation == b.rotation and abs(a.x - b.x) <= tolerance and abs(a.y - b.y) <= tolerance


def predict_files(
    predictor: FilePredictor,
    pieces: Input | Sequence[Input],
    *,
    puzzle: str | Path | None,
    overlay: str | Path | None = None,
    progress: bool = False,
) -> list[dict]:
    """Per piece ``{"piece", "box" [x1, y1, x2, y2] puzzle pixels, "rotation" k, "rotation_deg", "confidence",
    "method"}`` plus ``fallback`` (hybrid) or ``matched_by`` (classical: ``sift`` or ``template``)
    (``{"piece", "error"}`` for a photo that cannot be read); with ``overlay`` the boxes are drawn on
    the puzzle and written there as PNG. The photos are decoded in DataLoader workers, then placed in one call, so
    the puzzle is encoded once for all of them."""
    if puzzle is None:
        raise FinescaleError("give the whole puzzle picture (--puzzle FILE)")
    if not Path(puzzle).is_file():
        raise FinescaleError(f"puzzle picture {puzzle} not found")
    if progress:
        log.info("reading the puzzle picture %s", puzzle)
    image = read_rgb(puzzle)
    items = expand_inputs(pieces)
    loader = DataLoader(
        PreparedInputs(items, to_uint8, image_reader("rgb")),
        batch_size=predictor.batch_size,
        num_workers=predictor.num_workers,
        collate_fn=list,
    )
    decoded = [item for part in loader for item in part]
    for item in decoded:
        if "views" in item and (size := too_large(item["views"], image)):
            item["error"] = (
                f"{input_name(items[item['index']], item['index'])}: the piece ({size[0]}x{size[1]} px) is larger than"
                f" the puzzle picture {puzzle} ({image.shape[1]}x{image.shape[0]} px); a piece photo must show the"
                " piece at the puzzle's scale"
            )
            del item["views"]
    good = [item for item in decoded if "views" in item]
    if progress and good:
        h, w = image.shape[:2]
        log.info("placing %d pieces in %s (%dx%d px, %s)", len(good), puzzle, w, h, predictor.method)
    results = dict(
        zip(
            (it["index"] for it in good),
            predictor.locate(image, [it["views"] for it in good], progress=progress) if good else [],
            strict=True,
        )
    )
    out = []
    for item in decoded:
        name = input_name(items[item["index"]], item["index"])
        if "error" in item:
            out.append({"piece": name, "error": item["error"]})
            continue
        r = results[item["index"]]
        out.append(
            {
                "piece": name,
                "box": [round(float(v), 1) for v in r["box"]],
                "rotation": int(r["rotation"]),
                "rotation_deg": 90 * int(r["rotation"]),
                "confidence": round(float(r["confidence"]), 4),
                "method": predictor.method,
                **({"fallback": bool(r["fallback"])} if "fallback" in r else {}),
                **({"matched_by": r["matched_by"]} if "matched_by" in r else {}),
            }
        )
    if overlay is not None:
        placed = [a for a in out if "error" not in a]
        write_overlay(image, placed, overlay, labels=[Path(a["piece"]).stem for a in placed])
    return out


def too_large(photo: np.ndarray, puzzle: np.ndarray) -> tuple[int, int] | None:
    """The (width, height) of the piece in ``photo`` when it cannot lie in ``puzzle`` (larger at every quarter
    turn), else None. A photo that fits is not looked into; a larger one is judged by its piece's outline (the table
    around the piece may be larger than the puzzle)."""

    def fits(h: int, w: int) -> bool:
        return (h <= height and w <= width) or (w <= height and h <= width)

    height, width = puzzle.shape[:2]
    if fits(*photo.shape[:2]):
        return None
    rows, cols = np.nonzero(piece_mask(as_rgb_uint8(photo)))
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    return None if fits(h, w) else (int(w), int(h))


def shown(items: Iterable[Any], progress: bool, what: str, total: int | None = None) -> Iterable[Any]:
    """``items`` as they are, or behind a progress bar on stderr (stdout carries the answers)."""
    if not progress:
        return items
    return track(items, description=what, total=total, console=stderr_console(), transient=True)


def write_overlay(
    puzzle: np.ndarray,
    predictions: Sequence[dict],
    path: str | Path,
    *,
    truths: Sequence[dict] | None = None,
    labels: Sequence[str] | None = None,
    max_side: int = 2000,
) -> Path:
    """PNG of the puzzle with predicted boxes (red, with the quarter turn) and, if given, true boxes (green);
    pictures larger than ``max_side`` are shrunk first so the file stays small and the boxes stay visible."""
    scale = min(1.0, max_side / max(puzzle.shape[:2]))
    canvas = cv2.resize(puzzle, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else puzzle
    canvas = np.ascontiguousarray(canvas).copy()
    thick = max(2, round(max(canvas.shape[:2]) / 500))
    for i, pred in enumerate(predictions):
        if truths is not None:
            _box(canvas, truths[i]["box"], scale, TRUE_COLOUR, thick)
        x1, y1 = _box(canvas, pred["box"], scale, PRED_COLOUR, thick)
        text = f"{labels[i] if labels else i} r{pred['rotation']}"
        cv2.putText(canvas, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, PRED_COLOUR, thick)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return path


def _box(canvas: np.ndarray, box: Sequence[float], scale: float, colour: tuple, thick: int) -> tuple[int, int]:
    x1, y1, x2, y2 = (round(float(v) * scale) for v in box)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
    return x1, y1


METHODS = ("hybrid", "learned", "classical")


def puzzle_predictor(
    task: Any | None = None,
    *,
    method: str | None = None,
    matcher: str | None = None,
    proposals: int | None = None,
    accept: float | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "auto",
) -> FilePredictor:
    """The puzzle pipeline's ``predictor_class``: the placing method by name, ``hybrid`` (the default with a trained
    ``task``: learned proposals, classical verification, with its ``proposals`` and ``accept`` options),
    ``learned`` (the model alone) or ``classical`` (the default without a task: no training), whose ``matcher`` is
    ``sift`` (SIFT + RANSAC, else templates; the default) or ``template`` (masked template matching only)."""
    method = method or ("hybrid" if task is not None else "classical")
    if method not in METHODS:
        raise FinescaleError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    hybrid = {k: v for k, v in (("proposals", proposals), ("accept", accept)) if v is not None}
    if hybrid and method != "hybrid":
        raise FinescaleError(f"--{' and --'.join(hybrid)} only apply to --method hybrid, not {method}")
    if matcher is not None and method != "classical":
        raise FinescaleError(
            f"--matcher only applies to --method classical, not {method} (the hybrid verifies with templates only)"
        )
    if matcher is not None and matcher not in MATCHERS:
        raise FinescaleError(f"--matcher must be one of {', '.join(MATCHERS)}, got {matcher!r}")
    reading = {"batch_size": batch_size, "num_workers": num_workers}
    if method == "classical":
        return ClassicalPredictor(ClassicalMatcher(method=matcher or MATCHERS[0]), **reading)
    if task is None:
        raise FinescaleError(
            f"--method {method} needs --checkpoint (or use --method classical, which needs no training)"
        )
    if method == "hybrid":
        return HybridPredictor(task, **hybrid, **reading, device=device)
    return PuzzlePredictor(task, **reading, device=device)
