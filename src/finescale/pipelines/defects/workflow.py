"""The ``defects`` verbs as functions: train (supervised or Soft Teacher, iteration-based), evaluate a checkpoint on a
COCO file (COCO metrics per class, the seed's efficiency table, a standard COCO results file, plots and report)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from rich.progress import track

from finescale.console import stderr_console
from finescale.engine.callbacks import LossStability, PeakMemory
from finescale.engine.checkpoints import load_task, resolve_checkpoint
from finescale.engine.predictor import move_to, resolve_device
from finescale.engine.run import METRICS, finish_evaluation, fit_and_report, skipped_counts
from finescale.errors import FinescaleError
from finescale.eval.report import Figure
from finescale.pipelines import prefix_metrics
from finescale.pipelines.defects.config import DefectsConfig
from finescale.pipelines.defects.results import coco_results
from finescale.pipelines.defects.task import DefectsTask, subset

log = logging.getLogger("finescale")
TITLE = "finescale defects: defect boxes on the 8 views of a cutting tool"


def coco_categories(path: Path) -> list[dict[str, Any]]:
    """The categories of a COCO file, sorted by id (label L is the L-th of them)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FinescaleError(f"cannot read COCO file {path}: {str(err).splitlines()[0]}") from None
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise FinescaleError(f"COCO file {path} lists no categories")
    return sorted(categories, key=lambda c: c["id"])


def with_categories(cfg: DefectsConfig) -> DefectsConfig:
    """The config with ``data.categories`` filled from the training file when left empty; a training file whose
    categories differ from the ones given is refused (the labels would mean other classes)."""
    names = [c["name"] for c in coco_categories(cfg.train_json)]
    if cfg.data.categories and cfg.data.categories != names:
        raise FinescaleError(f"--train-json's categories {names} differ from the config's {cfg.data.categories}")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"categories": names})})


def train(
    cfg: DefectsConfig, run_dir: Path, *, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    from finescale.pipelines.defects.data import DefectsDataModule

    cfg = with_categories(cfg)
    extra: list[Callback] = [LossStability(), PeakMemory()]
    if cfg.semi.semi_supervised:
        from finescale.engine.ema import EMATeacher

        extra.append(EMATeacher(cfg.semi.ema_momentum, ramp=cfg.semi.ema_ramp))
    return fit_and_report(
        cfg,
        Path(run_dir),
        build_task=lambda load_weights=True: DefectsTask(cfg.model_dump(mode="json"), load_weights=load_weights),
        datamodule=DefectsDataModule(cfg),
        title=TITLE,
        resume=resume,
        callbacks=[*extra, *callbacks],
    )


def detect_dataset(model: torch.nn.Module, loader: Any, category_ids: Sequence[int], device: torch.device) -> list:
    """COCO results of ``model`` over every batch of ``loader`` (original pixels, COCO category ids)."""
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for batch in track(loader, description="evaluating", console=stderr_console(), transient=True):
            batch = move_to(batch, device)
            detections = model.predict(batch)["detections"]
            results += coco_results(detections, batch["image_ids"], batch["scales"], category_ids)
    return results


def evaluate(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path | None = None,
    *,
    predict_with: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """COCO metrics of ``checkpoint`` (its teacher or student: ``predict_with``, default the run's) on the COCO file
    ``manifest``: mAP@[.5:.95], AP50, AP75, small/medium/large, per-class AP and the seed's efficiency (AP / data
    share). Writes ``detections_<manifest stem>.json`` (a standard COCO results file) and the plots beside ``out``
    (default: the run's metrics.json)."""
    from finescale.data.coco import load_coco, write_results
    from finescale.eval.coco_eval import coco_metrics, efficiency_table
    from finescale.pipelines.defects.data import ToolGroups, group_loader
    from finescale.pipelines.defects.predict import DefectsPredictor

    ckpt = resolve_checkpoint(checkpoint)
    out = Path(out) if out else ckpt.parent / METRICS
    task = load_task(ckpt, pipeline="defects")
    cfg = task.cfg
    data = load_coco(manifest, views=cfg.data.views)
    if data.categories != cfg.data.categories:
        raise FinescaleError(f"{manifest} has categories {data.categories}, the model {cfg.data.categories}")
    device_ = resolve_device(device)
    model = DefectsPredictor(task, predict_with=predict_with, device=str(device_)).model
    size = (cfg.data.image_height, cfg.data.image_width)
    loader = group_loader(
        ToolGroups(data, size), batch_size=cfg.trainer.batch_size, num_workers=cfg.trainer.num_workers
    )
    results = detect_dataset(model, loader, data.category_ids, device_)
    gt = json.loads(Path(manifest).read_text())
    evaluated = {i for group in data.records for i in group.image_ids if i is not None}
    gt = subset(gt, evaluated)
    metrics = coco_metrics(gt, results)
    table = efficiency_table(gt, metrics)  # reads the per-class ap_<key> entries
    metrics = prefix_metrics("defects", {**metrics, "n": len(evaluated), **skipped_counts("eval", data)})
    metrics.update({f"defects_efficiency_{row['key']}": row["efficiency"] for row in table})
    write_results(out.parent / f"detections_{Path(manifest).stem}.json", results)
    figures = evaluation_figures(out.parent / "plots", gt, results, table, Path(manifest).parent)
    return finish_evaluation(out, manifest, metrics, run_dir=ckpt.parent, title=TITLE, figures=figures)


def evaluation_figures(folder: Path, gt: dict, results: list, table: list, root: Path) -> list[Figure]:
    """The report's figures of an evaluation: AP and data share per class (the seed's table), precision-recall
    curves per class, and example detections per class beside the ground truth."""
    from finescale.eval.coco_eval import evaluate_coco
    from finescale.eval.detection_plots import plot_class_ap, plot_detection_examples, plot_pr_curves

    folder.mkdir(parents=True, exist_ok=True)
    paths = {im["id"]: root / im["file_name"] for im in gt["images"]}
    ap = plot_class_ap(table, folder / "defects_class_ap.png")
    pr = plot_pr_curves(evaluate_coco(gt, results), folder / "defects_pr_curves.png")
    examples = plot_detection_examples(paths, gt, results, folder / "defects_examples.png")
    return [
        Figure("AP and data share per class", ap, "The seed's table: efficiency = AP / data share."),
        Figure("Precision-recall at IoU 0.5", pr, "One panel per class."),
        Figure("Example detections", examples, "Ground truth solid green; detections dashed orange, with scores."),
    ]
