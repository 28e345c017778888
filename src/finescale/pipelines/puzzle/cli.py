"""``finescale puzzle train|eval|predict``. ``eval`` and ``predict`` place pieces by ``--method classical`` (the
training-free matcher: the default without a checkpoint; ``--matcher template|sift`` picks templates only (the
default) or SIFT first), ``hybrid`` (the default with a ``--checkpoint``: the trained model proposes, the classical
matcher verifies and falls back to its own search) or ``learned`` (the model alone); ``predict`` takes one
``--puzzle`` picture and any number of piece photos or folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finescale.cli_pipeline import pipeline_app
from finescale.pipelines.puzzle.config import PuzzleConfig

SUMMARY = "Find a photographed jigsaw piece in the whole puzzle picture, with its rotation (FPN correlation)."

METHOD = {
    "method": Annotated[
        str | None,
        typer.Option(
            "--method",
            help="classical (SIFT / template matching, no training; the default without --checkpoint), hybrid"
            " (learned proposals verified by template matching; the default with --checkpoint) or learned (the model"
            " alone)",
        ),
    ],
    "matcher": Annotated[
        str | None,
        typer.Option(
            "--matcher",
            help="classical: template (masked template matching only; the default, as accurate and faster in the"
            " bench) or sift (SIFT + RANSAC, templates where too few matches agree)",
        ),
    ],
    "proposals": Annotated[
        int | None,
        typer.Option("--proposals", min=1, help="hybrid: places per piece the model proposes for verification [8]"),
    ],
    "accept": Annotated[
        float | None,
        typer.Option(
            "--accept",
            min=-1.0,
            max=1.0,
            help="hybrid: verified correlation under which the classical search runs too (1 = always, -1 = never)"
            " [0.96, chosen on validation data]",
        ),
    ],
}

app = pipeline_app(
    "puzzle",
    PuzzleConfig,
    SUMMARY,
    checkpoint_required=False,
    inputs_help="piece photos or folders of them",
    eval_options=METHOD,
    predictor_options=METHOD,
    predict_options={
        "puzzle": Annotated[Path | None, typer.Option("--puzzle", help="the whole puzzle picture (required)")],
        "overlay": Annotated[
            Path | None, typer.Option("--overlay", help="PNG of the boxes drawn on the puzzle (default: none)")
        ],
    },
)
