"""``finescale ct``'s own verbs end to end on tiny phantoms, through the real console entry point: an ensemble of two
runs with test-time views, ``score`` of the predictions file it wrote against the labels, ``inspect``, the 3-D
baseline, and a CT-RATE labels CSV given directly as the training manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import finescale, finescale_in_process

from finescale.data.ct_io import LABELS
from finescale.pipelines import get_pipeline

pytestmark = pytest.mark.slow


def flags(overrides: dict) -> list[str]:
    out = []
    for name, value in overrides.items():
        out += ["--" + name.replace("_", "-"), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


TINY = [*flags(dict(get_pipeline("ct").smoke)), "--accelerator", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ct")
    finescale("synth", "ct", "--out", out, "--n", "24", "--seed", "3")
    return out


@pytest.fixture(scope="module")
def runs(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = []
    for seed in (0, 1):
        run = tmp_path_factory.mktemp(f"ct_run{seed}")
        data = ["--train-json", phantoms / "train.json", "--val-json", phantoms / "val.json"]
        finescale("ct", "train", "--out", run, *data, *TINY, "--seed", seed)
        out.append(run)
    return out


def test_ensemble_with_tta_writes_predictions_that_score_alike(runs: list[Path], phantoms: Path, tmp_path: Path):
    out = tmp_path / "ensemble.json"
    args = ["ct", "eval", "--json", phantoms / "test.json", "--out", out, "--tta", "2", "--ensemble", "adaptive"]
    metrics = json.loads(finescale(*args, "--checkpoint", runs[0], "--checkpoint", runs[1]).stdout)
    assert metrics["ct_members"] == 2 and metrics["ct_tta"] == 2
    assert "ct_corrupted_macro_auroc" in metrics  # robustness is scored by default
    predictions = tmp_path / "predictions_test.csv"
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["ct_n"] and set(LABELS) <= set(rows[0])
    # the labels CSV of the test volumes, scored by `ct score`: the same numbers as eval's
    test = json.loads((phantoms / "test.json").read_text())
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["VolumeName", *LABELS])
        writer.writerows([[r["name"], *r["labels"]] for r in test])
    scored = json.loads(finescale("ct", "score", "--labels", labels, "--predictions", predictions).stdout)
    for key in ("ct_macro_f1", "ct_macro_precision", "ct_macro_recall", "ct_macro_accuracy"):
        assert scored[key] == pytest.approx(metrics[key], abs=1e-6), key
    # the ensemble is not just its first member
    single = json.loads(finescale("ct", "eval", "--json", phantoms / "test.json", "--checkpoint", runs[0]).stdout)
    first = np.array([[float(r[name]) for name in LABELS] for r in rows])
    alone = json.loads((runs[0] / "predictions_test.json").read_text())
    assert single["ct_members"] == 1
    assert not np.allclose(first, [[a["probabilities"][n] for n in LABELS] for a in alone], atol=1e-4)


def test_inspect_reports_what_the_loader_sees(phantoms: Path):
    record = json.loads((phantoms / "train.json").read_text())[0]
    line = finescale("ct", "inspect", phantoms / record["volume"], "--metadata", phantoms / "metadata.csv").stdout
    seen = json.loads(line)
    assert len(seen["shape"]) == 3 and seen["hu_min"] >= -1100 and seen["hu_max"] > 300  # air and bone in HU
    assert seen["scaling"] in ("csv", "header", "none")


def test_3d_baseline_and_a_labels_csv_as_manifest(phantoms: Path, tmp_path: Path):
    train = json.loads((phantoms / "train.json").read_text())
    labels = tmp_path / "labels.csv"  # CT-RATE's own format: VolumeName + the 18 columns, volumes found by name
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["VolumeName", *LABELS])
        writer.writerows([[r["name"], *r["labels"]] for r in train])
    (tmp_path / "volumes").symlink_to(phantoms / "volumes")
    (tmp_path / "metadata.csv").symlink_to(phantoms / "metadata.csv")
    run = tmp_path / "run3d"
    data = ["--train-json", labels, "--val-json", phantoms / "val.json"]
    # the 3-D network is the costly part of this test on CPU: two training batches, no calibration, one evaluation
    few = ["--limit-train-batches", "2", "--limit-val-batches", "1", "--calibration", "none"]
    few += ["--shape", "32,64,64", "--spacing", "10,5,5"]  # a coarser grid: the 3-D ResNet costs 10x less
    summary = json.loads(finescale("ct", "train", "--out", run, *data, *TINY, *few, "--dimension", "3d").stdout)
    assert summary["train_n_valid"] == len(train) and summary["global_step"] == 2
    test = phantoms / "test.json"
    metrics = json.loads(finescale("ct", "eval", "--checkpoint", run, "--json", test, "--no-robustness").stdout)
    assert metrics["ct_n"] == len(json.loads((phantoms / "test.json").read_text()))
    # the 3-D network has no dropout: MC-dropout samples of it would all be equal, so bayesian is refused
    args = ["ct", "eval", "--checkpoint", run, "--json", test, "--ensemble", "bayesian"]
    refused = finescale_in_process(*args, check=False)
    assert refused.returncode != 0 and "MC dropout needs a dropout layer" in refused.stderr


def test_bench_rows_without_training_reuse_finished_runs(runs: list[Path], phantoms: Path, tmp_path: Path):
    import torch

    from finescale.pipelines.ct.bench import CALIBRATION_KINDS, ENSEMBLE_KINDS, TTA_VIEWS, bench_combined
    from finescale.pipelines.ct.workflow import evaluate

    for k, run in enumerate(runs):  # what the bench leaves in a finished run: its test metrics and training time
        (run / "test_metrics.json").write_text(json.dumps({"train_seconds": 10.0 + k}))
    baseline_ckpt = (runs[0] / "best.ckpt").read_bytes()
    out = tmp_path / "combined"
    rows = bench_combined({"recipe": runs, "baseline": runs[:1]}, phantoms, out)
    # the runs were calibrated (the quick preset's threshold) when trained: the other kinds are refitted
    calibrated = {f"baseline + {kind} calibration" for kind in CALIBRATION_KINDS if kind != "threshold"}
    assert set(rows) == {
        *(f"recipe ensemble {kind} x2" for kind in ENSEMBLE_KINDS),
        f"recipe TTA x{TTA_VIEWS}",
        *calibrated,
    }
    for kind in ENSEMBLE_KINDS:
        (ensemble,) = rows[f"recipe ensemble {kind} x2"]
        assert ensemble["ct_members"] == 2 and ensemble["train_seconds"] == 21.0  # both members' training
        assert "ct_external_macro_auroc" in ensemble and "ct_corrupted_macro_auroc" in ensemble
    tta = rows[f"recipe TTA x{TTA_VIEWS}"]
    assert [r["ct_tta"] for r in tta] == [TTA_VIEWS, TTA_VIEWS] and [r["train_seconds"] for r in tta] == [10.0, 11.0]
    # bayesian (MC dropout) and mean combine the same members differently
    assert rows["recipe ensemble mean x2"][0] != rows["recipe ensemble bayesian x2"][0]
    # calibration refits a copy of the baseline's checkpoint: the run itself is untouched, the copy says its kind
    assert (runs[0] / "best.ckpt").read_bytes() == baseline_ckpt
    platt = torch.load(out / "calibration" / "baseline" / "platt" / runs[0].name / "best.ckpt", weights_only=True)
    assert platt["hyper_parameters"]["config"]["model"]["calibration"] == "platt"
    assert platt["state_dict"]["model.calibration"].shape == (2, 18)  # (scale, bias) per label; the fit: unit tests
    (temperature,) = rows["baseline + temperature calibration"]
    assert temperature["train_seconds"] == 10.0  # the baseline's training, nothing more
    # a positive temperature, like the threshold's shift, keeps every label's ranking: the AUROC as trained
    plain = evaluate(runs[0] / "best.ckpt", phantoms / "test.json", out=tmp_path / "plain.json", robustness=False)
    assert temperature["ct_macro_auroc"] == pytest.approx(plain["ct_macro_auroc"], abs=1e-6)
    # a second bench run reads the kept evaluations instead of scoring again
    kept = sorted(out.rglob("test_metrics.json"))
    stamps = [p.stat().st_mtime_ns for p in kept]
    assert bench_combined({"recipe": runs, "baseline": runs[:1]}, phantoms, out) == rows
    assert [p.stat().st_mtime_ns for p in kept] == stamps
    assert len(kept) == len(ENSEMBLE_KINDS) + len(runs) + len(calibrated)
    assert bench_combined({"x": runs}, phantoms, out) == {}  # neither a baseline nor a recipe: no rows


def test_the_histogram_baseline_scores_like_a_deep_run(phantoms: Path):
    from finescale.pipelines.ct.bench import METRICS
    from finescale.pipelines.ct.histogram_baseline import NAME, histogram_baseline

    (metrics,) = histogram_baseline(phantoms / "train.json", phantoms / "test.json").values()
    assert set(METRICS) <= set(metrics) and metrics["ct_n"] == len(json.loads((phantoms / "test.json").read_text()))
    assert metrics["ct_histogram_c"] in (0.01, 0.1, 1.0) and metrics["train_seconds"] > 0
    again = histogram_baseline(phantoms / "train.json", phantoms / "test.json")[NAME]
    same = {k for k in metrics if k != "train_seconds"}
    # deterministic: the same numbers twice (compared as JSON text: an undefined AUROC is NaN, never == itself)
    assert json.dumps({k: again[k] for k in sorted(same)}) == json.dumps({k: metrics[k] for k in sorted(same)})

    # a bench at another grid (e.g. --preset full) gets this row on its own grid's store, not the quick one
    from finescale.config import build_config
    from finescale.pipelines.ct.config import CTConfig
    from finescale.pipelines.ct.data import store_path

    coarse = build_config(CTConfig, preset="quick", config_file=None, overrides={"shape": [16, 32, 32]})
    assert not store_path(coarse, phantoms / "train.json").exists()
    histogram_baseline(phantoms / "train.json", phantoms / "test.json", coarse)
    assert store_path(coarse, phantoms / "train.json").exists()
