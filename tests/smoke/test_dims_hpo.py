"""``finescale hpo dims`` as the issue checks it: a 4-trial study with two worker processes whose parent is killed
(SIGKILL, the parent alone) after its first finished trial takes its workers with it; run again with the same
command, it finds the killed trials by their stale heartbeat, retries them with the same parameters and ends with
exactly 4 finished trials in the same storage; ``hpo analyze`` writes the trials table, best parameters and plots.
``--parallel 1`` runs the trials in the ``hpo`` process itself, draws seeded parameters and continues a study."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
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
# a heartbeat each second; a trial silent for 10 s is dead: room for a loaded CI machine (the defaults,
# 30 s / 90 s, would make the test wait minutes)
FAST_HEARTBEAT = {"FINESCALE_HPO_HEARTBEAT_S": "1", "FINESCALE_HPO_GRACE_S": "10"}
FINISHED = ("COMPLETE", "PRUNED")


def _trials(db: Path, *, polling: bool = True) -> list[dict]:
    """Every trial's number, state and whether it trains (has a heartbeat and parameters), read straight from the
    SQLite file. While the study runs (``polling``): one quick read-only query, so the poll sees the first finished
    trial at once (``optuna.load_study`` takes long enough, and waits on the workers' write locks, that the whole
    study could end between two polls); a write in progress reads as no trials yet. After a kill (``polling=False``):
    a writable connection, because a worker killed inside a write can leave a hot journal that only a writer may
    roll back (the likely reason this read once saw no finished trial), and errors are raised, not swallowed."""
    if not db.exists():
        return []
    query = """SELECT number, state, EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)
                                     AND EXISTS (SELECT 1 FROM trial_params p WHERE p.trial_id = t.trial_id)
               FROM trials t ORDER BY number"""
    uri, timeout = (f"file:{db}?mode=ro", 0.2) if polling else (f"file:{db}", 30.0)
    try:
        with sqlite3.connect(uri, uri=True, timeout=timeout) as conn:
            return [{"number": n, "state": s, "trains": bool(h)} for n, s, h in conn.execute(query)]
    except sqlite3.OperationalError:  # tables not created yet, or a write in progress
        if not polling:
            raise
        return []


def _children(pid: int) -> set[int]:
    """Live (not zombie) child processes of ``pid``."""
    rows = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,stat="], capture_output=True, text=True, check=True)
    return {int(p) for p, pp, stat in (line.split()[:3] for line in rows.stdout.splitlines()) if int(pp) == pid}


def _alive(pids: set[int]) -> set[int]:
    rows = subprocess.run(["ps", "-A", "-o", "pid=,stat="], capture_output=True, text=True, check=True)
    states = dict(line.split()[:2] for line in rows.stdout.splitlines())
    return {pid for pid in pids if not states.get(str(pid), "Z").startswith("Z")}


def _load(storage: str):
    from finescale.eval.hpo_report import load

    return load(storage)


def _assert_exactly_finished(study, n_trials: int) -> list:
    """The study holds exactly ``n_trials`` finished trials, no parameter set among them twice; returns them."""
    finished = [t for t in study.trials if t.state.name in FINISHED]
    assert len(finished) == n_trials, [(t.number, t.state.name) for t in study.trials]
    param_sets = {json.dumps(t.params, sort_keys=True) for t in finished}
    assert len(param_sets) == n_trials, "a parameter set was trained to the end twice"
    return finished


def test_hpo_killed_and_rerun_ends_with_all_trials_then_analyzes(
    implants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "hpo"
    storage = f"sqlite:///{out / 'study.db'}"
    args = ["hpo", "dims", "--out", out, "--data", implants, "--config", config, "--trials", "4", "--parallel", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "finescale.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "first.log").open("w"),
        start_new_session=True,  # its own process group: only the parent is killed, the group is there to clean up
    )
    deadline = time.time() + 700  # a loaded CI machine took over 400 s for the first trial
    running: list[int] = []
    while proc.poll() is None and time.time() < deadline:
        trials = _trials(out / "study.db")
        running = [t["number"] for t in trials if t["state"] == "RUNNING" and t["trains"]]
        if sum(t["state"] in FINISHED for t in trials) >= 1 and running:
            break
        time.sleep(0.1)
    finished_before_kill = sum(t["state"] in FINISHED for t in _trials(out / "study.db"))
    if proc.poll() is not None or not running or not finished_before_kill:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log = (tmp_path / "first.log").read_text()[-3000:]
        pytest.fail(
            f"no moment with a finished and a running trial (exit {proc.returncode}, {finished_before_kill} finished);"
            f" its log:\n{log}"
        )
    workers = _children(proc.pid)
    assert len(workers) >= 2, "--parallel 2 should run its trials in two worker processes"
    proc.send_signal(signal.SIGKILL)  # the parent alone, as a machine's OOM killer or `kill -9 <pid>` would
    proc.wait()
    left = _alive(workers)
    until = time.time() + 5
    while left and time.time() < until:
        time.sleep(0.1)
        left = _alive(workers)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"worker processes {sorted(left)} outlived the killed hpo process"
    trials = _trials(out / "study.db", polling=False)
    assert 1 <= sum(t["state"] in FINISHED for t in trials) < 4, "the study should have been killed part-way"
    # the killed trials are those still RUNNING now: one seen running before the kill may have finished in between
    running = [t["number"] for t in trials if t["state"] == "RUNNING"]
    assert running, "the kill should have caught a trial running"

    finescale(*args)  # the same command continues the stored study
    summary = json.loads((out / "hpo.json").read_text())
    assert summary["n_complete"] + summary["n_pruned"] == 4
    study = _load(storage)
    finished = _assert_exactly_finished(study, 4)
    for number in running:  # found dead by its stale heartbeat and finished once, with its parameters, by the rerun
        killed = study.trials[number]
        assert killed.state.name == "FAIL", f"killed trial {number} is {killed.state.name}"
        retries = [t for t in finished if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1
        # a trial killed part-way through sampling holds only the parameters drawn so far: the retry keeps those
        # values and draws the rest
        assert retries[0].params.items() >= killed.params.items()
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


def test_hpo_parallel_1_runs_seeded_trials_in_process_and_continues(
    implants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import optuna

    from finescale.config import build_config
    from finescale.eval.bench import TEST_METRICS
    from finescale.eval.hpo import TrialSeededSampler
    from finescale.pipelines import get_pipeline

    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "hpo"
    storage = f"sqlite:///{out / 'study.db'}"
    args = ["hpo", "dims", "--out", out, "--data", implants, "--config", config, "--parallel", "1", "--seed", "3"]

    def run(n_trials: int) -> str:
        """Run the command; returns the ``host:pid`` of its process."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "finescale.cli", *map(str, args), "--trials", str(n_trials)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        return f"{socket.gethostname()}:{proc.pid}"

    first = run(2)
    study = _load(storage)
    finished = _assert_exactly_finished(study, 2)
    # the trials ran in the hpo process itself, not in spawned workers (which would have other pids)
    assert [t.user_attrs["worker"] for t in finished] == [first, first]
    objective = get_pipeline("dims").search.objective
    for trial in finished:
        if trial.state.name == "COMPLETE":
            metrics = json.loads(Path(trial.user_attrs["run_dir"], TEST_METRICS).read_text())
            assert metrics[objective] == pytest.approx(trial.value)

    # seeded: the first trial's parameters are the ones the sampler draws for trial 0 with --seed 3
    pipeline = get_pipeline("dims")
    base = build_config(pipeline.config_class, preset="quick", config_file=config, overrides={})
    replay = optuna.create_study(sampler=TrialSeededSampler(3)).ask()
    pipeline.search.suggest(replay, base)
    assert replay.params == study.trials[0].params

    second = run(3)  # the same command asking for one more trial runs exactly one, and leaves the others alone
    study = _load(storage)
    finished = _assert_exactly_finished(study, 3)
    assert [t.user_attrs["worker"] for t in finished] == [first, first, second]


def test_processes_with_the_same_seed_draw_different_parameters_and_a_replay_draws_the_same(tmp_path: Path):
    """Two machines started with the same ``--seed`` share a study: a TPE seeded the same way in each would
    start both with the same parameter set; the per-trial seed gives each trial number its own draw."""
    import optuna

    from finescale.eval.hpo import TrialSeededSampler

    storage = f"sqlite:///{tmp_path / 'seed.db'}"
    optuna.create_study(study_name="s", storage=storage)
    machines = [optuna.load_study(study_name="s", storage=storage, sampler=TrialSeededSampler(0)) for _ in range(2)]
    draws = [m.ask().suggest_float("x", 0.0, 1.0) for m in machines]
    assert draws[0] != draws[1]
    replay = optuna.create_study(sampler=TrialSeededSampler(0))
    assert [replay.ask().suggest_float("x", 0.0, 1.0) for _ in range(2)] == draws


def test_a_trial_started_when_every_place_is_taken_is_surplus():
    """Processes racing for the last place: only the lowest-numbered trial keeps it; a failed trial frees its
    place."""
    import optuna

    from finescale.eval.hpo import SurplusTrial, _claim

    study = optuna.create_study()
    first, second, third = (study.ask() for _ in range(3))
    _claim(first, 2)
    _claim(second, 2)
    with pytest.raises(SurplusTrial):
        _claim(third, 2)
    assert study.trials[2].user_attrs["surplus"] is True
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    _claim(third, 2)


def test_a_trial_whose_process_died_before_its_first_heartbeat_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Killed between creating a trial and the heartbeat thread's first beat (a kill right after a finished
    trial hits this): Optuna's stale check skips such a trial, which would then count as running forever."""
    import optuna

    from finescale.eval.hpo_storage import SilentTrials, owed, storage_for

    monkeypatch.setenv("FINESCALE_HPO_HEARTBEAT_S", "1")
    monkeypatch.setenv("FINESCALE_HPO_GRACE_S", "2")
    storage = storage_for(f"sqlite:///{tmp_path / 'silent.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask()  # no optimize(): no heartbeat thread, as in a process killed right after ask()
    dead.suggest_float("x", 0.0, 1.0)
    silent = SilentTrials(storage)
    assert owed(study, silent) == {"finished": 0, "running": 1, "waiting": 0}
    time.sleep(1)
    assert owed(study, silent)["running"] == 1, "failed before the grace period"
    time.sleep(1.5)
    assert owed(study, silent) == {"finished": 0, "running": 0, "waiting": 1}
    retry = study.trials[1]
    assert study.trials[0].state.name == "FAIL" and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number


def test_a_live_trial_failed_as_stale_elsewhere_leaves_its_process_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A heartbeat too late under load: another process fails the still-running trial and enqueues its retry;
    Optuna then refuses the result (``Cannot tell a FAIL trial``). The process carries on and the study still
    ends with exactly the asked number of finished trials."""
    import optuna

    from finescale.eval.hpo import run_trials, storage_for

    monkeypatch.setenv("FINESCALE_HPO_HEARTBEAT_S", "1")
    monkeypatch.setenv("FINESCALE_HPO_GRACE_S", "2")
    storage = storage_for(f"sqlite:///{tmp_path / 'late.db'}")
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 0:  # what fail_stale_trials in another process does to it
            storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
            retry = getattr(storage, "get_heartbeat_stale_trial_callback", storage.get_failed_trial_callback)()
            retry(study, storage.get_trial(trial._trial_id))
        return x

    run_trials(study, storage, objective, 2)
    states = [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in study.trials]
    assert states == [(0, "FAIL", None), (1, "COMPLETE", 0), (2, "COMPLETE", None)]
    assert study.trials[1].params == study.trials[0].params
