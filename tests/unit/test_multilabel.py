"""VLM3D multi-label scores against scikit-learn, prediction files (CSV/JSON round trips, scoring, errors), plots."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from finescale.data.ct_io import LABELS as CT_RATE_LABELS
from finescale.errors import FinescaleError
from finescale.eval.multilabel import binary_auroc, label_slug, roc_curve, vlm3d_scores
from finescale.eval.multilabel_plots import plot_reliability, plot_roc_curves
from finescale.eval.prediction_files import (
    read_labels_csv,
    read_predictions,
    score_files,
    volume_key,
    write_predictions_csv,
    write_predictions_json,
)

LABELS = list(CT_RATE_LABELS)
NO_POSITIVE, ALL_PREDICTED_NEGATIVE, ALL_POSITIVE = 3, 5, 7  # columns with degenerate cases
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _random_case(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities correlated with labels, ties from rounding, and the degenerate columns above."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(LABELS))) < rng.uniform(0.05, 0.5, len(LABELS))).astype(np.int64)
    logits = 1.5 * (2 * labels - 1) + rng.normal(0, 1.5, labels.shape)
    probs = np.round(1 / (1 + np.exp(-logits)), 2)  # rounding makes tied scores, which AUROC counts one half
    labels[:, NO_POSITIVE] = 0
    probs[:, ALL_PREDICTED_NEGATIVE] = np.minimum(probs[:, ALL_PREDICTED_NEGATIVE], 0.4)
    labels[:, ALL_POSITIVE] = 1
    probs[0, 0] = 0.5  # exactly at the threshold: predicted negative (p > 0.5 is positive)
    return probs, labels


def test_vlm3d_scores_match_sklearn_per_label_and_macro() -> None:
    probs, labels = _random_case()
    scores = vlm3d_scores(probs, labels, LABELS)
    predicted = (probs > 0.5).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average=None, zero_division=0)
    accuracy = [accuracy_score(labels[:, j], predicted[:, j]) for j in range(len(LABELS))]
    auroc = [
        roc_auc_score(labels[:, j], probs[:, j]) if 0 < labels[:, j].sum() < len(labels) else math.nan
        for j in range(len(LABELS))
    ]
    expected = {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy, "auroc": auroc}
    for metric, values in expected.items():
        for name, value in zip(LABELS, values, strict=True):
            np.testing.assert_allclose(scores[f"ct_{metric}_{label_slug(name)}"], value, rtol=1e-12, err_msg=metric)
    for metric in ("precision", "recall", "f1", "accuracy"):
        assert scores[f"ct_macro_{metric}"] == pytest.approx(np.mean(expected[metric]), abs=1e-12)
    assert scores["ct_macro_f1"] == pytest.approx(
        precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)[2], abs=1e-12
    )
    assert scores["ct_macro_auroc"] == pytest.approx(np.nanmean(auroc), abs=1e-12)
    assert scores["ct_n"] == len(probs)
    assert scores["ct_n_auroc_undefined"] == 2  # NO_POSITIVE and ALL_POSITIVE
    assert scores["ct_positives_pericardial_effusion"] == 0


def test_zero_division_rules_and_keys() -> None:
    probs, labels = _random_case()
    scores = vlm3d_scores(torch.from_numpy(probs).float(), torch.from_numpy(labels), LABELS, prefix="test_")
    assert scores["test_precision_hiatal_hernia"] == 0.0  # nothing predicted positive
    assert scores["test_recall_pericardial_effusion"] == 0.0  # no positive volume
    assert math.isnan(scores["test_auroc_pericardial_effusion"])
    assert "test_auroc_interlobular_septal_thickening" in scores
    assert "test_f1_coronary_artery_wall_calcification" in scores
    assert all(key.startswith("test_") for key in scores)
    assert len(scores) == 5 * (len(LABELS) + 1) + len(LABELS) + 2
    json.dumps({k: v for k, v in scores.items() if not (isinstance(v, float) and math.isnan(v))}, allow_nan=False)


def test_scores_reject_bad_inputs() -> None:
    probs, labels = _random_case(n=10)
    with pytest.raises(FinescaleError, match="same shape"):
        vlm3d_scores(probs[:, :3], labels, LABELS)
    with pytest.raises(FinescaleError, match=r"\[0, 1\]"):
        vlm3d_scores(probs * 3 - 1, labels, LABELS)
    with pytest.raises(FinescaleError, match="0 or 1"):
        vlm3d_scores(probs, labels * 2, LABELS)
    with pytest.raises(FinescaleError, match="label names"):
        vlm3d_scores(probs, labels, LABELS[:-1])


def test_auroc_and_roc_curve_on_a_hand_example() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    truth = np.array([0, 0, 1, 1, 1])
    assert binary_auroc(scores[:, None], truth[:, None])[0] == pytest.approx(roc_auc_score(truth, scores))
    fpr, tpr = roc_curve(scores, truth)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(truth, scores))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def _write_labels_csv(path: Path, volumes: list[str], labels: np.ndarray, names: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["VolumeName", *names])
        for volume, row in zip(volumes, labels, strict=True):
            writer.writerow([volume, *row.tolist()])
    return path


def _volumes(n: int) -> list[str]:
    return [f"valid_{i // 2 + 1}_{'ab'[i % 2]}_1.nii.gz" for i in range(n)]


def test_csv_and_json_round_trip(tmp_path: Path) -> None:
    probs, _ = _random_case(n=12)
    probs = probs.astype(np.float32) + np.float32(1e-7)  # digits a 6-decimal format would lose
    spread = probs / 10
    volumes = _volumes(12)
    csv_path = write_predictions_csv(tmp_path / "p.csv", volumes, torch.from_numpy(probs), LABELS)
    json_path = write_predictions_json(tmp_path / "p.json", volumes, probs, LABELS, uncertainty=spread)

    with open(csv_path, newline="") as f:
        assert next(csv.reader(f)) == ["VolumeName", *LABELS]
    from_csv = read_predictions(csv_path, LABELS)
    assert from_csv.volumes == volumes
    np.testing.assert_array_equal(from_csv.probabilities.astype(np.float32), probs)  # float32-exact
    assert from_csv.uncertainty is None

    records = json.loads(json_path.read_text())
    assert set(records[0]) == {"name", "probabilities", "uncertainty"}
    assert list(records[0]["probabilities"]) == LABELS
    from_json = read_predictions(json_path, LABELS)
    assert from_json.volumes == volumes
    np.testing.assert_array_equal(from_json.probabilities.astype(np.float32), probs)
    np.testing.assert_array_equal(from_json.uncertainty.astype(np.float32), spread)

    jsonl_path = tmp_path / "p.jsonl"  # what `predict` prints, one record a line
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    np.testing.assert_array_equal(read_predictions(jsonl_path, LABELS).probabilities, from_json.probabilities)


def test_score_files_equals_vlm3d_scores(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    probs, labels = _random_case(n=40, seed=3)
    volumes = _volumes(40)
    labels_csv = _write_labels_csv(tmp_path / "labels.csv", volumes, labels, LABELS)
    expected = vlm3d_scores(probs, labels, LABELS)

    # Someone else's file: other order of rows and columns, .mha names, an extra volume, an extra column.
    order = np.random.default_rng(0).permutation(40)
    shuffled = [LABELS[j] for j in np.random.default_rng(1).permutation(len(LABELS))]
    with open(tmp_path / "theirs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["VolumeName", "notes", *shuffled])
        for i in order:
            writer.writerow(
                [volumes[i].replace(".nii.gz", ".mha"), "x", *(probs[i, LABELS.index(c)] for c in shuffled)]
            )
        writer.writerow(["test_999_a_1.mha", "x", *([0.5] * len(LABELS))])
    write_predictions_json(tmp_path / "ours.json", volumes, probs, LABELS)

    with caplog.at_level(logging.WARNING, logger="finescale"):
        theirs = score_files(labels_csv, tmp_path / "theirs.csv")  # names default to CT-RATE's 18
    assert "ignoring 1 predictions" in caplog.text and "test_999_a_1" in caplog.text
    ours = score_files(labels_csv, tmp_path / "ours.json", LABELS)
    for scores in (theirs, ours):
        assert scores.keys() == expected.keys()
        for key, value in expected.items():
            assert scores[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def _one_line_error(excinfo: pytest.ExceptionInfo[FinescaleError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_score_files_errors_are_one_line(tmp_path: Path) -> None:
    probs, labels = _random_case(n=20)
    volumes = _volumes(20)
    labels_csv = _write_labels_csv(tmp_path / "labels.csv", volumes, labels, LABELS)

    write_predictions_csv(tmp_path / "partial.csv", volumes[:12], probs[:12], LABELS)
    with pytest.raises(FinescaleError) as excinfo:
        score_files(labels_csv, tmp_path / "partial.csv", LABELS)
    message = _one_line_error(excinfo)
    assert "no prediction for 8 of the 20 volumes" in message and volumes[12] in message and "(3 more)" in message

    no_column = _write_labels_csv(tmp_path / "no_column.csv", volumes, labels[:, 1:], LABELS[1:])
    write_predictions_csv(tmp_path / "all.csv", volumes, probs, LABELS)
    with pytest.raises(FinescaleError) as excinfo:
        score_files(no_column, tmp_path / "all.csv", LABELS)
    assert "missing column(s) Medical material" in _one_line_error(excinfo)

    write_predictions_csv(tmp_path / "no_column_pred.csv", volumes, probs[:, :-1], LABELS[:-1])
    with pytest.raises(FinescaleError) as excinfo:
        score_files(labels_csv, tmp_path / "no_column_pred.csv", LABELS)
    assert "Interlobular septal thickening" in _one_line_error(excinfo)

    bad_cell = (tmp_path / "all.csv").read_text().replace(volumes[0] + ",", volumes[0] + ",abc", 1)
    (tmp_path / "bad_cell.csv").write_text(bad_cell)
    with pytest.raises(FinescaleError) as excinfo:
        score_files(labels_csv, tmp_path / "bad_cell.csv", LABELS)
    assert "line 2" in _one_line_error(excinfo)

    write_predictions_csv(tmp_path / "twice.csv", [*volumes, volumes[0]], np.vstack([probs, probs[:1]]), LABELS)
    with pytest.raises(FinescaleError) as excinfo:
        score_files(labels_csv, tmp_path / "twice.csv", LABELS)
    assert "appears twice" in _one_line_error(excinfo)


def test_labels_csv_and_volume_keys(tmp_path: Path) -> None:
    _, labels = _random_case(n=6)
    volumes = _volumes(6)
    path = _write_labels_csv(tmp_path / "labels.csv", volumes, labels.astype(float), LABELS)  # "1.0" cells
    read_volumes, read_labels = read_labels_csv(path, LABELS)
    assert read_volumes == volumes
    np.testing.assert_array_equal(read_labels, labels)
    assert volume_key("train/train_1/train_1_a/train_1_a_1.nii.gz") == "train_1_a_1"
    assert volume_key("valid_3_b_2.mha") == volume_key("valid_3_b_2") == "valid_3_b_2"


def test_plots_are_written(tmp_path: Path) -> None:
    probs, labels = _random_case(n=80)
    calibrated = np.clip(probs * 0.8 + 0.1, 0, 1)
    paths = [
        plot_roc_curves(probs, labels, LABELS, tmp_path / "roc.png"),
        plot_reliability(probs, labels, tmp_path / "reliability.png"),
        plot_reliability(probs, labels, tmp_path / "reliability_calibrated.png", calibrated=calibrated),
        plot_reliability(probs, labels, tmp_path / "reliability_labels.png", calibrated=calibrated, names=LABELS),
    ]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == PNG_SIGNATURE
