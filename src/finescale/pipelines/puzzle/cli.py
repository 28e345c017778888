"""``finescale puzzle train|eval|predict``. ``eval`` and ``predict`` take ``--method classical`` for the
training-free matcher (no checkpoint needed); ``predict`` takes one puzzle and any number of pieces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finescale.cli_pipeline import expand_inputs, pipeline_app
from finescale.errors import FinescaleError
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.serialize import to_jsonable

SUMMARY = "Find a photographed jigsaw piece in the whole puzzle picture, with its rotation (FPN correlation)."
METHODS = ("learned", "classical")

app = pipeline_app("puzzle", PuzzleConfig, SUMMARY, verbs=("train",))

Method = Annotated[
    str, typer.Option("--method", help="learned (a trained --checkpoint) or classical (SIFT / template matching)")
]
OptionalCheckpoint = Annotated[
    Path | None, typer.Option("--checkpoint", help="checkpoint file or run directory (method learned)")
]


def _check(method: str, checkpoint: Path | None) -> None:
    if method not in METHODS:
        raise FinescaleError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "learned" and checkpoint is None:
        raise FinescaleError("give --checkpoint (or --method classical, which needs no training)")


@app.command("eval")
def evaluate(
    json_path: Annotated[Path, typer.Option("--json", help="manifest to evaluate on")],
    checkpoint: OptionalCheckpoint = None,
    out: Annotated[Path | None, typer.Option("--out", help="metrics file (default: RUN/metrics.json)")] = None,
    method: Method = "learned",
) -> None:
    """Place every piece of the manifest in its whole puzzle; metrics, overlays and the report."""
    _check(method, checkpoint)
    if method == "classical" and out is None:
        raise FinescaleError("--method classical has no run directory: give --out FILE.json")
    from finescale.pipelines.puzzle.workflow import evaluate as run

    typer.echo(json.dumps(to_jsonable(run(checkpoint, json_path, out, method=method))))


@app.command("predict")
def predict(
    puzzle: Annotated[Path, typer.Option("--puzzle", help="the whole puzzle picture")],
    piece: Annotated[list[Path], typer.Option("--piece", help="piece photo(s) or folder(s); repeat the flag")],
    checkpoint: OptionalCheckpoint = None,
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="PNG of the boxes on the puzzle (default: <puzzle>_overlay.png)")
    ] = None,
    method: Method = "learned",
) -> None:
    """One JSON line per piece: box in puzzle pixels, rotation (quarter turns), confidence; writes the overlay."""
    _check(method, checkpoint)
    from finescale.engine.checkpoints import load_predictor
    from finescale.pipelines.puzzle.predict import ClassicalPredictor

    if not puzzle.exists():
        raise FinescaleError(f"puzzle picture {puzzle} not found")
    predictor = ClassicalPredictor() if method == "classical" else load_predictor(checkpoint)
    overlay = overlay or puzzle.with_name(f"{puzzle.stem}_overlay.png")
    for line in predictor.predict(puzzle, expand_inputs(piece), overlay=overlay):
        typer.echo(json.dumps(to_jsonable(line)))
    typer.echo(f"overlay written to {overlay}", err=True)
