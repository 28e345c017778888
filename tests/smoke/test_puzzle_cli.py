"""``finescale synth puzzles`` -> ``puzzle train`` -> ``eval`` (hybrid, learned and classical) -> ``predict`` with an
overlay -> ``bench``, end to end through the CLI on a tiny generated set. Training and bench run as real processes;
``eval``, ``predict`` and the errors call the same entry point in this process (their output is the point, and a
fresh interpreter would spend most of each call importing torch); tests/contract runs them as processes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from tests.conftest import finescale, finescale_in_process

pytestmark = pytest.mark.slow

TINY = [
    "--epochs", "1", "--batch-size", "4", "--fpn-channels", "16", "--window", "128", "--piece-window", "56",
    "--piece-pixels", "48", "--accelerator", "cpu", "--no-progress",
]  # fmt: skip
TINY_YAML = """
trainer: {epochs: 1, batch_size: 4, accelerator: cpu, progress: false, limit_train_batches: 2}
model: {fpn_channels: 16}
data: {window: 128, piece_window: 56, piece_pixels: 48, puzzle_size: 128, piece_size: 48}
"""


@pytest.fixture(scope="module")
def puzzles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("puzzles")
    finescale("synth", "puzzles", "--out", out, "--n", "30", "--seed", "0", "--full-size-fraction", "0")
    return out


def test_train_eval_predict(puzzles: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["puzzle", "train", "--train-json", puzzles / "train.json", "--val-json", puzzles / "val.json"]
    finescale(*args, "--out", run, *TINY)
    assert torch.load(run / "best.ckpt", weights_only=True)["hyper_parameters"]["config"]["pipeline"] == "puzzle"

    metrics = json.loads(
        finescale_in_process("puzzle", "eval", "--checkpoint", run, "--json", puzzles / "test.json").stdout
    )
    for key in ("puzzle_position_accuracy", "puzzle_both_accuracy", "puzzle_learned_both_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert 0.0 <= metrics["puzzle_fallback_rate"] <= 1.0 and metrics["puzzle_learned_ms_per_piece"] > 0
    # an untrained model proposes poorly, the fallback search still places the easy synthetic pieces
    assert metrics["puzzle_position_accuracy"] >= 0.5
    learned = tmp_path / "learned.json"
    finescale_in_process(
        "puzzle", "eval", "--method", "learned", "--checkpoint", run, "--json", puzzles / "test.json", "--out", learned
    )
    assert "puzzle_fallback_rate" not in json.loads(learned.read_text())
    assert metrics["puzzle_ms_per_piece"] > 0 and metrics["puzzle_n"] == len(
        json.loads((puzzles / "test.json").read_text())
    )
    assert (run / "plots" / "correlation_maps.png").exists() and "Correlation maps" in (run / "report.html").read_text()

    classical = tmp_path / "classical" / "metrics.json"  # no --checkpoint: the classical matcher
    finescale_in_process("puzzle", "eval", "--json", puzzles / "test.json", "--out", classical)
    assert json.loads(classical.read_text())["puzzle_position_accuracy"] >= 0.5  # easy synthetic pieces

    record = json.loads((puzzles / "test.json").read_text())[0]
    overlay = tmp_path / "overlay.png"
    lines = finescale_in_process(
        "puzzle", "predict", "--checkpoint", run, "--puzzle", puzzles / record["puzzle"],
        puzzles / record["piece"], "--overlay", overlay,
    ).stdout.splitlines()  # fmt: skip
    result = json.loads(lines[0])
    assert len(result["box"]) == 4 and result["rotation"] in range(4) and 0 <= result["confidence"] <= 1
    assert result["method"] == "hybrid" and isinstance(result["fallback"], bool)
    for accept, falls_back in (("1", True), ("-1", False)):  # the fallback threshold reaches the predictor
        line = finescale_in_process(
            "puzzle", "predict", "--checkpoint", run, "--puzzle", puzzles / record["puzzle"],
            puzzles / record["piece"], "--accept", accept, "--proposals", "2",
        ).stdout.splitlines()[0]  # fmt: skip
        assert json.loads(line)["fallback"] is falls_back
    plain = finescale_in_process("puzzle", "predict", "--puzzle", puzzles / record["puzzle"], puzzles / record["piece"])
    assert json.loads(plain.stdout.splitlines()[0])["method"] == "classical"  # no checkpoint: no training needed
    assert overlay.stat().st_size > 1000


def test_errors_are_one_line(puzzles: Path, tmp_path: Path):
    # classical by default, which needs --out
    no_out = finescale_in_process("puzzle", "eval", "--json", puzzles / "test.json", check=False)
    assert no_out.returncode == 2 and no_out.stderr.strip().startswith("error: the classical matcher")
    no_checkpoint = finescale_in_process(
        "puzzle", "eval", "--method", "hybrid", "--json", puzzles / "test.json", check=False
    )
    assert no_checkpoint.returncode == 2 and "needs --checkpoint" in no_checkpoint.stderr
    missing = finescale_in_process(
        "puzzle",
        "predict",
        "--method",
        "classical",
        "--puzzle",
        tmp_path / "none.jpg",
        tmp_path,
        check=False,
    )
    assert missing.returncode == 2 and "not found" in missing.stderr
    wrong_method = finescale_in_process(
        "puzzle", "eval", "--json", puzzles / "test.json", "--out", tmp_path / "m.json", "--accept", "0.5", check=False
    )
    assert wrong_method.returncode == 2 and "only apply to --method hybrid" in wrong_method.stderr
    no_space = finescale_in_process("hpo", "puzzle", "--out", tmp_path / "hpo", check=False)
    assert no_space.returncode == 2 and "no hyperparameter search space" in no_space.stderr
    assert not (tmp_path / "hpo").exists()  # refused before writing anything


def test_bench_has_learned_and_classical_rows(puzzles: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "bench"
    finescale(
        "bench", "puzzle", "--out", out, "--data", puzzles, "--seeds", "0,1", "--variants", "default",
        "--config", config,
    )  # fmt: skip
    rows = {row["variant"]: row for row in json.loads((out / "bench.json").read_text())["rows"]}
    assert {"default", "classical", "classical-template"} <= set(rows)
    assert rows["default"]["puzzle_fallback_rate_mean"] is not None
    assert rows["default"]["seeds"] == [0, 1] and rows["classical"]["puzzle_ms_per_piece_mean"] > 0


def test_a_piece_larger_than_the_puzzle_is_refused(puzzles: Path, tmp_path: Path):
    """A 60x60 "puzzle" holds no 100-px piece: one error line and exit 1, not a placement with a confidence."""
    record = json.loads((puzzles / "test.json").read_text())[0]
    picture = cv2.imread(str(puzzles / record["puzzle"]))
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), cv2.resize(picture, (60, 60), interpolation=cv2.INTER_AREA))
    result = finescale_in_process("puzzle", "predict", "--puzzle", tiny, puzzles / record["piece"], check=False)
    assert result.returncode == 1 and result.stdout == "", result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "is larger than the puzzle picture" in line and "(60x60 px)" in line and record["piece"] in line
