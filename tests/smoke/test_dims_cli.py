"""Every ``finescale dims`` verb end to end on tiny generated data, through the real console entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tests.conftest import finescale

pytestmark = pytest.mark.slow

TINY = ["--image-size", "64", "--embedding-dim", "16", "--batch-size", "8", "--epochs", "1", "--accelerator", "cpu"]
TINY += ["--no-progress", "--checkpoint-every-n-steps", "1"]
TINY_REGRESS = ["--attention-dim", "16", "--head-dim", "16", "--mc-samples", "4"]


def data_flags(implants: Path) -> list:
    return ["--train-json", implants / "train.json", "--val-json", implants / "val.json"]


@pytest.fixture(scope="module")
def classifiers(implants: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for target in ("company", "model"):
        runs[target] = tmp_path_factory.mktemp(f"dims_{target}")
        finescale("dims", "classify", "--target", target, *data_flags(implants), "--out", runs[target], *TINY)
    return runs


@pytest.fixture(scope="module")
def regressors(implants: Path, classifiers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = {}
    for attention in ("dual", "triple", "hierarchical"):
        runs[attention] = tmp_path_factory.mktemp(f"dims_{attention}")
        finescale(
            "dims",
            "train",
            "--company-checkpoint",
            classifiers["company"] / "best.ckpt",
            "--model-checkpoint",
            classifiers["model"],
            "--attention-type",
            attention,
            *data_flags(implants),
            "--out",
            runs[attention],
            *TINY,
            *TINY_REGRESS,
        )
    return runs


def test_classifiers_store_their_vocabulary(classifiers: dict[str, Path], implants: Path):
    records = json.loads((implants / "train.json").read_text())
    for target, key in (("company", "companies"), ("model", "models")):
        config = yaml.safe_load((classifiers[target] / "config.yaml").read_text())
        assert config["stage"] == "classify" and config["classify"]["target"] == target
        assert config["data"][key] == sorted({r[target] for r in records})
        ckpt = torch.load(classifiers[target] / "best.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["hyper_parameters"]["config"]["data"][key] == config["data"][key]
        metrics = json.loads((classifiers[target] / "metrics.json").read_text())
        assert 0.0 <= metrics["best_val_top1_accuracy"] <= 1.0


def test_classifier_eval_and_predict(classifiers: dict[str, Path], implants: Path, tmp_path: Path):
    out = tmp_path / "metrics.json"
    run = classifiers["model"]
    finescale("dims", "eval", "--checkpoint", run, "--json", implants / "test.json", "--out", out)
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["top1_accuracy"] <= metrics["top5_accuracy"] <= 1.0 and metrics["n"] > 0
    image = implants / json.loads((implants / "test.json").read_text())[0]["image"]
    line = json.loads(finescale("dims", "predict", image, "--checkpoint", run).stdout.strip().splitlines()[-1])
    assert line["model"] in line["probabilities"] and sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("attention", ["dual", "triple", "hierarchical"])
def test_train_writes_the_run_directory(regressors: dict, attention: str):
    run = regressors[attention]
    for name in ("config.yaml", "best.ckpt", "last.ckpt", "metrics.json", "report.html"):
        assert (run / name).exists(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["stage"] == "regress" and config["regress"]["attention_type"] == attention
    assert set(config["embedders"]) == {"company", "model"} and config["data"]["companies"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_val_avg_mae_mm"] > 0


def test_eval_reports_unseen_combinations(regressors: dict, implants: Path, tmp_path: Path):
    out = tmp_path / "eval" / "metrics.json"
    result = finescale(
        "dims", "eval", "--checkpoint", regressors["triple"], "--json", implants / "test.json", "--out", out
    )
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    metrics = json.loads(out.read_text())
    keys = ("length_mae_mm", "diameter_mae_mm", "avg_mae_mm", "unseen_length_mae_mm", "unseen_diameter_mae_mm")
    for key in (*keys, "unseen_n", "n", "company_accuracy", "model_accuracy"):
        assert key in metrics and key in printed, key
    train = json.loads((implants / "train.json").read_text())
    test = json.loads((implants / "test.json").read_text())
    seen = {(r["model"], r["length_mm"], r["diameter_mm"]) for r in train}
    unseen = [r for r in test if (r["model"], r["length_mm"], r["diameter_mm"]) not in seen]
    assert metrics["n"] == len(test) and metrics["unseen_n"] == len(unseen) > 0
    assert metrics["unseen_length_mae_mm"] > 0
    assert (out.parent / "plots" / "length_pred_vs_true.png").exists() and (out.parent / "report.html").exists()


def test_predict_prints_sizes_names_probabilities_and_uncertainty(regressors: dict, implants: Path):
    images = [implants / r["image"] for r in json.loads((implants / "test.json").read_text())[:2]]
    result = finescale("dims", "predict", *images, "--checkpoint", regressors["hierarchical"], "--mc-samples", "5")
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["length_mm"] > 0 and line["diameter_mm"] > 0
        assert line["company"] in line["company_probabilities"] and line["model"] in line["model_probabilities"]
        assert sum(line["model_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert line["uncertainty"]["mc_samples"] == 5 and line["uncertainty"]["length_mm_std"] >= 0
        assert sum(line["attention_weights"].values()) == pytest.approx(1.0, abs=1e-3)


def test_train_without_checkpoints_trains_the_classifiers_first(implants: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["dims", "train", *data_flags(implants), "--out", run, *TINY, *TINY_REGRESS, "--limit-train-batches", "1"]
    finescale(*args)
    for sub in ("company", "model"):
        assert (run / sub / "best.ckpt").exists()
    assert (run / "best.ckpt").exists()
    result = finescale(*args, check=False)  # the run exists: refused before any training
    assert result.returncode == 2 and "--resume" in result.stderr


def test_wrong_classifier_checkpoint_is_a_one_line_error(classifiers: dict[str, Path], implants: Path, tmp_path: Path):
    result = finescale(
        "dims",
        "train",
        "--company-checkpoint",
        classifiers["model"],
        "--model-checkpoint",
        classifiers["model"],
        *data_flags(implants),
        "--out",
        tmp_path / "r",
        *TINY,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --company-checkpoint")
