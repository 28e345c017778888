"""Shared fixtures: a tiny synthetic implant dataset and one tiny trained run, made once per test process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two pytest workers share two cores: one thread each keeps them from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Flags that make a length run tiny: two small scales, small crops, a narrow fusion, one short epoch.
TINY_LENGTH = [
    "--scales",
    "32,48",
    "--crop-size",
    "32",
    "--fusion-dim",
    "32",
    "--batch-size",
    "8",
    "--epochs",
    "1",
    "--accelerator",
    "cpu",
    "--no-progress",
    "--checkpoint-every-n-steps",
    "1",
]


def length_train(train: Path, val: Path, out: Path, *extra: object) -> list:
    """Arguments of a tiny ``finescale length train`` run."""
    return ["length", "train", "--train-json", train, "--val-json", val, "--out", out, *TINY_LENGTH, *extra]


def finescale(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess, as a user would."""
    cmd = [sys.executable, "-m", "finescale.cli", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def implants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small radiographs with train/val/test manifests."""
    from finescale.synth.implants import generate_implants

    out = tmp_path_factory.mktemp("implants")
    generate_implants(out, n=40, seed=0, size=128, workers=1)
    return out


@pytest.fixture(scope="session")
def length_run(implants: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A length run trained for one tiny epoch through the CLI."""
    run = tmp_path_factory.mktemp("length_run")
    finescale(*length_train(implants / "train.json", implants / "val.json", run))
    return run
