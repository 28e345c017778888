"""The classical matcher's choice on the command line (``--matcher sift|template``): it reaches the matcher, is
refused where it means nothing, and each answer says which of SIFT and templates placed the piece; and
``benchmarks/puzzle_sift.py`` (templates alone vs SIFT + templates) runs end to end on a tiny set."""

from __future__ import annotations

import io
import json
import runpy
import sys
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
from tests.conftest import finescale_in_process

from finescale.errors import FinescaleError
from finescale.pipelines.puzzle.classical import ClassicalMatcher
from finescale.pipelines.puzzle.predict import ClassicalPredictor, puzzle_predictor, read_rgb
from finescale.pipelines.puzzle.workflow import evaluate
from finescale.synth.puzzles import generate_puzzles

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def puzzles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("puzzle_sift")
    generate_puzzles(out, n=4, seed=5, split=(1.0, 0.0, 0.0), full_size_fraction=0.0, pieces_per_puzzle=4, workers=1)
    return out


def test_matcher_option_picks_the_classical_matchers_method():
    assert puzzle_predictor(None).matcher.method == "template"  # the default since benchmarks/puzzle_sift.py
    chosen = puzzle_predictor(None, method="classical", matcher="template")
    assert isinstance(chosen, ClassicalPredictor) and chosen.matcher.method == "template"
    assert ClassicalMatcher(method="auto").method == "sift"  # the earlier name still works in Python
    with pytest.raises(FinescaleError, match="--matcher must be one of template, sift"):
        puzzle_predictor(None, matcher="orb")
    for method in ("hybrid", "learned"):  # both verify or place without the classical search: refused, not ignored
        with pytest.raises(FinescaleError, match="--matcher only applies to --method classical"):
            puzzle_predictor(None, method=method, matcher="template")
    with pytest.raises(ValueError, match="method must be one of"):
        ClassicalMatcher(method="orb")


def test_each_answer_says_what_placed_it_and_templates_never_use_sift(puzzles: Path):
    records = json.loads((puzzles / "train.json").read_text())
    puzzle = read_rgb(puzzles / records[0]["puzzle"])
    pieces = [read_rgb(puzzles / r["piece"]) for r in records if r["puzzle"] == records[0]["puzzle"]][:2]
    template = puzzle_predictor(None, matcher="template").locate(puzzle, pieces)
    sift = puzzle_predictor(None, matcher="sift").locate(puzzle, pieces)
    assert {r["matched_by"] for r in template} == {"template"}
    assert {r["matched_by"] for r in sift} <= {"sift", "template"}
    # the same pieces through the matcher itself: the predictor reports its stage unchanged
    direct = ClassicalMatcher(method="sift").match_many(puzzle, pieces)
    assert [r["matched_by"] for r in sift] == [r["method"] for r in direct]


def test_eval_takes_the_matcher(puzzles: Path, tmp_path: Path):
    metrics = evaluate(None, puzzles / "train.json", tmp_path / "template.json", matcher="template")
    assert metrics["puzzle_n"] == 4 and 0.0 <= metrics["puzzle_both_accuracy"] <= 1.0
    with pytest.raises(FinescaleError, match="--matcher only applies"):
        evaluate(None, puzzles / "train.json", tmp_path / "x.json", method="learned", matcher="template")


@pytest.mark.slow
def test_cli_predict_with_templates_only(puzzles: Path):
    record = json.loads((puzzles / "train.json").read_text())[0]
    args = ["puzzle", "predict", "--puzzle", puzzles / record["puzzle"], puzzles / record["piece"]]
    # the entry point in this process: the option's way from the command line is the point, not a fresh interpreter
    line = json.loads(finescale_in_process(*args, "--matcher", "template").stdout.splitlines()[0])
    assert line["method"] == "classical" and line["matched_by"] == "template"
    refused = finescale_in_process(*args, "--method", "hybrid", "--matcher", "template", check=False)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error: --matcher only applies")


@pytest.mark.slow
def test_benchmark_runs_tiny(tmp_path: Path):
    out = tmp_path / "sift.json"
    script = ROOT / "benchmarks" / "puzzle_sift.py"
    argv = [str(script), "--work", str(tmp_path / "work"), "--n", "12", "--n-outside", "6", "--runs", "2"]
    argv += ["--full-size-fraction", "0", "--out", str(out)]
    # run as `python benchmarks/puzzle_sift.py ...` runs it, in this process: a fresh interpreter would spend
    # longer importing torch than the benchmark takes
    stdout = io.StringIO()
    with mock.patch.object(sys, "argv", argv), redirect_stdout(stdout):
        runpy.run_path(str(script), run_name="__main__")
    table = stdout.getvalue().strip().splitlines()
    assert table[0].startswith("| set | pieces | matcher | both-correct") and len(table) == 2 + 4
    data = json.loads(out.read_text())
    rows = {(r["set"], r["matcher"]): r for r in data["rows"]}
    assert set(rows) == {(s, m) for s in ("synthetic test", "outside photos") for m in ("sift", "template")}
    outside = sum(len(json.loads(p.read_text())) for p in (tmp_path / "work" / "outside_n6").glob("*.json"))
    assert rows["outside photos", "sift"]["pieces"] == outside == 6  # all three splits of the outside set
    for (name, matcher), row in rows.items():
        runs = data["every_run"][name][matcher]
        assert len(runs) == 2 and len(row["ms_per_piece_runs"]) == 2 and row["ms_per_piece_mean"] > 0
        assert row["same_answers_every_run"] and 0.0 <= row["both_correct"] <= 1.0
        assert row["both_correct"] == pytest.approx(sum(runs[0]["solved"]) / row["pieces"])
        assert f"| {name} | {row['pieces']} | {matcher} | {row['both_correct']:.3f} |" in stdout.getvalue()
    assert rows["synthetic test", "template"]["placed_by_sift"] == 0.0
    photos = sorted(p.name for p in (tmp_path / "work" / "outside_photos").iterdir())
    assert photos == ["china.jpg", "flower.jpg", "grace_hopper.jpg"]
