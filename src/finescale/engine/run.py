"""Training a pipeline end to end into a run directory: config.yaml, checkpoints, logs, metrics.json."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from finescale.config import RunConfig, save_config
from finescale.data.manifest import Manifest
from finescale.engine.callbacks import TrainingClock
from finescale.engine.memory import peak_mb, reset_peak
from finescale.engine.rundir import CONFIG, LAST, METRICS, check_run_dir
from finescale.engine.trainer import build_trainer, seed_everything
from finescale.errors import Interrupted
from finescale.pipelines import is_run_key
from finescale.serialize import read_json, write_json

EVAL = "eval"  # metrics.json's section of evaluations: {manifest: that evaluation's flat metrics}
log = logging.getLogger("finescale")


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


def write_training_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Replace the training summary in a run's metrics.json as a whole. Evaluations recorded before are dropped:
    they scored the checkpoints as they were before this training (a ``--resume`` may have replaced best.ckpt)."""
    if path.exists() and read_json(path).get(EVAL):
        log.info("%s: training changed the checkpoints; earlier evaluations dropped, run eval again", path)
    write_json(path, dict(summary))


def manifest_label(manifest: str | Path) -> str:
    """How metrics.json and the report name the manifest an evaluation ran on: its path as given."""
    return Path(manifest).as_posix()


def _holds_run_metrics(content: Any) -> bool:
    return isinstance(content, dict) and (EVAL in content or any(is_run_key(k) for k in content))


def save_evaluation(
    out: str | Path, manifest: str | Path, metrics: Mapping[str, Any], *, run_dir: str | Path | None = None
) -> bool:
    """Record one evaluation's (flat) ``metrics``. Into a run's metrics file (``out`` is ``run_dir``'s
    metrics.json, or an existing file that holds a training summary or evaluations) it goes under
    ``eval`` -> ``<manifest>``, replacing an earlier evaluation on the same manifest as a whole, while the
    training summary and the evaluations on other manifests stay. Any other ``out`` holds this evaluation alone
    (flat, replaced as a whole). Returns whether it went into a run's metrics file."""
    out = Path(out)
    content = read_json(out) if out.is_file() else {}
    is_run_file = run_dir is not None and out.resolve() == (Path(run_dir) / METRICS).resolve()
    if not (is_run_file or _holds_run_metrics(content)):
        write_json(out, dict(metrics))
        return False
    stale = sorted(k for k in content if k != EVAL and not is_run_key(k))
    if stale:  # flat evaluation keys written before evaluations were kept apart: their manifest is unknown
        log.warning("%s: dropping %d metrics of an earlier evaluation that named no manifest", out, len(stale))
    kept = {k: v for k, v in content.items() if k not in stale}
    evaluations = dict(kept.get(EVAL) or {})
    evaluations[manifest_label(manifest)] = dict(metrics)
    write_json(out, {**kept, EVAL: evaluations})
    return True


def finish_evaluation(
    out: str | Path,
    manifest: str | Path,
    metrics: Mapping[str, Any],
    *,
    run_dir: str | Path | None,
    title: str,
    figures: Sequence[Any] = (),
) -> dict[str, Any]:
    """What every pipeline's ``evaluate`` ends with: :func:`save_evaluation`, then the report beside ``out``
    with a section for this evaluation (its figures; its table too when the metrics went to a file of their own,
    since the report's tables come from that folder's metrics.json). Returns ``metrics``: this evaluation's only."""
    from finescale.eval.report import Section, write_report

    out = Path(out)
    in_run_file = save_evaluation(out, manifest, metrics, run_dir=run_dir)
    label = manifest_label(manifest)
    own_file = not in_run_file and out.name != METRICS
    note = f'<p class="meta">metrics written to {html.escape(str(out))}</p>' if own_file else ""
    section = Section(f"Evaluation on {label}", list(figures), table=dict(metrics) if own_file else None, html=note)
    write_report(out.parent, title=title, sections=[section])
    return dict(metrics)


def fit(
    cfg: RunConfig,
    run_dir: Path,
    *,
    build_task: Callable[..., L.LightningModule],
    datamodule: L.LightningDataModule,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train the task made by ``build_task(load_weights=...)`` on ``datamodule``; writes config.yaml, best.ckpt,
    last.ckpt, logs and the training part of metrics.json, and returns those metrics. The task is built after seeding,
    so that its initial weights are part of what the seed fixes; a resumed run builds it without its pretrained or
    ``--weights`` files (last.ckpt brings every weight, and the file may be gone)."""
    run_dir = Path(run_dir)
    ckpt = check_run_dir(run_dir, resume=resume)
    seed_everything(cfg.trainer.seed, deterministic=cfg.trainer.deterministic)
    task = build_task(load_weights=ckpt is None)
    # the manifests are read before the run directory is made (Lightning's own setup call then finds them read), so
    # a data error leaves no folder behind
    datamodule.setup("fit")
    clock = TrainingClock()
    trainer = build_trainer(
        cfg.trainer, run_dir, monitor=task.monitor, mode=task.monitor_mode, callbacks=[*callbacks, clock]
    )
    if trainer.is_global_zero:
        save_config(cfg, run_dir / CONFIG)
    reset_peak(task.device if task.device.type == "cuda" else None)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SystemExit as stop:  # Lightning's ways out of a Ctrl-C (sys.exit(1)) and a SIGTERM (SIGTERMException)
        if not trainer.interrupted:
            raise
        kind = "SIGTERM" if type(stop).__name__ == "SIGTERMException" else "SIGINT"
        raise Interrupted(kind, run_dir / LAST if (run_dir / LAST).exists() else None) from None
    seconds = clock.seconds  # includes the attempts before a --resume
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    summary: dict[str, Any] = {
        "train_seconds": round(seconds, 2),
        "epochs_trained": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "peak_memory_mb": round(peak_mb(task.device if task.device.type == "cuda" else None), 1),
        f"best_{task.monitor.replace('/', '_')}": float(best) if best is not None else None,
        **manifest_metrics(getattr(datamodule, "manifests", {})),
    }
    if trainer.is_global_zero:
        write_training_summary(run_dir / METRICS, summary)
    return summary


def fit_and_report(
    cfg: RunConfig,
    run_dir: Path,
    *,
    build_task: Callable[..., L.LightningModule],
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
