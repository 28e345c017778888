"""The shared parts of the pipeline contract: presets, metric-key prefixes, collected scores, the CLI builder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finescale import config as config_module
from finescale.config import build_config
from finescale.errors import FinescaleError
from finescale.eval.scores import CollectedScores
from finescale.pipelines import is_run_key, prefix_metrics
from finescale.pipelines.dims.metrics import topk_accuracy
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.metrics import length_metrics


def test_a_missing_preset_file_is_an_error_not_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(config_module, "preset_path", lambda pipeline, preset: tmp_path / f"{pipeline}_{preset}.yaml")
    with pytest.raises(FinescaleError, match="ships no 'full' preset"):
        build_config(LengthConfig, preset="full")


def test_metric_keys_get_the_pipeline_prefix_and_run_keys_stay():
    old = {"avg_mae_mm": 0.6, "n": 3, "dims_model_accuracy": 0.4, "train_seconds": 9.0, "val_skipped_nan": 1}
    new = prefix_metrics("dims", old)
    assert new == {
        "dims_avg_mae_mm": 0.6,
        "dims_n": 3,
        "dims_model_accuracy": 0.4,
        "train_seconds": 9.0,
        "val_skipped_nan": 1,
    }
    assert prefix_metrics("dims", new) == new  # migrating twice changes nothing
    assert prefix_metrics("dims", {"length_mae_mm": 1.0}) == {"dims_length_mae_mm": 1.0}  # no cross-pipeline clash
    assert not is_run_key("eval_skipped_nan") and is_run_key("best_val_dims_avg_mae_mm")


def test_collected_scores_equal_the_formula_on_all_values_at_once():
    rng = np.random.default_rng(0)
    parts = []
    scores = CollectedScores(
        ("fine_mm", "bin_index", "bin_mm", "expected_mm", "regression_mm", "true_mm", "true_bin"), length_metrics
    )
    for _ in range(3):
        part = {
            "fine_mm": torch.tensor(rng.uniform(6, 16, 5), dtype=torch.float32),
            "bin_index": torch.tensor(rng.integers(0, 21, 5)),
            "bin_mm": torch.tensor(rng.uniform(6, 16, 5), dtype=torch.float32),
            "expected_mm": torch.tensor(rng.uniform(6, 16, 5), dtype=torch.float32),
            "true_mm": torch.tensor(rng.uniform(6, 16, 5), dtype=torch.float32),
            "true_bin": torch.tensor(rng.integers(0, 21, 5)),
        }  # no regression_mm: an optional head that is off
        scores.update(**part)
        parts.append(part)
    metrics = scores.compute()
    cat = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    assert metrics["length_mae_mm"] == pytest.approx(np.abs(cat["fine_mm"] - cat["true_mm"]).mean(), rel=1e-6)
    distance = np.abs(cat["bin_index"] - cat["true_bin"])
    assert metrics["length_within_1bin"] == pytest.approx((distance <= 1).mean())
    assert metrics["length_n"] == 15 and "length_mae_mm_regression" not in metrics


def test_topk_accuracy_counts_unknown_labels_as_misses():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.5, 0.3]])
    labels = torch.tensor([0, 1, -1, 1])  # right, wrong (2nd best), unknown name, right
    assert topk_accuracy(probs, labels, 1) == pytest.approx(2 / 4)
    assert topk_accuracy(probs, labels, 2) == pytest.approx(3 / 4)


def _option_names(app, verb: str) -> set[str]:
    import typer.main

    command = typer.main.get_command(app).commands[verb]
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_one_dims_config_gives_each_verb_only_its_stages_flags():
    from finescale.pipelines.dims.cli import app

    train, classify = _option_names(app, "train"), _option_names(app, "classify")
    assert "--attention-type" in train and "--target" not in train
    assert "--target" in classify and "--attention-type" not in classify
    assert "--embedders" not in train and "--stage" not in train  # set by the workflow, not by users
    assert "--mc-samples" in _option_names(app, "predict") and "--train-json" in _option_names(app, "eval")


def test_every_pipeline_cli_has_the_shared_verbs_and_flags():
    import importlib

    from finescale.pipelines import PIPELINE_NAMES

    for name in PIPELINE_NAMES:
        app = importlib.import_module(f"finescale.pipelines.{name}.cli").app
        for verb, shared in (
            ("train", {"--out", "--preset", "--resume", "--epochs", "--devices", "--strategy", "--precision"}),
            ("eval", {"--checkpoint", "--json", "--out", "--device"}),
            ("predict", {"--checkpoint", "--batch-size", "--num-workers", "--device"}),
        ):
            assert shared <= _option_names(app, verb), (name, verb)
