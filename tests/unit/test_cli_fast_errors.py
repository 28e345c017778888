"""Mistakes that need no model are reported before torch, Lightning or timm are imported (issue 11: a bad flag took
15-20 s on a busy machine, most of it importing them): each case runs the real entry point in a fresh interpreter and
checks the one error line, the exit status 2, and that none of those modules was loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "lightning", "timm")
# the console entry point, then the heavy modules this interpreter loaded (printed even when it exits with an error)
PROBE = (
    "import runpy, sys\n"
    "sys.argv = ['finescale', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('finescale.cli', run_name='__main__')\n"
    "finally:\n"
    f"    print('heavy modules:', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def probe(*args: object) -> tuple[int, list[str], str]:
    """(exit status, stderr lines before the probe's own, the probe's line)."""
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=120)
    *lines, heavy = result.stderr.strip().splitlines()
    return result.returncode, lines, heavy


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "train.json").write_text(json.dumps([{"image": "a.png", "length_mm": 10.0}]))
    (tmp_path / "val.json").write_text(json.dumps([{"image": "a.png", "length_mm": 10.0}]))
    (tmp_path / "broken.json").write_text("[{")
    return tmp_path


def train(data: Path, *extra: object) -> list[object]:
    manifests = ["--train-json", data / "train.json", "--val-json", data / "val.json"]
    return ["length", "train", *manifests, "--out", data / "run", *extra]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--epochs", "-1"], "invalid value for --epochs (-1)"),
        (["--batch-size", "0"], "invalid value for --batch-size (0)"),
        (["--limit-train-batches", "1.5"], "invalid value for --limit-train-batches (1.5)"),
        (["--train-json", "missing.json"], "manifest file missing.json does not exist"),
        (["--val-json", "BROKEN"], "is not valid JSON"),
        (["--resume"], "--resume given but"),
    ],
)
def test_train_errors_come_before_the_heavy_imports(data: Path, extra: list[str], expected: str):
    extra = [str(data / "broken.json") if e == "BROKEN" else e for e in extra]
    status, lines, heavy = probe(*train(data, *extra))
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert heavy == "heavy modules: []"
    assert not (data / "run").exists()


def test_a_run_directory_holding_a_run_is_refused_before_the_heavy_imports(data: Path):
    (data / "run").mkdir()
    (data / "run" / "last.ckpt").write_bytes(b"x")
    status, lines, heavy = probe(*train(data))
    assert status == 2 and lines == [
        f"error: {data / 'run'} already holds a run; pass --resume to continue it or choose another --out"
    ]
    assert heavy == "heavy modules: []"


def test_eval_and_predict_errors_come_before_the_heavy_imports(data: Path):
    # a run of another pipeline (its config.yaml says which)
    other = data / "dims_run"
    other.mkdir()
    (other / "config.yaml").write_text("pipeline: dims\n")
    (other / "best.ckpt").write_bytes(b"x")
    cases = [
        (["length", "eval", "--checkpoint", data / "nope", "--json", data / "val.json"], "does not exist"),
        (["length", "eval", "--checkpoint", other, "--json", data / "missing.json"], "missing.json does not exist"),
        (["length", "eval", "--checkpoint", other, "--json", data / "val.json"], "is a dims checkpoint, not a length"),
        (["length", "predict", "--checkpoint", other, data / "x.png"], "is a dims checkpoint, not a length one"),
        (["length", "predict", "--checkpoint", data, data / "x.png"], "holds no best.ckpt or last.ckpt"),
    ]
    for args, expected in cases:
        status, lines, heavy = probe(*args)
        assert status == 2 and len(lines) == 1 and expected in lines[0], (args, lines)
        assert heavy == "heavy modules: []", args
