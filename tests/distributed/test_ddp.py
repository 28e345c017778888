"""Two CPU processes with the gloo backend train the same model through Lightning's DDP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tests.conftest import finescale, length_train

pytestmark = pytest.mark.distributed


def test_two_process_ddp_run(implants: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    finescale(
        *length_train(
            implants / "train.json",
            implants / "val.json",
            run,
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--limit-train-batches",
            "3",
        )
    )
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    # each process trains on its own half of the data (DistributedSampler), batches of 8, last partial one dropped
    n_train = len(json.loads((implants / "train.json").read_text()))
    per_rank = math.ceil(n_train / 2)
    assert ckpt["global_step"] == min(3, per_rank // 8)
    assert per_rank // 8 < n_train // 8  # one process alone would take more steps: the split really happened
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_val_length_mae_mm"] > 0
