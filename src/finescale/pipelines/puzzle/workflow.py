"""The ``puzzle`` verbs as functions: train the locator; evaluate it (or the classical matcher) on whole puzzles,
with metrics, overlays, correlation maps and the report."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.progress import track

from finescale.engine.checkpoints import load_task, resolve_checkpoint
from finescale.engine.run import METRICS, fit_and_report, update_metrics
from finescale.eval.report import Figure, Section, write_report
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.pipelines.puzzle.data import PuzzleDataModule, load_records
from finescale.pipelines.puzzle.metrics import placement_metrics
from finescale.pipelines.puzzle.plots import plot_correlation_maps
from finescale.pipelines.puzzle.predict import ClassicalPredictor, PuzzlePredictor, read_rgb, write_overlay
from finescale.pipelines.puzzle.task import PuzzleTask

TITLE = "finescale puzzle: where a photographed piece sits in the puzzle, and its rotation"
OVERLAYS = 3  # puzzles drawn with predicted and true boxes in the report


def train(
    cfg: PuzzleConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    return fit_and_report(
        cfg,
        run_dir,
        build_task=lambda: PuzzleTask(cfg.model_dump(mode="json")),
        datamodule=PuzzleDataModule(cfg),
        title=TITLE,
        resume=resume,
        callbacks=callbacks,
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def place_records(predictor: PuzzlePredictor | ClassicalPredictor, records: Sequence[dict]) -> dict[str, Any]:
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
        console=Console(stderr=True),  # stdout carries the JSON the CLI prints
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
    return {"predictions": predictions, "seconds": seconds, "puzzles": list(by_puzzle)}


def score_placements(records: Sequence[dict], placed: dict[str, Any]) -> dict[str, Any]:
    predictions = placed["predictions"]
    metrics = placement_metrics(
        [p["box"] for p in predictions],
        [r["box"] for r in records],
        [p["rotation"] for p in predictions],
        [r["rotation"] for r in records],
    )
    metrics["puzzle_ms_per_piece"] = 1000 * placed["seconds"] / max(1, len(records))
    metrics["n"] = len(records)
    metrics["n_puzzles"] = len(placed["puzzles"])
    return metrics


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
    method: str = "learned",
) -> dict[str, Any]:
    """Place every piece of ``manifest`` in its whole puzzle with the checkpoint's model (or, ``method=classical``,
    the training-free matcher, which needs no checkpoint); metrics merged into ``out`` (default: the run's
    metrics.json), with overlays, correlation maps and the report beside it."""
    if method == "classical":
        predictor: PuzzlePredictor | ClassicalPredictor = ClassicalPredictor()
        if out is None:
            raise ValueError("the classical matcher has no run directory: give --out")
        out = Path(out)
    else:
        ckpt = resolve_checkpoint(checkpoint)
        out = Path(out) if out else ckpt.parent / METRICS
        predictor = PuzzlePredictor(load_task(ckpt))
    data = load_records(manifest)
    placed = place_records(predictor, data.records)
    metrics = score_placements(data.records, placed)
    metrics["puzzle_peak_rss_mb"] = round(peak_rss_mb(), 1)
    metrics.update({f"eval_skipped_{k}": v for k, v in data.skipped.items()})
    merged = update_metrics(out, metrics)
    plot_dir = out.parent / "plots"
    figures = overlay_figures(data.records, placed, plot_dir, predictor.method)
    if isinstance(predictor, PuzzlePredictor):
        path = plot_correlation_maps(predictor, data.records, plot_dir / "correlation_maps.png")
        figures.append(Figure("Correlation maps", path, "Piece, its window of the puzzle, the position probability."))
    write_report(out.parent, title=TITLE, sections=[Section("Evaluation on " + Path(manifest).name, figures)])
    return merged if out.name == METRICS else metrics


def classical_baseline(train_json: str | Path, test_json: str | Path) -> dict[str, dict[str, Any]]:
    """The bench's training-free row: the classical matcher on the test manifest (the training set is unused)."""
    data = load_records(test_json)
    placed = place_records(ClassicalPredictor(), data.records)
    return {"classical": score_placements(data.records, placed)}
