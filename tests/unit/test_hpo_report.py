import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from finescale.eval.hpo_report import history_axes, importance_axes, summarize, write_analysis

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "width": IntDistribution(8, 64)}


def study_with_pruned_trials() -> optuna.Study:
    study = optuna.create_study(study_name="toy", direction="minimize")
    rng = np.random.default_rng(0)
    for i in range(30):
        params = {"lr": float(10 ** rng.uniform(-4, -1)), "width": int(rng.integers(8, 65))}
        if i in (3, 17):
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=SPACE, state=optuna.trial.TrialState.PRUNED)
            )
        else:  # the objective depends on lr only: lr must come out as the important parameter
            value = (np.log10(params["lr"]) + 2.5) ** 2 + 0.001 * params["width"] / 64
            study.add_trial(optuna.trial.create_trial(params=params, distributions=SPACE, value=value))
    return study


def test_history_plot_shows_each_complete_trial_and_the_best_so_far():
    study = study_with_pruned_trials()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    with plt.rc_context():
        ax = history_axes(study)
        points = ax.collections[0].get_offsets()
        np.testing.assert_allclose(points, [[t.number, t.value] for t in done])
        best = next(line for line in ax.lines if len(line.get_xdata()) > 2)  # the axvlines have two points
        running = [min(t.value for t in done if t.number <= n) for n in range(30)]  # pruned: best before them
        np.testing.assert_allclose(best.get_xdata(), range(30))
        np.testing.assert_allclose(best.get_ydata(), running)
        pruned = sorted({line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 2})
        assert pruned == [3, 17]
        plt.close(ax.figure)


def test_importance_plot_shows_the_summarys_importances():
    study = study_with_pruned_trials()
    summary = summarize(study)
    assert max(summary["importances"], key=summary["importances"].get) == "lr"
    with plt.rc_context():
        ax = importance_axes(study)
        bars = {
            label.get_text(): patch.get_width() for label, patch in zip(ax.get_yticklabels(), ax.patches, strict=True)
        }
        plt.close(ax.figure)
    assert bars == pytest.approx(summary["importances"], abs=1e-4)


def test_write_analysis_keeps_the_file_names_and_leaves_the_global_style_alone(tmp_path: Path):
    style = dict(plt.rcParams)
    summary = summarize(study_with_pruned_trials())
    paths = write_analysis(summary, tmp_path)
    names = {p.name for p in paths}
    assert names == {
        "analysis.json",
        "trials.csv",
        "best_params.json",
        "optimization_history.png",
        "param_importances.png",
    }
    assert all((tmp_path / n).stat().st_size > 1000 for n in names if n.endswith(".png"))
    assert json.loads((tmp_path / "analysis.json").read_text())["n_pruned"] == 2
    assert dict(plt.rcParams) == style  # optuna's ggplot style stayed inside the plots
