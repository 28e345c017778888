"""Every ``finescale dims`` verb end to end on tiny generated data, through the real console entry point: training as
a real process; ``eval`` and ``predict``, whose output is the point here, in this process (tests/contract runs them as
processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests.conftest import finescale, finescale_in_process

from finescale.pipelines import get_pipeline

pytestmark = pytest.mark.slow

TINY = ["--image-size", "64", "--embedding-dim", "16", "--batch-size", "8", "--epochs", "1", "--accelerator", "cpu"]
TINY += ["--no-progress", "--checkpoint-every-n-steps", "1"]
TINY_REGRESS = ["--attention-dim", "16", "--head-dim", "16", "--mc-samples", "4"]


# The shared runs validate on the training manifest: the 40-image set leaves one image for val, too few for the
# validation scores of training to be checked against anything.
VAL = "train"


def data_flags(implants: Path, val: str = "val") -> list:
    return ["--train-json", implants / "train.json", "--val-json", implants / f"{val}.json"]


def count_key() -> str:
    """The key of the number of images scored: the metrics' common prefix + ``n``."""
    return os.path.commonprefix(list(get_pipeline("dims").bench_metrics)) + "n"


def bench_metric(*words: str) -> str:
    """The dims metric name (from the pipeline's ``bench_metrics``, never spelled out here) holding every word;
    an ``unseen`` or ``raw`` (before snapping) one only when asked."""
    names = [m for m in get_pipeline("dims").bench_metrics if all(w in m for w in words)]
    names = [m for m in names if all((kind in m) == (kind in words) for kind in ("unseen", "raw"))]
    assert len(names) == 1, (words, names)
    return names[0]


def key_ending(metrics: dict, suffix: str, prefix: str = "") -> str:
    """The one key of ``metrics`` that starts with ``prefix`` and ends with ``suffix``."""
    keys = [k for k in metrics if k.startswith(prefix) and k.endswith(suffix)]
    assert len(keys) == 1, (prefix, suffix, sorted(metrics))
    return keys[0]


def predict_lines(run: Path, images: list[Path], *extra: object) -> list[dict]:
    result = finescale_in_process("dims", "predict", *images, "--checkpoint", run, *extra)
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [Path(line["image"]).name for line in lines] == [Path(i).name for i in images]
    return lines


def read_manifest(implants: Path, split: str) -> tuple[list[dict], list[Path]]:
    records = json.loads((implants / f"{split}.json").read_text())
    return records, [implants / r["image"] for r in records]


@pytest.fixture(scope="module")
def from_scratch(implants: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """(run, its command) of ``dims train`` given neither classifier checkpoint: it trains both classifiers into its
    run (``company/``, ``model/``), then the dual-attention regressor on them. One process for three trainings, and
    the tests share its parts: its company classifier and its regressor."""
    run = tmp_path_factory.mktemp("dims_dual")
    args = ["dims", "train", "--attention-type", "dual", *data_flags(implants, VAL), "--out", run, *TINY, *TINY_REGRESS]
    finescale(*args)
    return run, args


@pytest.fixture(scope="module")
def classifiers(
    implants: Path, from_scratch: tuple[Path, list], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The company classifier that ``dims train`` made; the model classifier from the ``dims classify`` verb."""
    runs = {"company": from_scratch[0] / "company", "model": tmp_path_factory.mktemp("dims_model")}
    finescale("dims", "classify", "--target", "model", *data_flags(implants, VAL), "--out", runs["model"], *TINY)
    return runs


@pytest.fixture(scope="module")
def regressors(
    implants: Path,
    from_scratch: tuple[Path, list],
    classifiers: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict:
    runs = {"dual": from_scratch[0]}
    for attention in ("triple", "hierarchical"):  # on the classifiers given as a checkpoint file and as a run
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
            *data_flags(implants, VAL),
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
        # the validation accuracy of training is the share of val images that ``predict`` names right
        metrics = json.loads((classifiers[target] / "metrics.json").read_text())
        val, images = read_manifest(implants, VAL)
        lines = predict_lines(classifiers[target], images)
        right = np.mean([line[target] == r[target] for line, r in zip(lines, val, strict=True)])
        assert metrics[key_ending(metrics, "top1_accuracy", "best_")] == pytest.approx(right, abs=1e-6)


def test_classifier_eval_and_predict(classifiers: dict[str, Path], implants: Path, tmp_path: Path):
    out = tmp_path / "metrics.json"
    run = classifiers["model"]
    # on the training images, where the one-epoch classifier already names some right
    finescale_in_process("dims", "eval", "--checkpoint", run, "--json", implants / "train.json", "--out", out)
    metrics = json.loads(out.read_text())
    records, images = read_manifest(implants, "train")
    lines = predict_lines(run, images)
    assert metrics[count_key()] == len(records) > 0
    for line in lines:
        assert line["model"] in line["probabilities"]
        assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # the accuracies, recomputed from what ``predict`` prints (an unknown true name is a miss)
    top1 = np.mean([line["model"] == r["model"] for line, r in zip(lines, records, strict=True)])
    assert metrics[key_ending(metrics, "top1_accuracy")] == pytest.approx(top1, abs=1e-6)
    sure = unsure = 0  # printed probabilities are rounded: ties at the fifth place leave an image undecided
    for line, r in zip(lines, records, strict=True):
        probs = line["probabilities"]
        if r["model"] not in probs:
            continue
        above = sum(p > probs[r["model"]] for p in probs.values())
        level = sum(p >= probs[r["model"]] for p in probs.values())
        sure += level <= 5
        unsure += above < 5 < level
    top5 = metrics[key_ending(metrics, "top5_accuracy")]
    assert sure / len(records) - 1e-6 <= top5 <= (sure + unsure) / len(records) + 1e-6


@pytest.mark.parametrize("attention", ["dual", "triple", "hierarchical"])
def test_train_writes_the_run_directory(regressors: dict, attention: str, implants: Path):
    run = regressors[attention]
    for name in ("config.yaml", "best.ckpt", "last.ckpt", "metrics.json", "report.html"):
        assert (run / name).exists(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["stage"] == "regress" and config["regress"]["attention_type"] == attention
    assert set(config["embedders"]) == {"company", "model"} and config["data"]["companies"]
    # the best validation score of training is the mean of the length and diameter MAEs of the regressor's own
    # (not snapped) sizes on the val images, recomputed here from what ``predict`` prints
    metrics = json.loads((run / "metrics.json").read_text())
    val, images = read_manifest(implants, VAL)
    lines = predict_lines(run, images, "--mc-samples", "0")
    errors = [
        (abs(line["raw_length_mm"] - r["length_mm"]), abs(line["raw_diameter_mm"] - r["diameter_mm"]))
        for line, r in zip(lines, val, strict=True)
    ]
    expected = float(np.mean(errors))  # (mean length error + mean diameter error) / 2
    assert metrics[key_ending(metrics, bench_metric("avg"), "best_")] == pytest.approx(expected, abs=1e-3)


def test_eval_reports_unseen_combinations(regressors: dict, implants: Path, tmp_path: Path):
    train = json.loads((implants / "train.json").read_text())
    test, images = read_manifest(implants, "test")
    # every score is recomputed from the (snapped) sizes and names ``predict`` prints, without MC dropout
    lines = predict_lines(regressors["triple"], images, "--mc-samples", "0")
    errors = {
        size: np.array([abs(line[f"{size}_mm"] - r[f"{size}_mm"]) for line, r in zip(lines, test, strict=True)])
        for size in ("length", "diameter")
    }
    right = np.array([line["model"] == r["model"] for line, r in zip(lines, test, strict=True)])
    # the run's training manifest, then one that also holds the first test image's combination (--train-json)
    known = tmp_path / "known.json"
    known.write_text(json.dumps([{**r, "image": str(implants / r["image"])} for r in [*train, test[0]]]))
    for name, extra, trained_on in (("default", [], train), ("known", ["--train-json", known], [*train, test[0]])):
        out = tmp_path / name / "metrics.json"
        run = regressors["triple"]
        result = finescale_in_process(
            "dims", "eval", "--checkpoint", run, "--json", implants / "test.json", "--out", out, *extra
        )
        printed = json.loads(result.stdout.strip().splitlines()[-1])
        metrics = json.loads(out.read_text())
        for key in get_pipeline("dims").bench_metrics:
            assert key in metrics and key in printed and printed[key] == metrics[key], key
        seen = {(r["model"], r["length_mm"], r["diameter_mm"]) for r in trained_on}
        unseen = np.array([(r["model"], r["length_mm"], r["diameter_mm"]) not in seen for r in test])
        assert metrics[count_key()] == len(test)
        assert metrics[key_ending(metrics, "unseen_n")] == unseen.sum() > 0
        for words, expected in (
            (("length",), errors["length"].mean()),
            (("diameter",), errors["diameter"].mean()),
            (("avg",), (errors["length"].mean() + errors["diameter"].mean()) / 2),
            (("unseen", "length"), errors["length"][unseen].mean()),
            (("unseen", "diameter"), errors["diameter"][unseen].mean()),
            (("unseen", "avg"), (errors["length"][unseen].mean() + errors["diameter"][unseen].mean()) / 2),
            (("model", "accuracy"), right.mean()),
        ):
            assert metrics[bench_metric(*words)] == pytest.approx(expected, abs=1e-3), (name, words)
        assert (out.parent / "plots" / "length_pred_vs_true.png").exists() and (out.parent / "report.html").exists()
    assert unseen.sum() < len(test)  # the second manifest did make a test combination seen


def test_predict_prints_sizes_names_probabilities_and_uncertainty(regressors: dict, implants: Path):
    images = [implants / r["image"] for r in json.loads((implants / "test.json").read_text())[:2]]
    result = finescale_in_process(
        "dims", "predict", *images, "--checkpoint", regressors["hierarchical"], "--mc-samples", "5"
    )
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(lines) == 2
    # the catalogue the sizes snap to: each model's lengths and diameters in the training manifest
    catalogue: dict[str, tuple[set, set]] = {}
    for r in json.loads((implants / "train.json").read_text()):
        lengths, diameters = catalogue.setdefault(r["model"], (set(), set()))
        lengths.add(r["length_mm"])
        diameters.add(r["diameter_mm"])
    plain = predict_lines(regressors["hierarchical"], images, "--mc-samples", "0")
    for line, once in zip(lines, plain, strict=True):
        assert any(line["length_mm"] in ls and line["diameter_mm"] in ds for ls, ds in catalogue.values())
        assert line["company"] in line["company_probabilities"] and line["model"] in line["model_probabilities"]
        assert sum(line["model_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert sum(line["attention_weights"].values()) == pytest.approx(1.0, abs=1e-3)
        # MC dropout really samples: five passes spread; a single plain pass reports no spread
        uncertainty = line["uncertainty"]
        assert uncertainty["mc_samples"] == 5
        assert uncertainty["length_mm_std"] > 0 and uncertainty["diameter_mm_std"] > 0
        assert once["uncertainty"]["mc_samples"] == 0 and set(once["uncertainty"].values()) == {None, 0}
        # the answer is the plain pass (dropout off, as `eval` scores it); the passes' mean stands beside it
        assert line["raw_length_mm"] == once["raw_length_mm"] and uncertainty["length_mm_mean"] is not None
        assert line["company"] == line["model"].split()[0]  # the model's maker (synthetic names start with it)


def test_train_without_checkpoints_trains_the_classifiers_first(from_scratch: tuple[Path, list]):
    run, args = from_scratch
    for sub in ("company", "model"):
        assert (run / sub / "best.ckpt").exists()
    assert (run / "best.ckpt").exists()
    result = finescale(*args, check=False)  # the run exists: refused before any training
    assert result.returncode == 2 and "--resume" in result.stderr


def test_wrong_classifier_checkpoint_is_a_one_line_error(classifiers: dict[str, Path], implants: Path, tmp_path: Path):
    # refused before anything trains, so in this process
    result = finescale_in_process(
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
