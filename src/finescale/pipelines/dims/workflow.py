"""The ``dims`` verbs as functions: train a classifier, train the regressor (training the two classifiers first when
no checkpoints are given), evaluate a checkpoint of either kind (metrics, plots, report)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from rich.progress import track
from torch.utils.data import DataLoader

from finescale.console import stderr_console
from finescale.engine.checkpoints import checkpoint_config, load_task, read_checkpoint, resolve_checkpoint
from finescale.engine.predictor import move_to, resolve_device
from finescale.engine.run import METRICS, check_run_dir, finish_evaluation, fit_and_report, skipped_counts
from finescale.engine.rundir import wrong_pipeline
from finescale.engine.trainer import BEST, LAST
from finescale.engine.unfreeze import ProgressiveUnfreezing
from finescale.errors import FinescaleError
from finescale.eval import plots
from finescale.eval.report import Figure
from finescale.pipelines import prefix_metrics
from finescale.pipelines.dims.catalogue import read_catalogue
from finescale.pipelines.dims.config import TARGETS, DimsConfig
from finescale.pipelines.dims.data import DimsDataModule, combination, load_records, make_dataset, read_vocabularies
from finescale.pipelines.dims.metrics import (
    classify_metrics,
    per_image_classes,
    per_image_results,
    regression_metrics,
)
from finescale.pipelines.dims.predict import DimsPredictor
from finescale.pipelines.dims.task import DimsClassifierTask, DimsRegressionTask
from finescale.serialize import write_json

log = logging.getLogger("finescale")
TITLE = "finescale dims: implant length and diameter via company and model embeddings"
EMBEDDERS = ("model.company_embedder", "model.model_embedder")


def _updated(cfg: DimsConfig, **changes: Any) -> DimsConfig:
    """A re-validated copy with top-level or nested (``data__companies``) fields changed."""
    data = cfg.model_dump(mode="json")
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return DimsConfig.model_validate(data)


def _require_manifests(cfg: DimsConfig) -> None:
    if cfg.train_json is None or cfg.val_json is None:
        raise FinescaleError("give --train-json and --val-json (or set them in --config)")


def classify(cfg: DimsConfig, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train a company or model classifier into ``run_dir``; its label vocabulary (the training manifest's, unless
    given) is stored in config.yaml and the checkpoint."""
    _require_manifests(cfg)
    run_dir = Path(run_dir)
    target = cfg.classify.target
    key = "companies" if target == "company" else "models"
    labels = cfg.labels(target) or read_vocabularies(cfg.train_json)[key]
    if not labels:
        raise FinescaleError(f"the training manifest {cfg.train_json} names no {target}: nothing to classify")
    cfg = _updated(cfg, stage="classify", **{f"data__{key}": labels})
    return fit_and_report(
        cfg,
        run_dir,
        build_task=lambda load_weights=True: DimsClassifierTask(cfg.model_dump(mode="json"), load_weights=load_weights),
        datamodule=DimsDataModule(cfg),
        title=f"finescale dims: {target} classifier",
        resume=resume,
    )


def ensure_classifier(cfg: DimsConfig, run_dir: Path, target: str) -> Path:
    """best.ckpt of a ``target`` classifier trained in ``run_dir`` with ``cfg``'s data and trainer settings; a
    finished one is reused, a crashed one resumed."""
    if (run_dir / METRICS).exists() and (run_dir / BEST).exists():
        return run_dir / BEST
    log.info("no --%s-checkpoint given: training a %s classifier into %s", target, target, run_dir)
    classify(_updated(cfg, stage="classify", classify__target=target), run_dir, resume=(run_dir / LAST).exists())
    return run_dir / BEST


def read_classifier(path: str | Path, target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``{"model": model section, "labels": [...]}``, classifier state dict) of a classifier checkpoint."""
    ckpt = read_checkpoint(path)
    raw = checkpoint_config(ckpt)
    if raw.get("pipeline") != "dims":
        raise FinescaleError(
            wrong_pipeline(resolve_checkpoint(path), raw.get("pipeline"), "dims", flag=f"--{target}-checkpoint")
        )
    config = DimsConfig.model_validate(raw)
    if config.stage != "classify" or config.classify.target != target:
        what = f"a {config.classify.target} classifier" if config.stage == "classify" else "a regressor"
        raise FinescaleError(f"--{target}-checkpoint {path} holds {what}, not a {target} classifier")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return {"model": config.model.model_dump(mode="json"), "labels": config.labels(target)}, state


def unfreezing(cfg: DimsConfig) -> ProgressiveUnfreezing:
    """Head only until the first unfreeze epoch, then the listed fractions of the embedding models."""
    reg = cfg.regress
    if len(reg.unfreeze_epochs) != len(reg.unfreeze_fractions):
        raise FinescaleError("--unfreeze-epochs and --unfreeze-fractions must have the same number of entries")
    names = [*EMBEDDERS, "model.visual"] if reg.stage_visual else list(EMBEDDERS)
    return ProgressiveUnfreezing(names, list(zip(reg.unfreeze_epochs, reg.unfreeze_fractions, strict=True)))


def train(
    cfg: DimsConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Train the length/diameter regressor into ``run_dir`` on top of the two classifiers; ``callbacks`` (e.g. an
    HPO pruner) join the regressor's training only."""
    _require_manifests(cfg)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume=resume)  # fail before spending time on the classifiers
    callback = unfreezing(cfg)
    given = {"company": cfg.regress.company_checkpoint, "model": cfg.regress.model_checkpoint}
    specs, states = {}, {}
    for target in TARGETS:  # the checkpoints given first: a wrong one is refused before a classifier is trained
        if given[target]:
            specs[target], states[target] = read_classifier(given[target], target)
    paths = {target: given[target] or ensure_classifier(cfg, run_dir / target, target) for target in TARGETS}
    for target in TARGETS:
        if target not in specs:
            specs[target], states[target] = read_classifier(paths[target], target)
    cfg = _updated(
        cfg,
        stage="regress",
        embedders=specs,
        data__companies=specs["company"]["labels"],
        data__models=specs["model"]["labels"],
        catalogue=read_catalogue(load_records(cfg.train_json, check_images=False).records),
        regress__company_checkpoint=str(paths["company"]),
        regress__model_checkpoint=str(paths["model"]),
    )

    def build_task(load_weights: bool = True) -> DimsRegressionTask:
        task = DimsRegressionTask(cfg.model_dump(mode="json"), load_weights=load_weights)
        task.model.load_embedders(states["company"], states["model"])
        return task

    return fit_and_report(
        cfg,
        run_dir,
        build_task=build_task,
        datamodule=DimsDataModule(cfg),
        title=TITLE,
        resume=resume,
        callbacks=[callback, *callbacks],
    )


def training_combinations(path: str | Path | None) -> set[tuple[str, float, float]] | None:
    """(model, length, diameter) combinations of the training manifest, or None when it is not at hand."""
    if path is None or not Path(path).exists():
        log.warning("training manifest %s not found: unseen-combination metrics are left out", path)
        return None
    return {combination(r) for r in load_records(path, check_images=False).records}


def evaluate(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path | None = None,
    *,
    train_json: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of a dims checkpoint (regressor or classifier) on ``manifest`` (``dims/metrics.py``), recorded in
    ``out`` (default: the run's metrics.json, under ``eval`` -> the manifest), with plots and the report beside
    it. A regressor is also scored on the records whose (model, length, diameter) combination is absent from
    ``train_json`` (default: the run's training manifest); its metrics hold both classifiers' top-1 accuracy
    (``dims_company_accuracy``, ``dims_model_accuracy``) beside the sizes. Per-image answers, with whether the
    classifiers named the truth, go to ``predictions_<manifest stem>.json`` beside ``out``
    (:func:`per_image_results`). The model runs on ``device`` (``auto``: CUDA when present)."""
    ckpt = resolve_checkpoint(checkpoint)
    out = Path(out) if out else ckpt.parent / METRICS
    task = load_task(ckpt, pipeline="dims")
    cfg = task.cfg
    plot_dir = out.parent / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    if cfg.stage == "classify":
        target = cfg.classify.target
        data = load_records(manifest, target=target)
        arrays = collect(task, data.records, device)
        metrics = classify_metrics({"probs": arrays["probs"], "true": arrays[f"true_{target}"]})
        figures = [_confusion(arrays, target, cfg.labels(target), plot_dir)]
        rows = per_image_classes(data.records, arrays["probs"], target=target, labels=cfg.labels(target))
    else:
        data = load_records(manifest)
        arrays = collect(task, data.records, device)
        seen = training_combinations(train_json or cfg.train_json)
        unseen = None if seen is None else np.array([combination(r) not in seen for r in data.records], dtype=bool)
        snapped = DimsPredictor.snap_config(cfg, arrays)
        metrics = regression_metrics(snapped, unseen)
        if snapped is not arrays:  # the regressor alone, to show what snapping adds
            raw = regression_metrics(arrays, unseen)
            metrics.update({k.replace("dims_", "dims_raw_", 1): v for k, v in raw.items() if k.endswith("mae_mm")})
        arrays = snapped
        figures = regression_figures(arrays, plot_dir) + [_confusion(arrays, "model", cfg.data.models, plot_dir)]
        rows = per_image_results(
            data.records, arrays, companies=cfg.data.companies, models=cfg.data.models, unseen=unseen
        )
    per_image = write_json(out.parent / f"predictions_{Path(manifest).stem}.json", rows)
    log.info("per-image results: %s", per_image)
    metrics.update(prefix_metrics("dims", skipped_counts("eval", data)))
    return finish_evaluation(out, manifest, metrics, run_dir=ckpt.parent, title=TITLE, figures=figures)


def collect(task: Any, records: list[dict], device: str) -> dict[str, np.ndarray]:
    """Deterministic predictions over validated records, with the true values beside them, as arrays."""
    where = resolve_device(device)
    model = task.model.eval().to(where)
    loader = DataLoader(
        make_dataset(task.cfg, records, train=False, cache=False),  # each image is read once
        batch_size=task.cfg.trainer.batch_size,
        num_workers=task.cfg.trainer.num_workers,
    )
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for batch in track(loader, description="evaluating", console=stderr_console(), transient=True):
            batch = move_to(batch, where)
            pred = model.predict(batch)
            pred.pop("embedding", None)
            for key in ("length_mm", "diameter_mm", "company", "model"):
                pred[f"true_{key}"] = batch[key]
            for key, value in pred.items():
                parts.setdefault(key, []).append(value.float() if value.is_floating_point() else value)
    return {key: torch.cat(values).cpu().numpy() for key, values in parts.items()}


def regression_figures(arrays: dict[str, np.ndarray], plot_dir: Path) -> list[Figure]:
    figures = []
    for name in ("length", "diameter"):
        true, pred = arrays[f"true_{name}_mm"], arrays[f"{name}_mm"]
        figures += [
            Figure(
                f"Predicted vs true {name}",
                plots.plot_pred_vs_true(true, pred, plot_dir / f"{name}_pred_vs_true.png", title=name.capitalize()),
            ),
            Figure(
                f"{name.capitalize()} error distribution",
                plots.plot_error_histogram(pred - true, plot_dir / f"{name}_error_hist.png", title=f"{name} error"),
            ),
        ]
    return figures


def _confusion(arrays: dict[str, np.ndarray], target: str, labels: list[str], plot_dir: Path) -> Figure:
    probs = arrays["probs"] if "probs" in arrays else arrays[f"{target}_probs"]
    true = arrays[f"true_{target}"]
    known = true >= 0
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (true[known], probs.argmax(axis=1)[known]), 1)
    path = plots.plot_confusion_matrix(matrix, labels, plot_dir / f"{target}_confusion.png", title=f"{target}")
    return Figure(f"{target.capitalize()} confusion", path, "Rows: true, columns: predicted.")
