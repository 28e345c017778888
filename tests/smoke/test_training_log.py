"""A training run whose epochs are shorter than the logging interval (``log_every_n_steps`` 10) still logs its
training loss, once per epoch, to the CSV log, to TensorBoard and so to the report's loss curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from finescale.eval import curves as curve_plots

pytestmark = pytest.mark.slow


def test_short_epochs_log_the_training_loss_everywhere(length_run: Path):
    config = yaml.safe_load((length_run / "config.yaml").read_text())
    summary = json.loads((length_run / "metrics.json").read_text())
    steps = math.ceil(summary["train_n_valid"] / config["trainer"]["batch_size"])
    assert steps < config["trainer"]["log_every_n_steps"]  # the case: no per-step row is ever written

    log = curve_plots.read_csv_log(length_run / "logs" / "csv" / "metrics.csv")
    epochs = summary["epochs_trained"]
    assert len(log["train/loss_epoch"]) == epochs and all(v > 0 for _, v in log["train/loss_epoch"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(length_run / "logs" / "tb"))
    events.Reload()
    assert "train/loss_epoch" in events.Tags()["scalars"]
    assert len(events.Scalars("train/loss_epoch")) == epochs

    # the report's loss figure: training and validation loss together, one point each per epoch
    curves = [c for c in curve_plots.loss_curves(log) if c.panel == "loss"]
    assert {(c.split, c.kind) for c in curves} == {("train", "epoch"), ("val", "epoch")}
    assert all(c.xs.tolist() == [float(e + 1) for e in range(epochs)] for c in curves)
