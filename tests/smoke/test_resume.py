"""A run killed mid-training (SIGKILL, nothing graceful) finishes with --resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tests.conftest import finescale, length_train

pytestmark = pytest.mark.slow


def test_killed_run_finishes_with_resume(implants: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = length_train(implants / "train.json", implants / "val.json", run, "--epochs", 4, "--batch-size", 4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "finescale.cli", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (run / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # let the first checkpoint finish writing
    proc.kill()
    proc.wait()
    assert (run / "last.ckpt").exists(), "training never wrote last.ckpt"
    killed = torch.load(run / "last.ckpt", weights_only=True)
    step_at_kill = killed["global_step"]
    seconds_at_kill = killed["callbacks"]["TrainingClock"]["seconds"]
    assert seconds_at_kill > 0

    refused = finescale(*args, check=False)  # without --resume the run directory is protected
    assert refused.returncode == 2 and "--resume" in refused.stderr

    finescale(*args, "--resume")
    final = torch.load(run / "last.ckpt", weights_only=True)
    assert final["epoch"] == 3 and final["global_step"] > step_at_kill
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 4
    assert metrics["train_seconds"] > seconds_at_kill  # the time before the kill counts too


def test_sigterm_stops_with_one_line_each_and_resume_reads_the_runs_config(implants: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = length_train(implants / "train.json", implants / "val.json", run, "--epochs", 50, "--batch-size", 4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "finescale.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (run / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)

    # killed, not done: the shell's status for SIGTERM, nothing on stdout, one line saying how to continue
    assert proc.returncode == 143, err
    assert out == ""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: training stopped by SIGTERM") and "--resume" in lines[-1], err
    # every log line printed once (Lightning's own handler used to print each a second time, untimestamped)
    assert sum("Received SIGTERM" in line for line in lines) == 1, err
    assert len(lines) == len(set(lines)), err

    # --resume needs neither the manifests nor the tiny model's flags again: the run's config.yaml has them; a flag
    # given on top still applies (one epoch instead of 50)
    resumed = json.loads(finescale("length", "train", "--out", run, "--resume", "--epochs", 1).stdout)
    assert resumed["epochs_trained"] == 1
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["scales"] == [32, 48] and config["trainer"]["epochs"] == 1
    assert config["train_json"] == str(implants / "train.json")
