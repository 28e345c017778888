"""Reading a stored Optuna study: the trials table, the best parameters, parameter importances and two plots
(optimisation history, importances). Used by ``finescale hpo analyze`` and at the end of every ``hpo`` run."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from finescale.errors import FinescaleError
from finescale.serialize import to_jsonable, write_json

log = logging.getLogger("finescale")


def load(storage: str, study_name: str | None = None) -> optuna.Study:
    """The study ``study_name`` of ``storage`` (the only one when no name is given)."""
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as err:  # a bad URL or an unreachable server: say which, not a SQLAlchemy traceback
        raise FinescaleError(f"cannot open study storage {storage}: {err}") from err
    if not names:
        raise FinescaleError(f"no study in {storage}")
    if study_name is None:
        if len(names) > 1:
            raise FinescaleError(f"{storage} holds several studies; pick one with --study-name: {', '.join(names)}")
        study_name = names[0]
    elif study_name not in names:
        raise FinescaleError(f"no study {study_name!r} in {storage}; it holds: {', '.join(names)}")
    return optuna.load_study(study_name=study_name, storage=storage)


def analyze(storage: str, study_name: str | None = None) -> dict[str, Any]:
    """Best trial, every trial's state, parameters and value, and parameter importances of a stored study."""
    return summarize(load(storage, study_name))


def summarize(study: optuna.Study) -> dict[str, Any]:
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    states = [t.state.name.lower() for t in study.trials]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "n_complete": len(done),
        "n_pruned": states.count("pruned"),
        "n_failed": states.count("fail"),
        "trials": [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.params,
                "run_dir": t.user_attrs.get("run_dir"),
            }
            for t in study.trials
            if t.state != optuna.trial.TrialState.RUNNING
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


def write_analysis(summary: Mapping[str, Any], out: Path) -> list[Path]:
    """``out/analysis.json``, ``out/trials.csv`` (one row per trial), ``out/best_params.json`` and the plots
    ``out/optimization_history.png``, ``out/param_importances.png``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "analysis.json", summary), _write_trials_csv(summary["trials"], out / "trials.csv")]
    if summary.get("best_params") is not None:
        best = {"value": summary["best_value"], "params": summary["best_params"], "run_dir": summary["best_run_dir"]}
        paths.append(write_json(out / "best_params.json", best))
    paths.append(plot_history(summary, out / "optimization_history.png"))
    if summary.get("importances"):
        paths.append(plot_importances(summary["importances"], out / "param_importances.png"))
    return paths


def _write_trials_csv(trials: list[Mapping[str, Any]], path: Path) -> Path:
    params = sorted({k for t in trials for k in t["params"]})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", *params, "run_dir"])
        for t in trials:
            row = [t["number"], t["state"], t["value"], *(to_jsonable(t["params"].get(k)) for k in params)]
            writer.writerow([*row, t["run_dir"]])
    return path


def plot_history(summary: Mapping[str, Any], path: Path) -> Path:
    """Each complete trial's value in trial order, with the best-so-far line (what Optuna calls the history)."""
    import matplotlib.pyplot as plt

    done = [t for t in summary["trials"] if t["state"] == "complete"]
    numbers = np.array([t["number"] for t in done], dtype=float)
    values = np.array([t["value"] for t in done], dtype=float)
    better = np.minimum if summary["direction"] == "minimize" else np.maximum
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.scatter(numbers, values, s=18, label="trial")
    if values.size:
        ax.step(numbers, better.accumulate(values), where="post", color="C1", label="best so far")
    pruned = [t["number"] for t in summary["trials"] if t["state"] == "pruned"]
    for number in pruned:
        ax.axvline(number, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("trial" + (" (grey lines: pruned)" if pruned else ""))
    ax.set_ylabel("objective")
    ax.set_title(f"{summary['study']}: optimisation history")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_importances(importances: Mapping[str, float], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]  # most important on top
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2), dpi=110)
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (share of objective variance)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(summary: Mapping[str, Any]) -> str:
    """A short table of the study for the console."""
    lines = [
        f"study {summary['study']} ({summary['direction']}): {summary['n_complete']} complete, "
        f"{summary.get('n_pruned', 0)} pruned, {summary['n_failed']} failed"
    ]
    if summary.get("best_params") is not None:
        lines.append(f"best value {summary['best_value']:.4f} in {summary.get('best_run_dir')}")
        lines += [f"  {k} = {v}" for k, v in summary["best_params"].items()]
    if summary.get("importances"):
        lines.append("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()))
    return "\n".join(lines)
