"""The ``puzzle`` verbs as functions: train the locator; evaluate it (or the classical matcher) on whole puzzles,
with metrics, overlays, correlation maps and the report."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from rich.progress import track

from finescale.console import stderr_console
from finescale.engine.checkpoints import load_task, resolve_checkpoint
from finescale.engine.run import METRICS, finish_evaluation, fit_and_report, skipped_counts
from finescale.errors import FinescaleError
from finescale.eval.report import Figure
from finescale.pipelines import prefix_metrics
from finescale.pipelines.puzzle.classical import ClassicalMatcher
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.pipelines.puzzle.data import PuzzleDataModule, load_records
from finescale.pipelines.puzzle.metrics import score_placements
from finescale.pipelines.puzzle.plots import plot_correlation_maps
from finescale.pipelines.puzzle.predict import (
    ClassicalPredictor,
    HybridPredictor,
    PuzzlePredictor,
    puzzle_predictor,
    read_rgb,
    write_overlay,
)
from finescale.pipelines.puzzle.task import PuzzleTask

TITLE = "finescale puzzle: where a photographed piece sits in the puzzle, and its rotation"
OVERLAYS = 3  # puzzles drawn with predicted and true boxes in the report


def train(
    cfg: PuzzleConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    return fit_and_report(
        cfg,
        run_dir,
        build_task=lambda load_weights=True: PuzzleTask(cfg.model_dump(mode="json"), load_weights=load_weights),
        datamodule=PuzzleDataModule(cfg),
        title=TITLE,
        resume=resume,
        callbacks=callbacks,
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


Predictor = PuzzlePredictor | ClassicalPredictor | HybridPredictor


def place_records(predictor: Predictor, records: Sequence[dict]) -> dict[str, Any]:
    """Run ``predictor`` puzzle by puzzle (each puzzle decoded and encoded once for all its pieces); returns the
    predictions in record order and the seconds spent locating (image decoding excluded)."""
    by_puzzle: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_puzzle.setdefault(record["puzzle"], []).append(i)
    predictions: list[dict | None] = [None] * len(records)
    seconds = 0.0
    bar = track(
        by_puzzle.items(),
        description=f"placing pieces ({predictor.method})",
        console=stderr_console(),  # stdout carries the JSON the CLI prints
        transient=True,
    )
    for puzzle, indices in bar:
        image = read_rgb(puzzle)
        pieces = [read_rgb(records[i]["piece"]) for i in indices]
        start = time.perf_counter()
        found = predictor.locate(image, pieces)
        seconds += time.perf_counter() - start
        for i, result in zip(indices, found, strict=True):
            predictions[i] = result
    stages = dict(getattr(predictor, "stage_seconds", {}))
    return {"predictions": predictions, "seconds": seconds, "puzzles": list(by_puzzle), "stage_seconds": stages}


def overlay_figures(records: Sequence[dict], placed: dict[str, Any], plot_dir: Path, method: str) -> list[Figure]:
    figures = []
    for puzzle in placed["puzzles"][:OVERLAYS]:
        chosen = [i for i, r in enumerate(records) if r["puzzle"] == puzzle]
        path = write_overlay(
            read_rgb(puzzle),
            [placed["predictions"][i] for i in chosen],
            plot_dir / f"overlay_{method}_{Path(puzzle).stem}.png",
            truths=[records[i] for i in chosen],
            labels=[Path(records[i]["piece"]).stem.rsplit("_", 1)[-1] for i in chosen],
        )
        figures.append(
            Figure(f"{Path(puzzle).name} ({method})", path, "Red: predicted box and quarter turn; green: true.")
        )
    return figures


def evaluate(
    checkpoint: str | Path | None,
    manifest: str | Path,
    out: str | Path | None = None,
    *,
    method: str | None = None,
    matcher: str | None = None,
    proposals: int | None = None,
    accept: float | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Place every piece of ``manifest`` in its whole puzzle by ``method`` (:func:`puzzle_predictor`: hybrid with a
    checkpoint, classical without; ``classical`` needs no checkpoint but an ``out``, and its ``matcher`` is ``sift``
    or ``template``); metrics (``metrics.py``)
    recorded in ``out`` (default: the run's metrics.json, under ``eval`` -> the manifest), with overlays,
    correlation maps and the report beside it."""
    task = load_task(checkpoint, pipeline="puzzle") if checkpoint is not None else None
    predictor = puzzle_predictor(
        task, method=method, matcher=matcher, proposals=proposals, accept=accept, device=device
    )
    if checkpoint is None and out is None:
        raise FinescaleError(
            "the classical matcher (the default without --checkpoint) has no run directory: give --out FILE.json"
        )
    run_dir = resolve_checkpoint(checkpoint).parent if checkpoint is not None else None
    out = Path(out) if out else run_dir / METRICS
    data = load_records(manifest)
    placed = place_records(predictor, data.records)
    metrics = score_placements(data.records, placed)
    metrics["puzzle_peak_rss_mb"] = round(peak_rss_mb(), 1)
    metrics.update(prefix_metrics("puzzle", skipped_counts("eval", data)))
    plot_dir = out.parent / "plots"
    figures = overlay_figures(data.records, placed, plot_dir, predictor.method)
    if isinstance(predictor, PuzzlePredictor | HybridPredictor):
        path = plot_correlation_maps(predictor, data.records, plot_dir / "correlation_maps.png")
        figures.append(Figure("Correlation maps", path, "Piece, its window of the puzzle, the position probability."))
    return finish_evaluation(out, manifest, metrics, run_dir=run_dir, title=TITLE, figures=figures)


def example_inputs(manifest: str | Path, n: int = 3) -> tuple[list[Path], dict[str, Any]]:
    """What ``predict`` takes for the manifest's first puzzle: up to ``n`` of its piece photos and the puzzle."""
    records = json.loads(Path(manifest).read_text())
    first = [r for r in records if r["puzzle"] == records[0]["puzzle"]][:n]
    root = Path(manifest).parent
    return [root / r["piece"] for r in first], {"puzzle": root / first[0]["puzzle"]}


def classical_baseline(train_json: str | Path, test_json: str | Path, cfg: Any = None) -> dict[str, dict[str, Any]]:
    """The bench's training-free rows on the test manifest (the training set is unused): the classical matcher as
    is (SIFT, else templates) and with templates only (the hybrid's fallback and verifier). Training-free, so
    the bench's ``cfg`` does not change it."""
    data = load_records(test_json)
    rows = {}
    for name, matcher in (
        ("classical", ClassicalMatcher(method="sift")),
        ("classical-template", ClassicalMatcher(method="template")),
    ):
        rows[name] = score_placements(data.records, place_records(ClassicalPredictor(matcher), data.records))
    return rows
