"""The defects verbs end to end on tiny synthetic tools, as a user runs them: an iteration-based Soft Teacher run killed
mid-training and finished with --resume (teacher restored), eval writing a COCO results file that `score` scores to
the same numbers, predict with overlays and the student's weights, the anchors analysis and the group helper.
Training (killed, resumed, refused) runs as real processes; the other verbs, whose output is the point here, call the
same entry point in this process. (train/eval/predict/load on the smoke config run as processes in tests/contract.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import finescale, finescale_in_process

from finescale.pipelines import get_pipeline

pytestmark = pytest.mark.slow

TINY = {**get_pipeline("defects").smoke, "epochs": 1000, "max_steps": 6, "val_every_n_steps": 3}


def flags(overrides: dict) -> list[str]:
    out: list[str] = []
    for name, value in overrides.items():
        out += ["--" + name.replace("_", "-"), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tools")
    finescale("synth", "defects", "--out", out, "--n", 12)
    return out


def train_args(data: Path, run: Path) -> list:
    return [
        "defects", "train", "--out", run, "--train-json", data / "train.json", "--val-json", data / "val.json",
        "--unlabeled-json", data / "unlabeled.json", *flags(TINY), "--accelerator", "cpu", "--no-progress",
        "--checkpoint-every-n-steps", "1",
    ]  # fmt: skip


def test_soft_teacher_run_killed_then_resumed_to_max_steps(tools: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = train_args(tools, run)
    proc = subprocess.Popen(
        [sys.executable, "-m", "finescale.cli", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (run / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    killed = torch.load(run / "last.ckpt", weights_only=True)
    assert 0 < killed["global_step"] < TINY["max_steps"]
    assert any(k.startswith("teacher.") for k in killed["state_dict"])  # the EMA teacher travels in checkpoints

    summary = json.loads(finescale("defects", "train", "--out", run, "--resume").stdout)
    assert summary["global_step"] == TINY["max_steps"]
    final = torch.load(run / "last.ckpt", weights_only=True)["state_dict"]
    student = {k[len("model.") :]: v for k, v in final.items() if k.startswith("model.")}
    teacher = {k[len("teacher.") :]: v for k, v in final.items() if k.startswith("teacher.")}
    assert student.keys() == teacher.keys()
    moved = [k for k in student if student[k].is_floating_point() and not torch.equal(student[k], teacher[k])]
    assert moved, "the teacher should lag the student (EMA), not equal it"
    # the seed's monitoring reached the CSV log: loss CV needs a full window, so here the kept ratio and memory
    log = (run / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/peak_memory_mb" in log and "val/defects_map" in log and "train/kept_ratio" in log

    # eval writes a standard COCO results file; `score` gives the same numbers from it
    metrics = json.loads(
        finescale_in_process("defects", "eval", "--checkpoint", run, "--json", tools / "test.json").stdout
    )
    results = run / "detections_test.json"
    assert isinstance(json.loads(results.read_text()), list)
    scored = json.loads(finescale_in_process("defects", "score", "--gt", tools / "test.json", "--dets", results).stdout)
    assert scored["map"] == pytest.approx(metrics["defects_map"], abs=1e-9)
    assert "defects_efficiency_severe_rust" in metrics

    # predict: one tool's views from a folder-free file list, the student's weights, overlays drawn
    images = json.loads((tools / "test.json").read_text())["images"]
    first = sorted((im for im in images if im["group_id"] == images[0]["group_id"]), key=lambda im: im["view"])
    views = [tools / im["file_name"] for im in first]
    overlays = tmp_path / "overlays"
    cli = finescale_in_process(
        "defects", "predict", "--checkpoint", run, "--predict-with", "student", "--overlays", overlays, *views
    )
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [line["view"] for line in lines] == list(range(len(views)))
    assert all(set(line) >= {"image", "tool", "boxes", "labels", "scores"} for line in lines)
    assert len(list(overlays.glob("*.png"))) == len(views)


def test_anchors_table_and_group_helper(tools: Path, tmp_path: Path):
    result = finescale_in_process("defects", "anchors", "--json", tools / "train.json")
    report = json.loads(result.stdout)
    assert "Severe_Rust" in result.stderr  # the table, on stderr
    rows = {row["class"]: row for row in report["rows"]}  # the JSON side: every class, both ratio sets
    assert {"Severe_Rust", "Chipped", "all"} <= set(rows)
    assert 0 <= rows["all"]["cover_0.5_default"] <= 1 and 0 <= rows["all"]["cover_0.5_targeted"] <= 1

    # a COCO file without the view-group fields is refused with the way out; `group` fills them from file names
    coco = json.loads((tools / "val.json").read_text())
    truth = {im["id"]: (im["group_id"], im["view"]) for im in coco["images"]}
    for image in coco["images"]:
        del image["group_id"], image["view"]
    stripped, grouped = tools / "stripped.json", tools / "grouped.json"  # file names are relative to the data
    stripped.write_text(json.dumps(coco))
    run = tmp_path / "run"
    refused = finescale(*train_args(tools, run)[:2], "--out", run, "--train-json", stripped, "--val-json", stripped,
                        "--no-semi-supervised", "--no-progress", check=False)  # fmt: skip
    assert refused.returncode == 2 and "finescale defects group" in refused.stderr
    counts = json.loads(finescale_in_process("defects", "group", "--json", stripped, "--out", grouped,
                                             "--pattern", r"t(?P<group>\d+)_v(?P<view>\d+)").stdout)  # fmt: skip
    assert counts["matched"] == len(truth) and counts["unmatched"] == 0
    filled = json.loads(grouped.read_text())["images"]
    views = {im["id"]: im["view"] for im in filled}
    assert views == {i: view for i, (_, view) in truth.items()}
    same_tool = {}
    for im in filled:  # group ids may be renamed, but the partition into tools must be the same
        same_tool.setdefault(im["group_id"], set()).add(truth[im["id"]][0])
    assert all(len(tools_) == 1 for tools_ in same_tool.values())
