"""``finescale hpo``: Optuna search over a pipeline's search space, stored in a database so that it resumes after an
interruption and several processes (or machines, with PostgreSQL) can share one study.

Each trial trains in ``out/trials/trial-<hash of its parameters>`` and is scored on the validation manifest (the test
split stays untouched for the final report). A trial killed mid-run is marked failed by the storage heartbeat and
retried once with the same parameters, hence in the same folder, so its training resumes from ``last.ckpt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback
from optuna.storages import RDBStorage, RetryFailedTrialCallback

from finescale.errors import FinescaleError
from finescale.eval.bench import ensure_data, run_variant
from finescale.eval.hpo_report import analyze, write_analysis
from finescale.pipelines import Pipeline, SearchSpace, get_pipeline
from finescale.serialize import to_jsonable, write_json

log = logging.getLogger("finescale")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def storage_for(url: str) -> RDBStorage:
    """RDB storage with a heartbeat: trials of a dead process become FAIL and are retried once."""
    return RDBStorage(
        url, heartbeat_interval=30, grace_period=90, failed_trial_callback=RetryFailedTrialCallback(max_retry=1)
    )


class PruneOnPlateau(Callback):
    """Reports the task's validation metric to the Optuna trial after each validation and stops training when the
    study's pruner judges the trial hopeless; the objective then raises ``TrialPruned``.

    Stopping through ``trainer.should_stop`` (rather than raising inside Lightning) lets the run end cleanly, so
    its checkpoints and metrics stay readable."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(pl_module.monitor)
        if value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            log.info(
                "trial %d pruned after epoch %d (%s = %.4f)",
                self.trial.number,
                trainer.current_epoch,
                pl_module.monitor,
                float(value),
            )
            self.pruned = True
            trainer.should_stop = True


def _objective(
    pipeline: Pipeline,
    out: Path,
    data_dir: Path,
    preset: str,
    overrides: Mapping[str, Any],
    config_file: Path | None,
) -> Callable[[optuna.Trial], float]:
    from finescale.config import build_config

    search = search_space(pipeline)
    base = build_config(pipeline.config_class, preset=preset, config_file=config_file, overrides=overrides)

    def objective(trial: optuna.Trial) -> float:
        space = search.suggest(trial, base)
        run_dir = out / "trials" / params_key(trial.params)
        trial.set_user_attr("run_dir", str(run_dir))
        run_overrides = {
            **overrides,
            **space,
            "progress": False,
            "train_json": str(data_dir / "train.json"),
            "val_json": str(data_dir / "val.json"),
        }
        pruner = PruneOnPlateau(trial)
        metrics = run_variant(
            pipeline,
            run_dir,
            preset=preset,
            overrides=run_overrides,
            test_json=data_dir / "val.json",
            config_file=config_file,
            callbacks=[pruner],
        )
        if pruner.pruned:
            raise optuna.TrialPruned()
        value = metrics.get(search.objective)
        if value is None:
            raise FinescaleError(f"trial {trial.number} produced no {search.objective}")
        return float(value)

    return objective


def search_space(pipeline: Pipeline) -> SearchSpace:
    if pipeline.search is None:
        raise FinescaleError(f"the {pipeline.name} pipeline defines no hyperparameter search space yet")
    return pipeline.search


def params_key(params: Mapping[str, Any]) -> str:
    """Folder name of a parameter set: a retried trial (same parameters) lands in its old folder and resumes."""
    text = json.dumps(to_jsonable(dict(params)), sort_keys=True)
    return "trial-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def _worker(name: str, study_name: str, url: str, n_trials: int, kwargs: dict) -> None:
    study = optuna.load_study(study_name=study_name, storage=storage_for(url), pruner=pruner())
    study.optimize(_objective(get_pipeline(name), **kwargs), n_trials=n_trials, catch=(FinescaleError,))


def pruner() -> optuna.pruners.BasePruner:
    """Median rule: after two finished trials, stop a trial whose metric after an epoch is worse than the median
    of earlier trials at that epoch (never in its first epoch, where everything is noisy)."""
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def run_hpo(
    pipeline: Pipeline,
    out: Path,
    *,
    n_trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    parallel: int = 1,
    preset: str = "quick",
    data_dir: Path | None = None,
    n: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run trials until the study holds ``n_trials`` finished ones (a rerun continues), ``parallel`` processes at a
    time; writes ``out/hpo.json`` and returns its content."""
    search = search_space(pipeline)  # fail before any data is written
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out / 'study.db'}"
    study_name = study_name or f"{pipeline.name}-{preset}"
    data_dir = ensure_data(pipeline, data_dir or out / "data", n=n or pipeline.demo_size)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_for(url),
        direction=search.direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner(),
        load_if_exists=True,
    )
    remaining = max(0, n_trials - len(study.get_trials(states=FINISHED)))
    kwargs = {
        "out": out,
        "data_dir": data_dir,
        "preset": preset,
        "overrides": dict(overrides or {}),
        "config_file": config_file,
    }
    workers = max(1, min(parallel, remaining))
    shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    log.info(
        "hpo %s: %d trials to run in %d process(es), study %s in %s", pipeline.name, remaining, workers, study_name, url
    )
    if workers == 1:
        if remaining:
            study.optimize(_objective(pipeline, **kwargs), n_trials=remaining, catch=(FinescaleError,))
    else:
        # spawn: a fresh interpreter per worker, no forked torch or SQLite state
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(pipeline.name, study_name, url, share, kwargs)) for share in shares]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise FinescaleError(f"{len(failed)} hpo worker process(es) failed (exit codes {failed})")
    summary = analyze(url, study_name)
    write_json(out / "hpo.json", summary)
    write_analysis(summary, out / "analysis")
    return summary
