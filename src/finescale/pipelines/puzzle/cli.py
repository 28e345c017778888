"""``finescale puzzle train|eval|predict``. ``eval`` and ``predict`` place pieces by ``--method classical`` (the
training-free matcher: the default without a checkpoint, and the measured winner), ``hybrid`` (the default with a
``--checkpoint``: the trained model proposes, the classical matcher verifies and falls back to its own search) or
``learned`` (the model alone); ``predict`` takes one puzzle and any number of pieces."""

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

app = pipeline_app("puzzle", PuzzleConfig, SUMMARY, verbs=("train",))

Method = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="classical (SIFT / template matching, no training; the default without --checkpoint), hybrid (learned"
        " proposals verified by template matching; the default with --checkpoint) or learned (the model alone)",
    ),
]
OptionalCheckpoint = Annotated[
    Path | None, typer.Option("--checkpoint", help="checkpoint file or run directory (methods hybrid, learned)")
]
Proposals = Annotated[
    int | None,
    typer.Option("--proposals", min=1, help="hybrid: places per piece the model proposes for verification [8]"),
]
Accept = Annotated[
    float | None,
    typer.Option(
        "--accept",
        min=-1.0,
        max=1.0,
        help="hybrid: verified correlation under which the classical search runs too (1 = always, -1 = never)"
        " [0.96, chosen on validation data]",
    ),
]


def _hybrid_options(method: str, proposals: int | None, accept: float | None) -> dict:
    """The hybrid's options that were given (the rest keep HybridPredictor's defaults); refused for other methods."""
    given = {k: v for k, v in (("proposals", proposals), ("accept", accept)) if v is not None}
    if given and method != "hybrid":
        raise FinescaleError(f"--{' and --'.join(given)} only apply to --method hybrid, not {method}")
    return given


def _resolve(method: str | None, checkpoint: Path | None) -> str:
    """The method to run: as given, else hybrid with a checkpoint and classical without; refused if it needs a
    checkpoint that is missing."""
    from finescale.pipelines.puzzle.workflow import METHODS

    if method is None:
        return "hybrid" if checkpoint is not None else "classical"
    if method not in METHODS:
        raise FinescaleError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "classical" and checkpoint is None:
        raise FinescaleError(
            f"--method {method} needs --checkpoint (or use --method classical, which needs no training)"
        )
    return method


@app.command("eval")
def evaluate(
    json_path: Annotated[Path, typer.Option("--json", help="manifest to evaluate on")],
    checkpoint: OptionalCheckpoint = None,
    out: Annotated[Path | None, typer.Option("--out", help="metrics file (default: RUN/metrics.json)")] = None,
    method: Method = None,
    proposals: Proposals = None,
    accept: Accept = None,
) -> None:
    """Place every piece of the manifest in its whole puzzle; metrics, overlays and the report."""
    method = _resolve(method, checkpoint)
    if method == "classical" and out is None:
        raise FinescaleError(
            "the classical matcher (the default without --checkpoint) has no run directory: give --out FILE.json"
        )
    from finescale.pipelines.puzzle.workflow import evaluate as run

    hybrid = _hybrid_options(method, proposals, accept)
    typer.echo(json.dumps(to_jsonable(run(checkpoint, json_path, out, method=method, hybrid=hybrid))))


@app.command("predict")
def predict(
    puzzle: Annotated[Path, typer.Option("--puzzle", help="the whole puzzle picture")],
    piece: Annotated[list[Path], typer.Option("--piece", help="piece photo(s) or folder(s); repeat the flag")],
    checkpoint: OptionalCheckpoint = None,
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="PNG of the boxes on the puzzle (default: <puzzle>_overlay.png)")
    ] = None,
    method: Method = None,
    proposals: Proposals = None,
    accept: Accept = None,
) -> None:
    """One JSON line per piece: box in puzzle pixels, rotation (quarter turns), confidence; writes the overlay."""
    method = _resolve(method, checkpoint)
    from finescale.pipelines.puzzle.workflow import make_predictor

    if not puzzle.exists():
        raise FinescaleError(f"puzzle picture {puzzle} not found")
    predictor = make_predictor(method, checkpoint, **_hybrid_options(method, proposals, accept))
    overlay = overlay or puzzle.with_name(f"{puzzle.stem}_overlay.png")
    for line in predictor.predict(puzzle, expand_inputs(piece), overlay=overlay):
        typer.echo(json.dumps(to_jsonable(line)))
    typer.echo(f"overlay written to {overlay}", err=True)
