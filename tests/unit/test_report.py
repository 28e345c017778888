"""Run reports: CSV log parsing, plot files and the HTML pages."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from finescale.eval import curves as curve_plots
from finescale.eval import plots
from finescale.eval.report import Figure, Section, format_value, write_index, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Lightning's CSVLogger: one header with every column, rows from separate log_metrics calls with the other cells empty
# (the LearningRateMonitor rows carry no epoch).
SPARSE_CSV = """\
epoch,lr-AdamW/pg1,step,train/cls,train/loss,train/reg_aux,val/length_mae_mm,val/loss
,0.001,0,,,,,
0,,4,0.9,1.25,0.35,,
0,,9,0.7,1.0,0.3,,
0,,9,,,,4.5,1.1
,0.0005,10,,,,,
1,,14,0.5,0.75,0.25,,
1,,19,,,,2.25,0.8
"""


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def _write_lightning_csv(path: Path, epochs: int = 4, steps_per_epoch: int = 30) -> None:
    cols = "epoch,lr-AdamW/pg1,step,train/cls,train/loss,train/reg_aux,val/length_mae_mm,val/loss".split(",")
    rows: list[dict[str, float]] = []
    for ep in range(epochs):
        for b in range(steps_per_epoch):
            s = ep * steps_per_epoch + b
            if s % 10 == 0:
                rows.append({"lr-AdamW/pg1": 1e-3 * (1 - s / (epochs * steps_per_epoch)), "step": s})
            cls, reg = 1.0 / (1 + s / 20), 0.2 / (1 + s / 40)
            rows.append({"epoch": ep, "step": s, "train/cls": cls, "train/reg_aux": reg, "train/loss": cls + reg})
        rows.append({"epoch": ep, "step": s, "val/length_mae_mm": 3.0 / (ep + 1), "val/loss": 1.0 / (ep + 1)})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)


def _make_run(run_dir: Path, *, with_csv: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if with_csv:
        _write_lightning_csv(run_dir / "logs" / "csv" / "metrics.csv")
    (run_dir / "config.yaml").write_text(
        "pipeline: length\nmodel:\n  backbone: resnet18\n  note: <script>alert('x')</script>\n", encoding="utf-8"
    )
    metrics = {"val/length_mae_mm": 0.61234567, "epochs": 4, "skipped": {"missing_file": 3}, "best": None}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir


def _local_refs(page: str) -> list[str]:
    refs = [html.unescape(r) for r in re.findall(r'(?:src|href)="([^"]+)"', page)]
    return [unquote(r) for r in refs if not r.startswith("#")]


def _img_srcs(page: str) -> list[str]:
    return [unquote(html.unescape(r)) for r in re.findall(r'<img src="([^"]+)"', page)]


def test_read_csv_log_parses_sparse_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(SPARSE_CSV)
    log = curve_plots.read_csv_log(path)

    assert set(log) == {"lr-AdamW/pg1", "train/cls", "train/loss", "train/reg_aux", "val/length_mae_mm", "val/loss"}
    assert log["train/loss"] == [(4.0, 1.25), (9.0, 1.0), (14.0, 0.75)]
    assert log["val/length_mae_mm"] == [(9.0, 4.5), (19.0, 2.25)]
    assert log["lr-AdamW/pg1"] == [(0.0, 0.001), (10.0, 0.0005)]
    assert log.epochs["val/loss"] == [0.0, 1.0]
    assert log.epochs["lr-AdamW/pg1"] == [None, None]
    assert log.by_epoch("val/loss") == [(0.0, 1.1), (1.0, 0.8)]
    # rows without an epoch cell take the epoch of the latest earlier row
    assert log.by_epoch("lr-AdamW/pg1") == [(0.0, 0.001), (0.0, 0.0005)]


def test_plot_training_curves_writes_three_figures(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    _write_lightning_csv(csv_path)
    paths = curve_plots.plot_training_curves(csv_path, tmp_path / "plots")
    assert [p.name for p in paths] == [curve_plots.LOSS_PNG, curve_plots.VAL_PNG, curve_plots.LR_PNG]
    assert all(_is_png(p) for p in paths)


def test_plot_training_curves_without_lr_or_val(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.5\n")
    paths = curve_plots.plot_training_curves(csv_path, tmp_path)
    assert [p.name for p in paths] == [curve_plots.LOSS_PNG]


def test_plot_functions_write_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(5, 50, 100)
    pred = y + rng.normal(0, 1, 100)
    cm = rng.integers(0, 10, (5, 5)) + np.diag([30] * 5)
    cm[4] = 0  # a class without samples must not divide by zero
    images = [rng.random((16, 16)), rng.integers(0, 255, (16, 20, 3), dtype=np.uint8), rng.random((3, 8, 8))]
    outputs = [
        plots.plot_pred_vs_true(y, pred, tmp_path / "scatter.png", title="length"),
        plots.plot_pred_vs_true([], [], tmp_path / "scatter_empty.png", title="empty"),
        plots.plot_error_histogram(pred - y, tmp_path / "hist.png", title="errors", unit="px"),
        plots.plot_confusion_matrix(cm, list("abcde"), tmp_path / "cm.png", title="classes"),
        plots.plot_confusion_matrix(np.eye(20) * 7, [f"c{i}" for i in range(20)], tmp_path / "cm20.png", title="many"),
        plots.plot_bar_with_errors(["a", "b"], [1.0, 2.0], [0.1, None], tmp_path / "bar.png", title="t", ylabel="s"),
        plots.plot_image_grid(images, ["a", "b", "c"], tmp_path / "sub" / "grid.png", ncols=2),
    ]
    for out in outputs:
        assert _is_png(out), out


def test_write_report_contains_metrics_curves_and_escaped_config(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "run")
    extra = plots.plot_error_histogram([0.1, -0.2, 0.3], run_dir / "plots" / "errors.png", title="errors")
    section = Section(
        "Length <pipeline>",
        figures=[Figure("Errors", extra, caption="signed"), Figure("Gone", Path("plots/missing.png"))],
        table={"n_test": 12, "bias_mm": 0.123456},
        html="<p id='trusted'>extra</p>",
    )
    report = write_report(run_dir, title="demo <run>", sections=[section])
    page = report.read_text(encoding="utf-8")

    assert report == run_dir / "report.html"
    assert "demo &lt;run&gt;" in page and "Length &lt;pipeline&gt;" in page
    for name, value in [("val/length_mae_mm", "0.6123"), ("epochs", "4"), ("skipped.missing_file", "3")]:
        assert re.search(rf"<td>{re.escape(name)}</td><td class=\"v\">{re.escape(value)}</td>", page), name
    assert "bias_mm" in page and "0.1235" in page
    assert "<p id='trusted'>extra</p>" in page
    assert "missing.png" in page  # noted, not crashed

    # the config value is escaped, never live markup
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<details>" in page

    srcs = _img_srcs(page)
    names = {Path(s).name for s in srcs}
    assert {curve_plots.LOSS_PNG, curve_plots.VAL_PNG, curve_plots.LR_PNG, "errors.png"} <= names
    assert srcs.count("plots/errors.png") == 1  # shown in its section, not again under "Other plots"
    for ref in _local_refs(page):
        assert not ref.startswith("/"), ref
        assert _is_png(run_dir / ref), ref

    # relative references survive moving the folder
    moved = shutil.move(run_dir, tmp_path / "elsewhere")
    for ref in srcs:
        assert (Path(moved) / ref).is_file()


def test_write_report_without_csv(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path / "run", with_csv=False)
    page = write_report(run_dir, title="no logs").read_text(encoding="utf-8")
    assert "val/length_mae_mm" in page
    assert "Training curves" not in page
    assert "<img" not in page
    assert not (run_dir / "plots").exists()


def test_write_report_tolerates_missing_and_broken_files(tmp_path: Path) -> None:
    empty = write_report(tmp_path / "empty", title="empty").read_text(encoding="utf-8")
    assert "nothing to report" in empty

    broken = tmp_path / "broken"
    (broken / "logs" / "csv").mkdir(parents=True)
    (broken / "metrics.json").write_text("{not json")
    (broken / "logs" / "csv" / "metrics.csv").write_text("epoch,step\n")
    page = write_report(broken, title="broken").read_text(encoding="utf-8")
    assert "Metrics" not in page


def test_write_index_links_runs_relatively(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    length = _make_run(out / "length")
    write_report(length, title="length")
    other = _make_run(out / "count", with_csv=False)
    plots.plot_bar_with_errors(["x"], [1.0], [0.1], other / "plots" / "bench.png", title="b", ylabel="s")

    index = write_index(
        out,
        title="demo <all>",
        runs={"length": length, "count": other, "absent": out / "nope"},
        summary={"length": {"mae_mm": 0.61234567}},
    )
    page = index.read_text(encoding="utf-8")

    assert index == out / "report.html"
    assert "demo &lt;all&gt;" in page
    assert 'href="length/report.html"' in page
    assert "0.6123" in page and "mae_mm" in page
    assert "val/length_mae_mm" in page  # no summary for "count": falls back to its metrics.json
    assert "run directory not found" in page
    assert "count/plots/bench.png" in _img_srcs(page)
    assert f"length/plots/{curve_plots.LOSS_PNG}" in _img_srcs(page)
    for ref in _local_refs(page):
        assert not ref.startswith("/") and (out / ref).is_file(), ref


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.61234567, "0.6123"),
        (12345, "12345"),
        (1234.5678, "1235"),
        (None, "\u2014"),
        (True, "true"),
        (math.nan, "nan"),
        (np.float32(0.5), "0.5"),
        (np.int64(7), "7"),
        ([1, 2.34567], "[1, 2.346]"),
        ("abc", "abc"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text
