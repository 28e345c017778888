"""Reading a stored Optuna study: the trials table, the best parameters, parameter importances and Optuna's two
plots (optimisation history, importances). Used by ``finescale hpo analyze`` and at the end of every ``hpo`` run."""

from __future__ import annotations

import csv
import importlib.util
import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from finescale.errors import FinescaleError
from finescale.serialize import to_jsonable, write_json

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = logging.getLogger("finescale")


class StudySummary(dict):
    """:func:`summarize`'s plain-JSON fields, plus the study they describe (``.study``, not a field) for the plots."""

    def __init__(self, study: optuna.Study, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self.study = study


def storage_url(url: str) -> str:
    """``url`` with the psycopg2 driver named when it is a bare ``postgresql://`` URL and only psycopg2 is installed:
    SQLAlchemy >= 2.1 maps a bare ``postgresql://`` to psycopg 3, while the ``postgres`` extra installs psycopg2."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
    return url


def load(storage: str, study_name: str | None = None) -> optuna.Study:
    """The study ``study_name`` of ``storage`` (the only one when no name is given)."""
    storage = storage_url(storage)
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


def analyze(storage: str, study_name: str | None = None) -> StudySummary:
    """Best trial, every trial's state, parameters and value, and parameter importances of a stored study."""
    return summarize(load(storage, study_name))


def summarize(study: optuna.Study) -> StudySummary:
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
    return StudySummary(study, summary)


def _evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA (seeded: the plot shows the numbers of analysis.json) when scikit-learn is there, else PED-ANOVA."""
    if importlib.util.find_spec("sklearn") is not None:
        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.PedAnovaImportanceEvaluator()


def _importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances by :func:`_evaluator`; {} when they cannot be computed (too few distinct trials)."""
    try:
        values = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    except Exception as err:
        log.debug("parameter importances failed: %s", err)
        return {}
    return {k: round(float(v), 4) for k, v in values.items()}


def write_analysis(summary: Mapping[str, Any], out: Path) -> list[Path]:
    """``out/analysis.json``, ``out/trials.csv`` (one row per trial), ``out/best_params.json`` and, for a
    :class:`StudySummary`, the plots ``out/optimization_history.png``, ``out/param_importances.png``; returns the
    paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "analysis.json", summary), _write_trials_csv(summary["trials"], out / "trials.csv")]
    if summary.get("best_params") is not None:
        best = {"value": summary["best_value"], "params": summary["best_params"], "run_dir": summary["best_run_dir"]}
        paths.append(write_json(out / "best_params.json", best))
    study = getattr(summary, "study", None)
    if study is None:
        log.warning("no study to plot (a plain summary): %s has no plots", out)
        return paths
    paths.append(_save(history_axes, study, out / "optimization_history.png"))
    if summary.get("importances"):
        paths.append(_save(importance_axes, study, out / "param_importances.png"))
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


def history_axes(study: optuna.Study) -> Axes:
    """Optuna's optimisation history (each complete trial's value, the best so far), pruned trials as grey lines.
    Optuna switches matplotlib to its ggplot style: call inside ``plt.rc_context()``, as :func:`_save` does."""
    from optuna.visualization.matplotlib import plot_optimization_history

    ax = _quietly(plot_optimization_history, study)
    pruned = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))]
    for number in pruned:
        ax.axvline(number, color="0.6", lw=0.8, zorder=0)
    if pruned:
        ax.set_xlabel("Trial (grey lines: pruned)")
    ax.set_title(f"{study.study_name}: optimisation history")
    return ax


def importance_axes(study: optuna.Study) -> Axes:
    """Optuna's importance bars, by the evaluator that gives ``summary["importances"]``."""
    from optuna.visualization.matplotlib import plot_param_importances

    return _quietly(plot_param_importances, study, evaluator=_evaluator())


def _quietly(plot: Callable[..., Axes], study: optuna.Study, **kwargs: Any) -> Axes:
    with warnings.catch_warnings():  # optuna's matplotlib plots are marked experimental (unchanged since 2.2)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return plot(study, **kwargs)


def _save(plot: Callable[[optuna.Study], Axes], study: optuna.Study, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with plt.rc_context():  # keeps optuna's ggplot style out of other plots
        fig = plot(study).figure
        fig.savefig(path, dpi=110, bbox_inches="tight")
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
