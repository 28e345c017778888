"""The ``length`` verbs as functions: train a run, evaluate a checkpoint (metrics, plots, report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from rich.progress import track
from torch.utils.data import DataLoader

from finescale.console import stderr_console
from finescale.engine.checkpoints import load_task, resolve_checkpoint
from finescale.engine.predictor import move_to, resolve_device
from finescale.engine.run import METRICS, finish_evaluation, fit_and_report, skipped_counts
from finescale.eval import plots
from finescale.eval.report import Figure
from finescale.pipelines import prefix_metrics
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.data import LengthDataModule, LengthDataset, load_records
from finescale.pipelines.length.task import LengthTask, length_scores, scored_values

TITLE = "finescale length: implant length from a radiograph"


def train(
    cfg: LengthConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    return fit_and_report(
        cfg,
        run_dir,
        build_task=lambda load_weights=True: LengthTask(cfg.model_dump(mode="json"), load_weights=load_weights),
        datamodule=LengthDataModule(cfg),
        title=TITLE,
        resume=resume,
        callbacks=callbacks,
    )


def evaluate(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path | None = None,
    *,
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``manifest`` (``length/metrics.py``), recorded in ``out`` (default: the run's
    metrics.json, under ``eval`` -> the manifest; see ``engine.run.save_evaluation``), with plots and the report
    beside it; returns this evaluation's metrics. The model runs on ``device`` (``auto``: CUDA when present)."""
    ckpt = resolve_checkpoint(checkpoint)
    out = Path(out) if out else ckpt.parent / METRICS
    task = load_task(ckpt, pipeline="length")
    device_ = resolve_device(device)
    model = task.model.to(device_)
    data = load_records(manifest)
    dataset = LengthDataset(data.records, task.cfg.model, augment=False, cache=False)
    loader = DataLoader(dataset, batch_size=task.cfg.trainer.batch_size, num_workers=task.cfg.trainer.num_workers)
    scores = length_scores().to(device_)
    with torch.inference_mode():
        for batch in track(loader, description="evaluating", console=stderr_console(), transient=True):
            batch = move_to(batch, device_)
            scores.update(**scored_values(model, batch, model.predict(batch)))
    metrics = {**scores.compute(), **prefix_metrics("length", skipped_counts("eval", data))}
    arrays = {k: v.cpu().numpy() for k, v in scores.collected().items()}
    figures = evaluation_figures(arrays, model.centers.tolist(), out.parent / "plots")
    return finish_evaluation(out, manifest, metrics, run_dir=ckpt.parent, title=TITLE, figures=figures)


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
