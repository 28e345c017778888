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

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback

from finescale.errors import FinescaleError
from finescale.eval.bench import ensure_data, run_variant
from finescale.pipelines import Pipeline, get_pipeline
from finescale.serialize import to_jsonable, write_json

log = logging.getLogger("finescale")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def storage_for(url: str) -> RDBStorage:
    """RDB storage with a heartbeat: trials of a dead process become FAIL and are retried once."""
    return RDBStorage(
        url, heartbeat_interval=30, grace_period=90, failed_trial_callback=RetryFailedTrialCallback(max_retry=1)
    )


def _objective(
    pipeline: Pipeline,
    search: Any,
    out: Path,
    data_dir: Path,
    preset: str,
    overrides: Mapping[str, Any],
    config_file: Path | None,
) -> Callable[[optuna.Trial], float]:
    from finescale.config import build_config

    base = build_config(pipeline.config_class, preset=preset, config_file=config_file, overrides=overrides)

    def objective(trial: optuna.Trial) -> float:
        space = search.search_space(trial, base)
        run_dir = out / "trials" / params_key(trial.params)
        trial.set_user_attr("run_dir", str(run_dir))
        run_overrides = {
            **overrides,
            **space,
            "progress": False,
            "train_json": str(data_dir / "train.json"),
            "val_json": str(data_dir / "val.json"),
        }
        metrics = run_variant(
            pipeline,
            run_dir,
            preset=preset,
            overrides=run_overrides,
            test_json=data_dir / "val.json",
            config_file=config_file,
        )
        value = metrics.get(search.OBJECTIVE)
        if value is None:
            raise FinescaleError(f"trial {trial.number} produced no {search.OBJECTIVE}")
        return float(value)

    return objective


def params_key(params: Mapping[str, Any]) -> str:
    """Folder name of a parameter set: a retried trial (same parameters) lands in its old folder and resumes."""
    text = json.dumps(to_jsonable(dict(params)), sort_keys=True)
    return "trial-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def _worker(name: str, search_module: str, study_name: str, url: str, n_trials: int, kwargs: dict) -> None:
    import importlib

    pipeline, search = get_pipeline(name), importlib.import_module(search_module)
    study = optuna.load_study(study_name=study_name, storage=storage_for(url))
    study.optimize(_objective(pipeline, search, **kwargs), n_trials=n_trials, catch=(FinescaleError,))


def run_hpo(
    pipeline: Pipeline,
    search: Any,
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
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out / 'study.db'}"
    study_name = study_name or f"{pipeline.name}-{preset}"
    data_dir = ensure_data(pipeline, data_dir or out / "data", n=n or pipeline.demo_size)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_for(url),
        direction=search.DIRECTION,
        sampler=optuna.samplers.TPESampler(seed=seed),
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
            study.optimize(_objective(pipeline, search, **kwargs), n_trials=remaining, catch=(FinescaleError,))
    else:
        # spawn: a fresh interpreter per worker, no forked torch or SQLite state
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_worker, args=(pipeline.name, search.__name__, study_name, url, share, kwargs))
            for share in shares
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise FinescaleError(f"{len(failed)} hpo worker process(es) failed (exit codes {failed})")
    summary = analyze(url, study_name)
    write_json(out / "hpo.json", summary)
    return summary


def analyze(storage: str, study_name: str | None = None) -> dict[str, Any]:
    """Best trial, every finished trial's parameters and value, and parameter importances of a stored study."""
    names = optuna.get_all_study_names(storage=storage)
    if not names:
        raise FinescaleError(f"no study in {storage}")
    if study_name is None:
        if len(names) > 1:
            raise FinescaleError(f"{storage} holds several studies; pick one with --study-name: {', '.join(names)}")
        study_name = names[0]
    elif study_name not in names:
        raise FinescaleError(f"no study {study_name!r} in {storage}; it holds: {', '.join(names)}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    summary: dict[str, Any] = {
        "study": study_name,
        "direction": study.direction.name.lower(),
        "n_complete": len(done),
        "n_failed": len(study.get_trials(states=(optuna.trial.TrialState.FAIL,))),
        "trials": [
            {"number": t.number, "value": t.value, "params": t.params, "run_dir": t.user_attrs.get("run_dir")}
            for t in done
        ],
    }
    if done:
        best = study.best_trial
        summary.update(best_value=best.value, best_params=best.params, best_run_dir=best.user_attrs.get("run_dir"))
        summary["importances"] = _importances(study) if len(done) >= 2 else {}
    return summary


def _importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances when scikit-learn is there, else PED-ANOVA (no extra dependency); {} if neither works."""
    for evaluator in (optuna.importance.FanovaImportanceEvaluator, optuna.importance.PedAnovaImportanceEvaluator):
        try:
            values = optuna.importance.get_param_importances(study, evaluator=evaluator())
            return {k: round(float(v), 4) for k, v in values.items()}
        except Exception as err:  # missing optional dependency, or too few distinct trials
            log.debug("importance with %s failed: %s", evaluator.__name__, err)
    return {}


def markdown(summary: Mapping[str, Any]) -> str:
    """A short table of the study for the console."""
    lines = [
        f"study {summary['study']} ({summary['direction']}): {summary['n_complete']} complete, "
        f"{summary['n_failed']} failed"
    ]
    if summary.get("best_params") is not None:
        lines.append(f"best value {summary['best_value']:.4f} in {summary.get('best_run_dir')}")
        lines += [f"  {k} = {v}" for k, v in summary["best_params"].items()]
    if summary.get("importances"):
        lines.append("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()))
    return "\n".join(lines)
