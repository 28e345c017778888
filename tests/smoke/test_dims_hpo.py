"""``finescale hpo dims``: a tiny study that runs, resumes to more trials in two processes, and is analysed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import finescale

pytestmark = pytest.mark.slow

TINY_YAML = """
trainer: {epochs: 1, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 1}
model: {image_size: 64}
regress: {attention_dim: 16, head_dim: 16}
"""


def test_hpo_runs_resumes_in_parallel_and_analyzes(implants: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "hpo"
    args = ["hpo", "dims", "--out", out, "--data", implants, "--config", config]
    finescale(*args, "--n-trials", "1")
    first = json.loads((out / "hpo.json").read_text())
    assert first["n_complete"] == 1 and first["best_value"] > 0
    assert set(first["best_params"]) >= {"embedding_dim", "attention_type", "embedding_source", "lr"}
    # the same command with a larger budget continues the stored study: two more trials, one per process
    finescale(*args, "--n-trials", "3", "--parallel", "2")
    summary = json.loads((out / "hpo.json").read_text())
    assert summary["n_complete"] == 3 and len({t["run_dir"] for t in summary["trials"]}) == 3
    assert Path(first["trials"][0]["run_dir"], "best.ckpt").exists()
    result = finescale("hpo", "analyze", "--storage", f"sqlite:///{out / 'study.db'}", "--out", tmp_path / "a.json")
    assert "best value" in result.stdout and "dims-quick" in result.stdout
    assert json.loads((tmp_path / "a.json").read_text())["n_complete"] == 3
