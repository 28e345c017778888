"""Training a pipeline end to end into a run directory: config.yaml, checkpoints, logs, metrics.json."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from finescale.config import RunConfig, save_config
from finescale.data.manifest import Manifest
from finescale.engine.callbacks import TrainingClock
from finescale.engine.trainer import LAST, build_trainer, seed_everything
from finescale.errors import FinescaleError
from finescale.serialize import read_json, write_json

METRICS = "metrics.json"
CONFIG = "config.yaml"


def check_run_dir(run_dir: Path, *, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to overwrite a finished or crashed run."""
    last = run_dir / LAST
    if resume:
        if not last.exists():
            raise FinescaleError(f"--resume given but {last} does not exist")
        return last
    if last.exists():
        raise FinescaleError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    return None


def manifest_metrics(manifests: Mapping[str, Manifest]) -> dict[str, int]:
    """Flat counts for metrics.json: ``train_n_valid``, ``train_skipped_missing_file`` ..."""
    flat: dict[str, int] = {}
    for split, manifest in manifests.items():
        flat[f"{split}_n_total"] = manifest.n_total
        flat[f"{split}_n_valid"] = len(manifest.records)
        flat.update(skipped_counts(split, manifest))
    return flat


def skipped_counts(split: str, manifest: Manifest) -> dict[str, int]:
    """``{"<split>_skipped_<reason>": count}`` of the records the manifest's validation skipped."""
    return {f"{split}_skipped_{reason}": count for reason, count in manifest.skipped.items()}


def update_metrics(path: Path, new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into the JSON file at ``path`` (created when missing) and return the merged dict."""
    merged = read_json(path) if path.exists() else {}
    merged.update(new)
    write_json(path, merged)
    return merged


def fit(
    cfg: RunConfig,
    run_dir: Path,
    *,
    build_task: Callable[[], L.LightningModule],
    datamodule: L.LightningDataModule,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train the task made by ``build_task`` on ``datamodule``; writes config.yaml, best.ckpt, last.ckpt, logs and
    the training part of metrics.json, and returns those metrics. The task is built after seeding, so that its
    initial weights are part of what the seed fixes."""
    run_dir = Path(run_dir)
    ckpt = check_run_dir(run_dir, resume=resume)
    seed_everything(cfg.trainer.seed, deterministic=cfg.trainer.deterministic)
    task = build_task()
    clock = TrainingClock()
    trainer = build_trainer(
        cfg.trainer, run_dir, monitor=task.monitor, mode=task.monitor_mode, callbacks=[*callbacks, clock]
    )
    if trainer.is_global_zero:
        save_config(cfg, run_dir / CONFIG)
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    seconds = clock.seconds  # includes the attempts before a --resume
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    summary: dict[str, Any] = {
        "train_seconds": round(seconds, 2),
        "epochs_trained": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        f"best_{task.monitor.replace('/', '_')}": float(best) if best is not None else None,
        **manifest_metrics(getattr(datamodule, "manifests", {})),
    }
    if trainer.is_global_zero:
        update_metrics(run_dir / METRICS, summary)
    return summary


def fit_and_report(
    cfg: RunConfig,
    run_dir: Path,
    *,
    build_task: Callable[[], L.LightningModule],
    datamodule: L.LightningDataModule,
    title: str,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """:func:`fit`, then the run's report.html (on the process that wrote config.yaml)."""
    from finescale.eval.report import write_report

    summary = fit(cfg, run_dir, build_task=build_task, datamodule=datamodule, resume=resume, callbacks=callbacks)
    if (Path(run_dir) / CONFIG).exists():
        write_report(run_dir, title=title)
    return summary
