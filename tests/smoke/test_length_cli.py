"""Every ``finescale length`` verb end to end on tiny generated data, through the real console entry point: training as
a real process; ``eval`` and ``predict``, whose output is the point here, in this process (tests/contract and
test_cli_streams.py run them as processes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from tests.conftest import finescale, finescale_in_process, length_train

pytestmark = pytest.mark.slow


def test_train_writes_the_run_directory(length_run: Path):
    for name in ("config.yaml", "best.ckpt", "last.ckpt", "metrics.json", "report.html", "logs/csv/metrics.csv"):
        assert (length_run / name).exists(), name
    assert list((length_run / "logs" / "tb").glob("events.out.tfevents.*"))
    config = yaml.safe_load((length_run / "config.yaml").read_text())
    assert config["model"]["scales"] == [32, 48] and config["pipeline"] == "length"
    metrics = json.loads((length_run / "metrics.json").read_text())
    assert metrics["train_n_valid"] > 0 and metrics["best_val_length_mae_mm"] > 0


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(length_run: Path):
    import finescale

    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(length_run / name, map_location="cpu", weights_only=True)
        assert ckpt["hyper_parameters"]["config"]["model"]["crop_size"] == 32
    predictor = finescale.load(length_run)
    image = np.random.default_rng(0).random((100, 80)).astype(np.float32)
    [result] = predictor.predict(image)
    assert 6.0 <= result["length_bin_mm"] <= 16.0
    assert sum(result["bin_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)


def test_eval_writes_metrics_plots_and_report(length_run: Path, implants: Path, tmp_path: Path):
    out = tmp_path / "eval" / "metrics.json"
    result = finescale_in_process(
        "length", "eval", "--checkpoint", length_run / "best.ckpt", "--json", implants / "test.json", "--out", out
    )
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    metrics = json.loads(out.read_text())
    for key in ("length_mae_mm", "length_bin_accuracy", "length_within_1bin", "length_n"):
        assert key in metrics and key in printed
    assert metrics["length_n"] == len(json.loads((implants / "test.json").read_text()))
    assert 0.0 <= metrics["length_bin_accuracy"] <= metrics["length_within_1bin"] <= 1.0
    assert (out.parent / "plots" / "length_pred_vs_true.png").exists()
    assert "length_mae_mm" in (out.parent / "report.html").read_text()


def test_predict_reads_16bit_rgba_and_jpeg(length_run: Path, implants: Path, tmp_path: Path):
    record = json.loads((implants / "test.json").read_text())[0]
    gray = cv2.imread(str(implants / record["image"]), cv2.IMREAD_GRAYSCALE)
    paths = [implants / record["image"], tmp_path / "a16.png", tmp_path / "b_rgba.png", tmp_path / "c.jpg"]
    paths.append(tmp_path / "d_brighter.png")  # the control: what a reader off by 6 % would see
    assert gray.dtype == np.uint8 and gray.ndim == 2  # the original: 8-bit gray
    cv2.imwrite(str(paths[1]), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(paths[2]), np.dstack([gray, gray, gray, np.full_like(gray, 255)]))
    cv2.imwrite(str(paths[3]), gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(paths[4]), np.clip(gray.astype(np.int16) + 16, 0, 255).astype(np.uint8))
    result = finescale_in_process("length", "predict", *paths, "--checkpoint", length_run)
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [Path(r["image"]).name for r in lines] == [p.name for p in paths]
    for line in lines:
        assert set(line) >= {"length_bin_mm", "length_mm", "bin_probabilities", "confidence"}
        assert len(line["bin_probabilities"]) == 21
    original, a16, rgba, jpeg, brighter = lines

    def distance(line: dict) -> float:
        """L1 distance of the bin probabilities (printed to 4 decimals) from the original's."""
        return sum(abs(p - original["bin_probabilities"][k]) for k, p in line["bin_probabilities"].items())

    # the one-epoch model reacts to the picture: 16 grey levels brighter moves its probabilities (~0.02 measured)
    control = distance(brighter)
    assert control > 2e-3, control
    # 16-bit and RGBA hold exactly the 8-bit original's picture: the same prediction, up to the printed rounding
    for line in (a16, rgba):
        assert line["length_mm"] == pytest.approx(original["length_mm"], abs=1.5e-3), line["image"]
        assert distance(line) <= 5e-4, (line["image"], distance(line))
    # JPEG at quality 95 is off by about a grey level (~0.001 measured): far closer to the original than the control
    assert distance(jpeg) < control / 3, (distance(jpeg), control)


def write_mixed_manifest(implants: Path, out: Path) -> Path:
    good = json.loads((implants / "train.json").read_text())
    (out / "images").mkdir(parents=True)
    for record in good:
        shutil.copy(implants / record["image"], out / record["image"])
    (out / "images" / "broken.png").write_bytes(b"not a png at all")
    bad = [
        {"image": good[0]["image"], "length_mm": ""},
        {"image": good[0]["image"], "length_mm": "eleven"},
        {"image": good[0]["image"], "length_mm": float("nan")},
        {"image": good[0]["image"], "length_mm": 400.0},
        {"image": "images/missing.png", "length_mm": 10.0},
        {"image": "images/broken.png", "length_mm": 10.0},
    ]
    path = out / "mixed.json"
    path.write_text(json.dumps(good + bad))
    return path


def test_mixed_manifest_trains_and_counts_the_skipped(implants: Path, tmp_path: Path):
    mixed = write_mixed_manifest(implants, tmp_path / "data")
    run = tmp_path / "run"
    finescale(*length_train(mixed, implants / "val.json", run, "--limit-train-batches", 2))
    metrics = json.loads((run / "metrics.json").read_text())
    for reason in ("empty_string", "not_a_number", "nan", "out_of_range", "missing_file", "unreadable_image"):
        assert metrics[f"train_skipped_{reason}"] == 1, reason
    assert metrics["train_n_valid"] == metrics["train_n_total"] - 6


def test_all_bad_manifest_exits_with_one_line(implants: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "nope.png", "length_mm": 10}, {"image": "x.png", "length_mm": "?"}]))
    result = finescale(*length_train(bad, bad, tmp_path / "run"), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no valid records in") and "Traceback" not in result.stderr
    # the data is read before the run directory is made: nothing is left to get in the way of the next try
    assert not (tmp_path / "run").exists()


def test_bad_flag_value_is_a_one_line_error(implants: Path, tmp_path: Path):
    result = finescale(
        *length_train(implants / "train.json", implants / "val.json", tmp_path / "r", "--fusion", "sum"), check=False
    )
    assert result.returncode == 2 and result.stderr.strip().startswith("error: invalid value for --fusion (sum)")


def test_same_seed_same_numbers(length_run: Path, implants: Path, tmp_path: Path):
    # the shared run's command again, in another process: the second run of the pair is all this test trains
    finescale(*length_train(implants / "train.json", implants / "val.json", tmp_path / "again"))
    scores = [
        json.loads((run / "metrics.json").read_text())["best_val_length_mae_mm"]
        for run in (length_run, tmp_path / "again")
    ]
    assert scores[0] == scores[1]
