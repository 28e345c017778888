"""``finescale hpo dims`` as the issue checks it: a 4-trial study with two worker processes, killed (SIGKILL, the
whole process group) after its first finished trial, run again with the same command, ends with 4 finished trials
in the same storage; ``hpo analyze`` writes the trials table, best parameters and plots."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy.exc import OperationalError
from tests.conftest import finescale

pytestmark = pytest.mark.slow

TINY_YAML = """
trainer: {epochs: 2, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 1}
model: {image_size: 48}
regress: {attention_dim: 16, head_dim: 16}
"""
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _finished(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        study = optuna.load_study(study_name="dims-quick", storage=f"sqlite:///{db}")
    except (KeyError, OperationalError):  # the study or its tables are not created yet
        return 0
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def test_hpo_killed_and_rerun_ends_with_all_trials_then_analyzes(implants: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "hpo"
    storage = f"sqlite:///{out / 'study.db'}"
    args = ["hpo", "dims", "--out", out, "--data", implants, "--config", config, "--trials", "4", "--parallel", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "finescale.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches the spawned workers too
    )
    deadline = time.time() + 400
    while proc.poll() is None and time.time() < deadline and _finished(out / "study.db") < 1:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= _finished(out / "study.db") < 4, "the study should have been killed part-way"

    finescale(*args)  # the same command continues the stored study
    summary = json.loads((out / "hpo.json").read_text())
    assert summary["n_complete"] + summary["n_pruned"] == 4
    assert set(summary["best_params"]) >= {"embedding_dim", "attention_type", "embedding_source", "lr"}
    assert Path(summary["best_run_dir"], "best.ckpt").exists()

    analysis = tmp_path / "analysis"
    result = finescale("hpo", "analyze", "--storage", storage, "--out", analysis)
    assert "best value" in result.stdout and "dims-quick" in result.stdout
    rows = list(csv.DictReader((analysis / "trials.csv").open()))
    assert sum(r["state"] in ("complete", "pruned") for r in rows) == 4 and "attention_type" in rows[0]
    assert json.loads((analysis / "best_params.json").read_text())["params"] == summary["best_params"]
    assert (analysis / "optimization_history.png").stat().st_size > 1000
    assert (analysis / "param_importances.png").stat().st_size > 1000
