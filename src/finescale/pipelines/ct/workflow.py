"""The ``ct`` verbs as functions: train (pack the store, fit, calibrate on validation), evaluate one checkpoint or an
ensemble with test-time augmentation (VLM3D's scores, robustness and external split, predictions files, plots)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from finescale.data.ct_io import LABELS
from finescale.engine.checkpoints import load_task, resolve_checkpoint
from finescale.engine.run import METRICS, finish_evaluation, fit_and_report, skipped_counts, update_metrics
from finescale.engine.trainer import BEST
from finescale.errors import FinescaleError
from finescale.eval.calibration import fit_f1_threshold, fit_platt, fit_temperature
from finescale.eval.multilabel_plots import plot_reliability, plot_roc_curves
from finescale.eval.prediction_files import write_predictions_csv, write_predictions_json
from finescale.eval.report import Figure
from finescale.pipelines import prefix_metrics
from finescale.pipelines.ct.config import CTConfig
from finescale.pipelines.ct.data import CTDataModule, CTVolumes, ensure_store, load_records
from finescale.pipelines.ct.inference import ensemble_probabilities
from finescale.pipelines.ct.mixing import BatchMixing
from finescale.pipelines.ct.progressive import ProgressiveResizing
from finescale.pipelines.ct.task import CTTask, ct_scores, renamed_scores

log = logging.getLogger("finescale")
TITLE = "finescale ct: 18 chest-CT abnormalities per volume"


def train(cfg: CTConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Pack the train and val volumes into the store (once), train, then fit the per-label calibration on the
    validation split into best.ckpt."""
    store = ensure_store(cfg, [cfg.train_json, cfg.val_json], workers=max(1, cfg.trainer.num_workers))
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"store": store.path})})
    extra: list[Callback] = [ProgressiveResizing(cfg.data.progressive_sizes)] if cfg.data.progressive_sizes else []
    if cfg.data.mix != "none":
        extra.append(BatchMixing(cfg.data.mix, cfg.data.mix_alpha, cfg.trainer.seed))
    summary = fit_and_report(
        cfg,
        Path(run_dir),
        build_task=lambda load_weights=True: CTTask(cfg.model_dump(mode="json"), load_weights=load_weights),
        datamodule=CTDataModule(cfg, store),
        title=TITLE,
        resume=resume,
        callbacks=[*extra, *callbacks],
    )
    if cfg.model.calibration != "none" and rank_zero_only.rank == 0 and (Path(run_dir) / BEST).exists():
        fitted = calibrate(Path(run_dir) / BEST)
        update_metrics(Path(run_dir) / METRICS, fitted)
        summary.update(fitted)
    return summary


def collect_logits(task: Any, dataset: CTVolumes, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Uncalibrated logits (N, 18) and labels (N, 18) of a dataset, in order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=task.cfg.trainer.batch_size)
    model = task.model.eval().to(device)
    logits, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits.append(model.predict(batch)["logits"].cpu())
            labels.append(batch["labels"].cpu())
    return torch.cat(logits), torch.cat(labels)


def calibrate(checkpoint: Path, kind: str | None = None, out: Path | None = None) -> dict[str, float]:
    """Fit the per-label calibration (``kind``: temperature, Platt or F1 threshold; default the config's) on the
    validation split
    and write it into the checkpoint's ``model.calibration`` buffer and config, at ``out`` (default: in place).
    Returns the validation BCE before and after."""
    task = load_task(checkpoint, pipeline="ct")
    cfg = task.cfg
    kind = kind or cfg.model.calibration
    if kind not in ("temperature", "platt", "threshold"):
        raise FinescaleError(f"calibration must be temperature, platt or threshold, got {kind!r}")
    data = load_records(cfg.val_json)
    store = ensure_store(cfg, [cfg.val_json])
    logits, labels = collect_logits(task, CTVolumes(data.records, store, cfg, train=False))
    if kind == "platt":
        scale, bias = (torch.as_tensor(v, dtype=torch.float32) for v in np.asarray(fit_platt(logits, labels)).T)
    elif kind == "threshold":
        bias = -torch.as_tensor(fit_f1_threshold(logits, labels), dtype=torch.float32)
        scale = torch.ones_like(bias)
    else:
        scale = 1.0 / torch.as_tensor(fit_temperature(logits, labels), dtype=torch.float32)
        bias = torch.zeros_like(scale)
    before = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    after = torch.nn.functional.binary_cross_entropy_with_logits(logits * scale + bias, labels).item()
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["model.calibration"] = torch.stack([scale, bias])
    ckpt["hyper_parameters"]["config"]["model"]["calibration"] = kind  # the config says what the buffer holds
    out = Path(out) if out is not None else Path(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)  # atomic: a crash leaves the old checkpoint, never half a file
    log.info("calibration (%s) on %s: validation BCE %.4f -> %.4f", kind, cfg.val_json, before, after)
    # run bookkeeping of the best checkpoint (best_*), not an evaluation: it stays beside the training summary
    return {"best_val_ct_bce_uncalibrated": before, "best_val_ct_bce_calibrated": after}


def evaluate(
    checkpoint: str | Path | Sequence[str | Path],
    manifest: str | Path,
    out: str | Path | None = None,
    *,
    ensemble: str = "mean",
    tta: int = 1,
    external_json: str | Path | None = None,
    robustness: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """VLM3D's scores of one checkpoint or an ensemble (several checkpoints, combined by ``ensemble``: mean,
    adaptive or bayesian) with ``tta`` test-time views on ``manifest``; with ``robustness`` also on a corrupted copy
    (``ct_corrupted_*``), with ``external_json`` also on that split (``ct_external_*``). Metrics merged into ``out``
    (default: the first checkpoint's run metrics.json); predictions CSV/JSON, ROC and calibration plots and the
    report beside it."""
    paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    if not paths:
        raise FinescaleError("give at least one --checkpoint")
    first = resolve_checkpoint(paths[0])
    out = Path(out) if out else first.parent / METRICS
    tasks = [load_task(p, pipeline="ct") for p in paths]
    grids = {(tuple(t.cfg.data.spacing), tuple(t.cfg.data.shape)) for t in tasks}
    if len(grids) > 1:
        raise FinescaleError("ensemble members must share data.spacing and data.shape (one store serves them all)")
    data = load_records(manifest)
    store = ensure_store(tasks[0].cfg, [Path(manifest)])
    options = {"ensemble": ensemble, "tta": tta, "device": device}
    probs, uncertainty = ensemble_probabilities(tasks, data.records, store, **options)
    labels = np.array([r["labels"] for r in data.records], dtype=np.float32)
    metrics = {**ct_scores(probs, labels), "ct_members": len(tasks), "ct_tta": tta}
    if robustness:
        corrupted, _ = ensemble_probabilities(tasks, data.records, store, corrupt=True, **options)
        metrics.update(renamed_scores(ct_scores(corrupted, labels), "ct_corrupted_"))
    if external_json is not None:
        external = load_records(external_json)
        ext_store = ensure_store(tasks[0].cfg, [Path(external_json)])
        ext_probs, _ = ensemble_probabilities(tasks, external.records, ext_store, **options)
        ext_labels = np.array([r["labels"] for r in external.records], dtype=np.float32)
        metrics.update(renamed_scores(ct_scores(ext_probs, ext_labels), "ct_external_"))
    metrics.update(prefix_metrics("ct", skipped_counts("eval", data)))
    figures = write_outputs(out.parent, Path(manifest).stem, data.records, probs, uncertainty, labels)
    return finish_evaluation(out, manifest, metrics, run_dir=first.parent, title=TITLE, figures=figures)


def write_outputs(
    folder: Path, stem: str, records: Sequence[dict], probs: np.ndarray, uncertainty: np.ndarray, labels: np.ndarray
) -> list[Figure]:
    """Predictions as CT-RATE-shaped CSV and JSON, ROC curves and the reliability diagram; the report's figures."""
    names = [r["name"] for r in records]
    write_predictions_csv(folder / f"predictions_{stem}.csv", names, probs, LABELS)
    write_predictions_json(folder / f"predictions_{stem}.json", names, probs, LABELS, uncertainty=uncertainty)
    plots = folder / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    roc = plot_roc_curves(probs, labels, LABELS, plots / "ct_roc.png")
    reliability = plot_reliability(probs, labels, plots / "ct_calibration.png")
    return [
        Figure("ROC curves", roc, "One panel per label; the AUROC in each title. VLM3D averages over the 18."),
        Figure("Calibration", reliability, "Predicted probability against the observed rate; 0.5 is the threshold."),
    ]
