"""Shared fixtures: a tiny synthetic implant dataset and one tiny trained run, made once per test process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

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


def finescale_in_process(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    """The same entry point (``finescale.cli.main``: verbs, options, ``error:`` lines, exit status) called in this
    process, for checks of what a verb prints or writes: it spares the ~5 s a fresh interpreter spends importing
    torch and Lightning. Only for calls that train nothing (``eval``, ``predict``, a bench whose runs are all done,
    an error raised before training): training sets global state (seeds, deterministic mode, signal handlers), and
    checks of a process as a whole (its streams, log lines, exit on a signal) need :func:`finescale`. Logging goes
    to pytest's capture here, not to ``stderr``."""
    from finescale import cli

    argv = ["finescale", *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    # main() registers the pipeline, synth and hpo verbs on the module's apps each call: put them back afterwards
    registered = [(cli.app.registered_groups, list(cli.app.registered_groups))]
    registered += [
        (typer_app.registered_commands, list(typer_app.registered_commands))
        for typer_app in (cli.synth_app, cli.hpo_app)
    ]
    try:
        with mock.patch.object(sys, "argv", argv), redirect_stdout(stdout), redirect_stderr(stderr):
            cli.main()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        for items, before in registered:
            items[:] = before
    result = subprocess.CompletedProcess(argv, status, stdout.getvalue(), stderr.getvalue())
    if check and status != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({status}) in process:\n{result.stderr[-4000:]}")
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
