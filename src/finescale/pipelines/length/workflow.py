"""The ``length`` verbs as functions: train a run, evaluate a checkpoint (metrics, plots, report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback

from finescale.engine.checkpoints import load_task, resolve_checkpoint
from finescale.engine.run import METRICS, fit_and_report, update_metrics
from finescale.eval import plots
from finescale.eval.report import Figure, Section, write_report
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.data import LengthDataModule
from finescale.pipelines.length.predict import LengthPredictor, evaluate_records
from finescale.pipelines.length.task import LengthTask

TITLE = "finescale length: implant length from a radiograph"


def train(
    cfg: LengthConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    return fit_and_report(
        cfg,
        run_dir,
        build_task=lambda: LengthTask(cfg.model_dump(mode="json")),
        datamodule=LengthDataModule(cfg),
        title=TITLE,
        resume=resume,
        callbacks=callbacks,
    )


def evaluate(checkpoint: str | Path, manifest: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``manifest``, merged into ``out`` (default: the run's metrics.json), with plots
    and the report beside it."""
    ckpt = resolve_checkpoint(checkpoint)
    out = Path(out) if out else ckpt.parent / METRICS
    predictor = LengthPredictor(load_task(ckpt))
    metrics, arrays = evaluate_records(predictor, manifest)
    merged = update_metrics(out, metrics)
    figures = evaluation_figures(arrays, predictor.centers, out.parent / "plots")
    write_report(out.parent, title=TITLE, sections=[Section("Evaluation on " + Path(manifest).name, figures)])
    return merged if out.name == METRICS else metrics


def evaluation_figures(arrays: dict[str, np.ndarray], centers: list[float], plot_dir: Path) -> list[Figure]:
    plot_dir.mkdir(parents=True, exist_ok=True)
    true, fine = arrays["true_mm"], arrays["fine_mm"]
    size = len(centers)
    confusion = np.zeros((size, size), dtype=np.int64)
    np.add.at(confusion, (arrays["true_bin"], arrays["bin_index"]), 1)
    labels = [f"{c:g}" for c in centers]
    return [
        Figure(
            "Predicted vs true length",
            plots.plot_pred_vs_true(true, fine, plot_dir / "length_pred_vs_true.png", title="Fine length"),
            "Each dot is one test image; the diagonal is a perfect prediction.",
        ),
        Figure(
            "Error distribution",
            plots.plot_error_histogram(fine - true, plot_dir / "length_error_hist.png", title="Fine length error"),
        ),
        Figure(
            "Length-bin confusion",
            plots.plot_confusion_matrix(confusion, labels, plot_dir / "length_confusion.png", title="Bins (mm)"),
            "Rows: true bin, columns: predicted bin. Mass next to the diagonal is a one-bin (0.5 mm) miss.",
        ),
    ]
