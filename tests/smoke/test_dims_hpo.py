"""``finescale hpo dims`` as the issue checks it: a 4-trial study with two worker processes, killed (SIGKILL, the
whole process group) after its first finished trial, run again with the same command, ends with 4 finished trials
in the same storage; ``hpo analyze`` writes the trials table, best parameters and plots."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import finescale

pytestmark = pytest.mark.slow

TINY_YAML = """
trainer: {epochs: 3, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 1}
model: {image_size: 48}
regress: {attention_dim: 16, head_dim: 16}
"""


def _finished(db: Path) -> int:
    """Finished trials, read straight from the SQLite file: one quick read-only query, so the poll sees the first
    finished trial at once (``optuna.load_study`` takes long enough, and waits on the workers' write locks, that
    the whole study could end between two polls)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            query = "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            return conn.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet, or a write in progress
        return 0


def test_hpo_killed_and_rerun_ends_with_all_trials_then_analyzes(implants: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "hpo"
    storage = f"sqlite:///{out / 'study.db'}"
    args = ["hpo", "dims", "--out", out, "--data", implants, "--config", config, "--trials", "4", "--parallel", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "finescale.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "first.log").open("w"),
        start_new_session=True,  # its own process group: the kill reaches the spawned workers too
    )
    deadline = time.time() + 400
    while proc.poll() is None and time.time() < deadline and _finished(out / "study.db") < 1:
        time.sleep(0.1)
    if proc.poll() is not None:
        log = (tmp_path / "first.log").read_text()[-3000:]
        pytest.fail(f"the study ended (exit {proc.returncode}) before it could be killed; its log:\n{log}")
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
