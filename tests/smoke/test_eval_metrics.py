"""metrics.json stays true: each evaluation is kept apart under its manifest, a later one never inherits an earlier
one's keys, and the report names the manifest of every number (training summary and test metrics apart). ``eval``
runs in this process: what it prints and writes is the point (tests/contract runs it as a process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import finescale_in_process

from finescale.pipelines import is_run_key

pytestmark = pytest.mark.slow


def test_each_evaluation_is_kept_apart_under_its_manifest(length_run: Path, implants: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(length_run, run)
    records = [{**r, "image": str(implants / r["image"])} for r in json.loads((implants / "test.json").read_text())]
    broken = tmp_path / "broken.json"  # the test records and one whose image is missing
    broken.write_text(json.dumps([*records, {**records[0], "image": str(tmp_path / "gone.png")}]))
    short = tmp_path / "short.json"
    short.write_text(json.dumps(records[:3]))
    before = json.loads((run / "metrics.json").read_text())

    first = json.loads(finescale_in_process("length", "eval", "--checkpoint", run, "--json", broken).stdout)
    assert first["length_eval_skipped_missing_file"] == 1 and first["length_n"] == len(records)
    printed = json.loads(finescale_in_process("length", "eval", "--checkpoint", run, "--json", short).stdout)

    stored = json.loads((run / "metrics.json").read_text())
    # stdout and metrics.json hold that evaluation only: no training summary, nothing from the other manifest
    assert printed == stored["eval"][short.as_posix()] and printed["length_n"] == 3
    assert "length_eval_skipped_missing_file" not in printed
    assert stored["eval"][broken.as_posix()] == first  # the earlier evaluation stays, under its own manifest
    assert {k: v for k, v in stored.items() if k != "eval"} == before  # the training summary is untouched
    assert all(is_run_key(k) for k in before)

    # the same manifest again replaces its entry as a whole
    records[0]["image"] = str(tmp_path / "gone.png")
    short.write_text(json.dumps(records[:3]))
    again = json.loads(finescale_in_process("length", "eval", "--checkpoint", run, "--json", short).stdout)
    stored = json.loads((run / "metrics.json").read_text())
    assert stored["eval"][short.as_posix()] == again and again["length_n"] == 2
    assert again["length_eval_skipped_missing_file"] == 1 and len(stored["eval"]) == 2

    page = (run / "report.html").read_text()
    assert "Training summary" in page and "Test metrics" in page
    summary, tests = page.index("Training summary"), page.index("Test metrics")
    assert short.as_posix() in page[tests:] and broken.as_posix() in page[tests:]
    assert "train_seconds" in page[summary:tests] and "<td>length_mae_mm</td>" not in page[summary:tests]
    assert "<td>length_mae_mm</td>" in page[tests:]


def test_training_again_drops_evaluations_of_the_old_checkpoint(tmp_path: Path):
    from finescale.engine.run import save_evaluation, write_training_summary

    metrics = tmp_path / "metrics.json"
    write_training_summary(metrics, {"train_seconds": 1.0, "epochs_trained": 1})
    assert save_evaluation(metrics, "a/test.json", {"length_n": 3}, run_dir=tmp_path)
    assert save_evaluation(metrics, "b/test.json", {"length_n": 4}, run_dir=tmp_path)
    assert json.loads(metrics.read_text())["eval"] == {"a/test.json": {"length_n": 3}, "b/test.json": {"length_n": 4}}
    write_training_summary(metrics, {"train_seconds": 2.0, "epochs_trained": 2})
    assert json.loads(metrics.read_text()) == {"train_seconds": 2.0, "epochs_trained": 2}

    # an --out file of its own holds one evaluation, replaced as a whole
    own = tmp_path / "elsewhere" / "learned.json"
    assert not save_evaluation(own, "a/test.json", {"length_n": 3, "length_eval_skipped_nan": 1}, run_dir=tmp_path)
    assert not save_evaluation(own, "a/test.json", {"length_n": 2}, run_dir=tmp_path)
    assert json.loads(own.read_text()) == {"length_n": 2}
    # flat evaluation keys of an older metrics.json name no manifest: they do not survive a new evaluation
    metrics.write_text(json.dumps({"train_seconds": 2.0, "length_n": 9, "eval_skipped_missing_file": 1}))
    save_evaluation(metrics, "a/test.json", {"length_n": 3}, run_dir=None)
    assert json.loads(metrics.read_text()) == {"train_seconds": 2.0, "eval": {"a/test.json": {"length_n": 3}}}
