"""``finescale bench`` and ``finescale demo`` end to end on tiny generated data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.conftest import finescale, finescale_in_process

pytestmark = pytest.mark.slow

TINY_YAML = """
trainer: {epochs: 1, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 2}
model: {scales: [32, 48], crop_size: 32, fusion_dim: 32}
"""


def test_bench_writes_the_table_and_resumes(implants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "bench"
    monkeypatch.chdir(tmp_path)  # relative paths, as typed: the reuse below runs from another directory
    options = [
        "--seeds",
        "0,1",
        "--variants",
        "baseline,+crops,recipe",
        "--config",
        config,
    ]
    finescale("bench", "length", "--out", "bench", "--data", os.path.relpath(implants), *options)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["pipeline"] == "length" and bench["preset"] == "quick"
    rows = {row["variant"]: row for row in bench["rows"]}
    assert {"baseline", "+crops", "recipe", "pixel_extent_lstsq"} <= set(rows)
    for name in ("baseline", "+crops", "recipe"):
        assert rows[name]["seeds"] == [0, 1]
        assert rows[name]["length_mae_mm_mean"] > 0 and rows[name]["length_mae_mm_std"] >= 0
        assert rows[name]["train_seconds_mean"] > 0
    baseline_cfg = (out / "runs" / "baseline" / "seed0" / "config.yaml").read_text()
    assert "use_crops: false" in baseline_cfg and "smooth_sigma: 0.0" in baseline_cfg
    assert "| recipe |" in (out / "bench.md").read_text() and (out / "bench.png").exists()
    # a second call reuses the finished runs instead of training again (in this process: it has nothing to train),
    # also when the same folders are named from another working directory
    monkeypatch.chdir(out)
    args = ["bench", "length", "--out", ".", "--data", os.path.relpath(implants), *options]
    stamp = (out / "runs" / "recipe" / "seed1" / "best.ckpt").stat().st_mtime
    finescale_in_process(*args)
    assert (out / "runs" / "recipe" / "seed1" / "best.ckpt").stat().st_mtime == stamp
    # a bench of one variant into the same folder keeps the table's other rows, in their order, values unchanged
    finescale_in_process(
        "bench",
        "length",
        "--out",
        ".",
        "--data",
        os.path.relpath(implants),
        *options[:2],
        "--variants",
        "+crops",
        *options[4:],
    )
    again = json.loads((out / "bench.json").read_text())["rows"]
    assert [row["variant"] for row in again] == [row["variant"] for row in bench["rows"]]
    assert again == bench["rows"]
    # a finished run is reused only for the config it was trained with: another schedule is refused in one line
    config.write_text(TINY_YAML.replace("epochs: 1", "epochs: 2"))
    refused = finescale_in_process(*args, check=False)
    assert refused.returncode != 0 and "trainer.epochs: 1 -> 2" in refused.stderr
    assert (out / "runs" / "recipe" / "seed1" / "best.ckpt").stat().st_mtime == stamp


DEMO_YAML = """
length:
  trainer: {epochs: 1, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 2}
  model: {scales: [32, 48], crop_size: 32, fusion_dim: 32}
dims:
  trainer: {epochs: 1, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 2}
  model: {image_size: 48}
  regress: {attention_dim: 16, head_dim: 16, mc_samples: 2}
puzzle:
  trainer: {epochs: 1, batch_size: 4, accelerator: cpu, progress: false, limit_train_batches: 2}
  model: {fpn_channels: 16}
  data: {window: 128, piece_window: 56, piece_pixels: 48}
"""


def test_demo_writes_report_and_metrics(tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(DEMO_YAML)
    out = tmp_path / "demo"
    finescale("demo", "--out", out, "--n", "30", "--config", config, "--tasks", "length,dims,puzzle")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["length_mae_mm"] > 0 and metrics["length_n_test"] > 0
    assert metrics["dims_avg_mae_mm"] > 0 and metrics["dims_n_test"] > 0
    report = (out / "report.html").read_text()
    assert "length" in report and "dims" in report
    assert (out / "length" / "report.html").exists() and (out / "dims" / "report.html").exists()
    assert 0 <= metrics["puzzle_both_accuracy"] <= 1 and "puzzle" in report
    overlays = list((out / "puzzle" / "plots").glob("overlay_hybrid_*.png"))
    assert overlays and all(o.name in (out / "puzzle" / "report.html").read_text() for o in overlays)
