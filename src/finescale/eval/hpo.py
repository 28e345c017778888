"""``finescale hpo``: Optuna search over a pipeline's search space, stored in a database so that it resumes after an
interruption and several processes (or machines, with PostgreSQL) can share one study.

Each trial trains in ``out/trials/trial-<hash of its parameters>`` and is scored on the validation manifest (the test
split stays untouched for the final report).

Every process that takes part (the ``hpo`` command with ``--parallel 1``, or each of its worker processes) runs trials
until the study holds the asked number of finished (complete or pruned) trials. Running trials keep a heartbeat in
the storage (every ``FINESCALE_HPO_HEARTBEAT_S`` seconds, 30 by default): a trial whose heartbeat is older than
``FINESCALE_HPO_GRACE_S`` (3 heartbeats by default) belongs to a dead process or machine; it is marked failed and
retried once with the same parameters, hence in the same folder, so its training resumes from ``last.ckpt``. A new
trial is started only while finished + running + waiting (retry) trials fall short of the asked number, so trials
running in live processes elsewhere are not run a second time; when nothing is left to start, a process waits until
the running trials finish or go stale. Worker processes die with the ``hpo`` process that started them.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from finescale.errors import FinescaleError
from finescale.eval.bench import ensure_data, run_variant
from finescale.eval.hpo_report import analyze, storage_url, write_analysis
from finescale.eval.hpo_storage import (
    SilentTrials,
    heartbeat_settings,
    owed,
    storage_for,
)
from finescale.pipelines import Pipeline, SearchSpace, get_pipeline
from finescale.serialize import to_jsonable, write_json

log = logging.getLogger("finescale")


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE whose random draws are seeded by the sampler seed and the trial's number, which the storage hands out
    once per study: processes and machines started with the same ``--seed`` draw different parameters (a single
    seeded TPE in each would start every one of them with the same parameter set), and a study run by one process
    draws the same parameters every time."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.TPESampler] = {}

    def _tpe(self, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        if trial.number not in self._samplers:
            seed = (self.seed * 1_000_003 + trial.number) % 2**32
            self._samplers[trial.number] = optuna.samplers.TPESampler(seed=seed)
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict:
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, distribution: Any) -> Any:
        return self._tpe(trial).sample_independent(study, trial, param_name, distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        sampler = self._samplers.pop(trial.number, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        pass  # the seeds are per trial; nothing to reseed


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


class SurplusTrial(FinescaleError):
    """A trial started when the study already held its asked number of trials (processes racing for the last
    one): it ends FAIL before it suggests or trains anything."""


def _claim(trial: optuna.Trial, n_trials: int) -> None:
    """Raise :class:`SurplusTrial` unless fewer than ``n_trials`` trials numbered below this one are finished,
    running or waiting. Trial numbers are handed out under a lock on the study, so of several processes that
    started a trial for the same last place, only the lowest number keeps it."""
    ahead = sum(t.number < trial.number and t.state != TrialState.FAIL for t in trial.study.get_trials(deepcopy=False))
    if ahead >= n_trials:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number} not needed: {ahead} earlier trials are finished, running or waiting")


def _objective(
    pipeline: Pipeline,
    out: Path,
    data_dir: Path,
    preset: str,
    overrides: Mapping[str, Any],
    config_file: Path | None,
    n_trials: int,
) -> Callable[[optuna.Trial], float]:
    from finescale.config import build_config

    search = search_space(pipeline)
    base = build_config(pipeline.config_class, preset=preset, config_file=config_file, overrides=overrides)

    def objective(trial: optuna.Trial) -> float:
        _claim(trial, n_trials)
        space = search.suggest(trial, base)
        run_dir = out / "trials" / params_key(trial.params)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
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


def run_trials(
    study: optuna.Study, storage: RDBStorage, objective: Callable[[optuna.Trial], float], n_trials: int
) -> int:
    """Run trials one at a time until the study holds ``n_trials`` finished ones; returns how many this process
    ran. A waiting retry is taken first; a new trial only while finished + running + waiting < ``n_trials``; with
    nothing to start, wait for the running trials (here or on other machines) to finish or go stale. Stops after
    ``n_trials`` of its own trials failed (an objective error), so a broken setup does not loop forever.

    A trial of this process that another one failed as stale while it still ran (its heartbeat came too late: a
    grace period too short for the load) cannot be told its result any more; it is left FAIL, its retry counts in
    its place, and this process carries on."""
    interval, _ = heartbeat_settings()
    silent = SilentTrials(storage)
    ran = failed = 0
    last: list[FrozenTrial] = []
    started: list[int] = []
    raised: list[BaseException] = []

    def tracked(trial: optuna.Trial) -> float:
        started.append(trial.number)
        try:
            return objective(trial)
        except BaseException as err:
            raised.append(err)
            raise

    while True:
        count = owed(study, silent)
        if count["finished"] >= n_trials:
            return ran
        if not count["waiting"] and count["finished"] + count["running"] >= n_trials:
            time.sleep(min(interval, 5))
            continue
        last.clear()
        started.clear()
        raised.clear()
        try:
            study.optimize(tracked, n_trials=1, catch=(FinescaleError,), callbacks=[lambda _s, t: last.append(t)])
        except Exception as err:  # tell() refusing a FAIL trial (Optuna 5 turns it into "Should not reach.")
            mine = [t for t in study.get_trials(deepcopy=False) if started and t.number == started[0]]
            if err in raised or not mine or mine[0].state != TrialState.FAIL:
                raise
            log.warning(
                "hpo: trial %d was taken for dead while it ran (late heartbeat); its retry replaces it", started[0]
            )
            continue
        ran += 1
        if last and last[0].state == TrialState.FAIL and not last[0].user_attrs.get("surplus"):
            failed += 1
            if failed >= n_trials:
                log.warning("hpo: %d trials of this process failed; stopping it", failed)
                return ran


def _die_with_parent(parent: int) -> None:
    """Make this worker die when the ``hpo`` process that started it does, even by SIGKILL: Linux's
    PR_SET_PDEATHSIG, and a thread that exits once the parent pid changes (other systems, or a parent that died
    before the prctl call)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError) as err:  # pragma: no cover - no libc prctl
            log.debug("PR_SET_PDEATHSIG unavailable: %s", err)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="hpo-parent-watch", daemon=True).start()


def _worker(name: str, study_name: str, url: str, n_trials: int, seed: int, parent: int, kwargs: dict) -> None:
    _die_with_parent(parent)
    storage = storage_for(url)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=TrialSeededSampler(seed), pruner=pruner())
    run_trials(study, storage, _objective(get_pipeline(name), n_trials=n_trials, **kwargs), n_trials)


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
    """Run trials until the study holds ``n_trials`` finished ones (a rerun continues; trials still running in live
    processes elsewhere count as owed, not as missing), ``parallel`` processes at a time; writes ``out/hpo.json``
    and returns its content."""
    search = search_space(pipeline)  # fail before any data is written
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(storage or f"sqlite:///{out / 'study.db'}")
    study_name = study_name or f"{pipeline.name}-{preset}"
    data_dir = ensure_data(pipeline, data_dir or out / "data", n=n or pipeline.demo_size)
    storage = storage_for(url)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction=search.direction,
        sampler=TrialSeededSampler(seed),
        pruner=pruner(),
        load_if_exists=True,
    )
    count = owed(study, SilentTrials(storage))
    remaining = max(0, n_trials - count["finished"])
    kwargs = {
        "out": out,
        "data_dir": data_dir,
        "preset": preset,
        "overrides": dict(overrides or {}),
        "config_file": config_file,
    }
    workers = max(1, min(parallel, remaining))
    log.info(
        "hpo %s: %d of %d trials to finish (%d running, %d waiting for a retry) in %d process(es), study %s in %s",
        pipeline.name,
        remaining,
        n_trials,
        count["running"],
        count["waiting"],
        workers,
        study_name,
        url,
    )
    if workers == 1:
        if remaining:
            run_trials(study, storage, _objective(pipeline, n_trials=n_trials, **kwargs), n_trials)
    else:
        # spawn: a fresh interpreter per worker, no forked torch or SQLite state; each runs trials until the study
        # holds n_trials finished ones, and dies with this process
        ctx = mp.get_context("spawn")
        args = (pipeline.name, study_name, url, n_trials, seed, os.getpid(), kwargs)
        procs = [ctx.Process(target=_worker, args=args) for _ in range(workers)]
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
