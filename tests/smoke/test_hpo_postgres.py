"""``finescale hpo dims`` on PostgreSQL, as two machines share a study: a real server (the Debian binaries, in a
temporary data folder, on a free localhost port) and two ``hpo`` processes with their own ``--out`` on one study.
Machine B is SIGKILLed while it trains a trial and started again with the same command; together the processes
must end with exactly the asked number of finished trials, no parameter set finished twice, and B's killed trial
taken up again (found dead by its stale heartbeat, retried with the same parameters).

Skipped, saying why, only where no PostgreSQL server binaries are installed (``.ci/run`` installs them)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

N_TRIALS = 4
# dims kept tiny (as in test_dims_hpo.py): a trial trains a few seconds on one CPU core
TINY_YAML = """
trainer: {epochs: 3, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 1}
model: {image_size: 48}
regress: {attention_dim: 16, head_dim: 16}
"""
# a heartbeat each second; a trial silent for 10 s is dead: room for a loaded CI machine (the defaults,
# 30 s / 90 s, would make the test wait minutes)
FAST_HEARTBEAT = {"FINESCALE_HPO_HEARTBEAT_S": "1", "FINESCALE_HPO_GRACE_S": "10"}


def _server_binary(name: str) -> str | None:
    """``name`` on PATH, else in the Debian layout /usr/lib/postgresql/<version>/bin (newest version first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for this module: URL of an empty ``finescale_hpo`` database."""
    initdb, pg_ctl = _server_binary("initdb"), _server_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package")
    import psycopg2  # the driver: the dev extra installs it

    # initdb refuses to run as root: as root, run the server as the postgres user (or nobody)
    user: dict = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    root = Path(tempfile.mkdtemp(prefix="finescale-pg-"))
    data, logfile = root / "data", root / "server.log"
    if user:
        os.chown(root, user["user"], user["group"])
    port = _free_port()

    def as_server_user(*cmd: str) -> None:
        result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, **user)
        if result.returncode != 0:
            log = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}{log}")

    as_server_user(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    as_server_user(pg_ctl, "-D", str(data), "-l", str(logfile), "-o", options, "-w", "-t", "60", "start")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE finescale_hpo")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/finescale_hpo"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], cwd=root, capture_output=True, **user)
        shutil.rmtree(root, ignore_errors=True)


def _trials(url: str) -> list[dict]:
    """Every trial's number, state, worker (``host:pid`` of the process that ran it) and whether it has a
    heartbeat, read with one SQL query (no Optuna import in the polling loop)."""
    import psycopg2

    query = """
        SELECT t.number, t.state,
               (SELECT value_json FROM trial_user_attributes u WHERE u.trial_id = t.trial_id AND u.key = 'worker'),
               EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)
        FROM trials t ORDER BY t.number"""
    try:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
    except psycopg2.Error:  # tables not created yet
        return []
    return [{"number": n, "state": s, "worker": json.loads(w) if w else None, "heartbeat": h} for n, s, w, h in rows]


def test_two_machines_share_a_postgres_study_and_take_up_a_killed_trial(
    postgres_url: str, implants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from finescale.eval.bench import TEST_METRICS
    from finescale.eval.hpo_report import load, storage_url
    from finescale.pipelines import get_pipeline

    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    logs = {}

    def machine(name: str) -> subprocess.Popen:
        args = ["hpo", "dims", "--out", tmp_path / name, "--data", implants, "--config", config]
        args += ["--trials", N_TRIALS, "--parallel", 1, "--storage", postgres_url, "--seed", 0]
        logs[name] = tmp_path / f"{name}.log"
        return subprocess.Popen(
            [sys.executable, "-m", "finescale.cli", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=logs[name].open("w"),
        )

    def log_tail(name: str) -> str:
        return f"--- {name}:\n" + logs[name].read_text()[-3000:]

    host = socket.gethostname()
    a, b = machine("a"), machine("b")
    b_worker = f"{host}:{b.pid}"
    killed: list[dict] = []
    deadline = time.time() + 300
    while time.time() < deadline and a.poll() is None and b.poll() is None:
        trials = _trials(postgres_url)
        finished = sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
        b_running = [t for t in trials if t["state"] == "RUNNING" and t["worker"] == b_worker and t["heartbeat"]]
        if finished >= 1 and b_running:
            b.send_signal(signal.SIGKILL)  # machine B dies mid-trial
            b.wait()
            killed = b_running
            break
        time.sleep(0.2)
    if not killed:
        a.kill()
        b.kill()
        pytest.fail(
            "machine B never held a running trial after the first finished one\n" + log_tail("a") + log_tail("b")
        )

    b2 = machine("b2")  # B comes back with the same command
    for proc, name in ((a, "a"), (b2, "b2")):
        try:
            rc = proc.wait(timeout=400)
        except subprocess.TimeoutExpired:
            a.kill()
            b2.kill()
            pytest.fail(f"machine {name} did not finish\n" + log_tail("a") + log_tail("b2"))
        assert rc == 0, log_tail(name)

    objective = get_pipeline("dims").search.objective
    study = load(storage_url(postgres_url))  # SQLAlchemy >= 2.1 needs the psycopg2 driver named
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == N_TRIALS, [(t.number, t.state.name) for t in study.trials]
    param_sets = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(set(param_sets)) == N_TRIALS, "a parameter set was trained to the end twice"
    for name in ("a", "b2"):  # each machine's own summary sees the whole study
        summary = json.loads((tmp_path / name / "hpo.json").read_text())
        assert summary["n_complete"] + summary["n_pruned"] == N_TRIALS
    for trial in finished:  # each value is the objective of the run folder of the machine that ran the trial
        if trial.state.name == "COMPLETE":
            metrics = json.loads(Path(trial.user_attrs["run_dir"], TEST_METRICS).read_text())
            assert metrics[objective] == pytest.approx(trial.value)

    # B's trial: failed by its stale heartbeat, then finished once, with the same parameters, by a live machine
    by_number = {t.number: t for t in study.trials}
    for dead in killed:
        trial = by_number[dead["number"]]
        assert trial.state.name == "FAIL", f"killed trial {trial.number} is {trial.state.name}"
        taken_up = [t for t in finished if t.params == trial.params]
        assert len(taken_up) == 1, f"killed trial {trial.number} was not taken up again exactly once"
        assert taken_up[0].system_attrs.get("failed_trial") == trial.number
        assert taken_up[0].user_attrs["worker"] != b_worker
    # the only other failures allowed are trials that never trained (started when no place was left)
    others = [t for t in study.trials if t.state.name == "FAIL" and t.number not in {d["number"] for d in killed}]
    assert all(t.user_attrs.get("surplus") and not t.params for t in others), [t.number for t in others]

    per_process = Counter(t.user_attrs["worker"] for t in finished)
    workers = {f"{host}:{a.pid}": "a", b_worker: "b", f"{host}:{b2.pid}": "b2"}
    assert set(per_process) <= set(workers), per_process
    report = {workers[w]: n for w, n in per_process.items()}
    print(f"\nfinished trials per process: {report}; failed: {len(killed)} killed + {len(others)} surplus")
