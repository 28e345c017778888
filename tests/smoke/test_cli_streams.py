"""What a user piping the command line gets (issue 11): stdout carries only the result, one JSON line per answer,
and everything else (Lightning's model table, progress bars, logs) goes to stderr; loading a checkpoint says so on
stderr; ``predict`` answers the readable inputs, names each bad one and exits 1; an empty folder says what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import finescale, length_train

pytestmark = pytest.mark.slow


def json_lines(stdout: str) -> list[dict]:
    """Every line of ``stdout`` is one JSON object: no blank line, no table, no progress bar."""
    lines = stdout.splitlines()
    assert lines and all(line.startswith("{") for line in lines), f"stdout is not only JSON lines: {stdout[:300]!r}"
    return [json.loads(line) for line in lines]


def test_stdout_holds_only_the_results(implants: Path, tmp_path: Path):
    run = tmp_path / "run"
    # with the progress bar and the model table on, as a user runs it
    args = [a for a in length_train(implants / "train.json", implants / "val.json", run) if a != "--no-progress"]
    trained = finescale(*args)
    [summary] = json_lines(trained.stdout)
    assert summary["epochs_trained"] == 1
    assert "Trainable params" in trained.stderr  # Lightning's model table, on stderr

    evaluated = finescale("length", "eval", "--checkpoint", run, "--json", implants / "test.json")
    [metrics] = json_lines(evaluated.stdout)
    assert metrics["length_n"] > 0
    assert f"loading {run / 'best.ckpt'} (length)" in evaluated.stderr

    records = json.loads((implants / "test.json").read_text())[:2]
    images = [implants / r["image"] for r in records]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    predicted = finescale("length", "predict", "--checkpoint", run, images[0], broken, images[1], check=False)
    assert predicted.returncode == 1, predicted.stderr
    answers = json_lines(predicted.stdout)
    assert [a["image"] for a in answers] == [str(p) for p in images]
    assert "broken.png" in predicted.stderr and "1 of 3 inputs" in predicted.stderr
    assert f"loading {run / 'best.ckpt'} (length)" in predicted.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    nothing = finescale("length", "predict", "--checkpoint", run, empty, check=False)
    assert nothing.returncode == 2 and nothing.stdout == ""
    [line] = [line for line in nothing.stderr.splitlines() if line.startswith("error:")]
    assert f"folder {empty} holds no" in line and ".png" in line and ".jpg" in line  # and which suffixes
