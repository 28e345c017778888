"""Placing pieces in whole puzzles, by the trained model or by the classical matcher, behind one interface:
``locate(puzzle_rgb, piece_photos) -> [{"box", "rotation", "confidence"}]`` with boxes in puzzle pixels.

:class:`PuzzlePredictor` is what ``finescale.load(run)`` returns for a puzzle run; ``predict(puzzle, pieces)`` gives
the dicts the CLI prints, one per piece, and can write an overlay PNG of the boxes on the puzzle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from finescale.data.images import read_image, to_uint8
from finescale.pipelines.puzzle.classical import ClassicalMatcher
from finescale.pipelines.puzzle.search import locate

PRED_COLOUR, TRUE_COLOUR = (255, 40, 40), (40, 220, 40)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3): the one format both methods take."""
    return to_uint8(read_image(path, "rgb"))


class PuzzlePredictor:
    """The trained locator: the puzzle is encoded once per call, then every piece is scored against it."""

    method = "learned"

    def __init__(self, task: Any) -> None:
        self.cfg = task.cfg
        self.model = task.model.eval()

    def locate(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray]) -> list[dict]:
        with torch.inference_mode():
            return locate(self.model, puzzle, list(pieces), self.cfg)

    def predict(
        self, puzzle: str | Path, pieces: Sequence[str | Path], *, overlay: str | Path | None = None
    ) -> list[dict]:
        return predict_files(self, puzzle, pieces, overlay=overlay)


class ClassicalPredictor:
    """The training-free matcher (SIFT + RANSAC, else masked template matching) behind the same interface."""

    method = "classical"

    def __init__(self, matcher: ClassicalMatcher | None = None) -> None:
        self.matcher = matcher or ClassicalMatcher()

    def locate(self, puzzle: np.ndarray, pieces: Sequence[np.ndarray]) -> list[dict]:
        return [
            {"box": r["box"], "rotation": int(r["rotation"]), "confidence": float(r["confidence"])}
            for r in self.matcher.match_many(puzzle, list(pieces))
        ]

    def predict(
        self, puzzle: str | Path, pieces: Sequence[str | Path], *, overlay: str | Path | None = None
    ) -> list[dict]:
        return predict_files(self, puzzle, pieces, overlay=overlay)


def predict_files(
    predictor: PuzzlePredictor | ClassicalPredictor,
    puzzle: str | Path,
    pieces: Sequence[str | Path],
    *,
    overlay: str | Path | None = None,
) -> list[dict]:
    """Per piece ``{"piece", "box" [x1, y1, x2, y2] puzzle pixels, "rotation" k, "rotation_deg", "confidence",
    "method"}``; with ``overlay`` the boxes are drawn on the puzzle and written there as PNG."""
    image = read_rgb(puzzle)
    results = predictor.locate(image, [read_rgb(p) for p in pieces])
    out = [
        {
            "piece": str(path),
            "box": [round(float(v), 1) for v in r["box"]],
            "rotation": int(r["rotation"]),
            "rotation_deg": 90 * int(r["rotation"]),
            "confidence": round(float(r["confidence"]), 4),
            "method": predictor.method,
        }
        for path, r in zip(pieces, results, strict=True)
    ]
    if overlay is not None:
        write_overlay(image, out, overlay, labels=[Path(p).stem for p in pieces])
    return out


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
