"""Tests for finescale.data.manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from finescale.data.manifest import SKIP_REASONS, FieldSpec, Manifest, load_manifest
from finescale.errors import EmptyManifestError, FinescaleError

FIELDS = [
    FieldSpec("image", "image"),
    FieldSpec("length", "float", low=0.0, high=100.0),
    FieldSpec("count", "int", required=False, low=0),
    FieldSpec("label", "str", required=False),
]


def _png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8), "L").save(path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A dataset folder with good images, a truncated PNG and a text file named .png."""
    _png(tmp_path / "imgs" / "good.png")
    _png(tmp_path / "imgs" / "other.png", 30)
    data = (tmp_path / "imgs" / "good.png").read_bytes()
    (tmp_path / "imgs" / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "imgs" / "text.png").write_text("not an image\n")
    return tmp_path


def _write(path: Path, records: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


GOOD = {"image": "imgs/good.png", "length": 11.5}


# --- each skip reason on its own ----------------------------------------------------------------------------------

CASES: list[tuple[str, Any]] = [
    ("not_a_record", 5),
    ("not_a_record", "imgs/good.png"),
    ("not_a_record", [1, 2]),
    ("not_a_record", None),
    ("missing_field", {"image": "imgs/good.png"}),
    ("missing_field", {"image": None, "length": 1.0}),
    ("missing_field", {"length": 1.0}),
    ("empty_string", {"image": "", "length": 1.0}),
    ("empty_string", {"image": "imgs/good.png", "length": "   "}),
    ("not_a_number", {"image": "imgs/good.png", "length": "abc"}),
    ("not_a_number", {"image": "imgs/good.png", "length": True}),
    ("not_a_number", {"image": "imgs/good.png", "length": [1.0]}),
    ("not_a_number", {"image": "imgs/good.png", "length": 1.0, "count": 2.5}),
    ("nan", {"image": "imgs/good.png", "length": "nan"}),
    ("nan", {"image": "imgs/good.png", "length": "inf"}),
    ("nan", {"image": "imgs/good.png", "length": "-Infinity"}),
    ("nan", {"image": "imgs/good.png", "length": float("nan")}),  # written as the NaN literal Python's json accepts
    ("out_of_range", {"image": "imgs/good.png", "length": -0.1}),
    ("out_of_range", {"image": "imgs/good.png", "length": "100.5"}),
    ("out_of_range", {"image": "imgs/good.png", "length": 1.0, "count": -1}),
    ("missing_file", {"image": "imgs/nope.png", "length": 1.0}),
    ("unreadable_image", {"image": "imgs/truncated.png", "length": 1.0}),
    ("unreadable_image", {"image": "imgs/text.png", "length": 1.0}),
]


@pytest.mark.parametrize(("reason", "bad"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_skip_reason_alone(root: Path, reason: str, bad: Any):
    m = load_manifest(_write(root / "m.json", [GOOD, bad]), FIELDS)
    assert m.skipped == {reason: 1}
    assert m.n_total == 2 and len(m.records) == 1
    assert m.records[0]["image"] == str(root / "imgs" / "good.png")


def test_skip_reasons_constant_is_complete():
    assert set(SKIP_REASONS) == {reason for reason, _ in CASES}


# --- conversions --------------------------------------------------------------------------------------------------


def test_values_are_converted(root: Path):
    records = [
        {"image": "imgs/good.png", "length": "11.5", "count": "3", "label": "  cat  ", "id": "a"},
        {"image": "imgs/other.png", "length": 7, "count": 4.0, "label": 12},
        {"image": "imgs/good.png", "length": 0, "count": None, "label": ""},
    ]
    m = load_manifest(_write(root / "m.json", records), FIELDS)
    assert m.skipped == {}
    r0, r1, r2 = m.records
    assert r0 == {"image": str(root / "imgs" / "good.png"), "length": 11.5, "count": 3, "label": "cat", "id": "a"}
    assert type(r0["length"]) is float and type(r0["count"]) is int
    assert type(r1["length"]) is float and r1["length"] == 7.0
    assert type(r1["count"]) is int and r1["count"] == 4
    assert r1["label"] == "12"
    assert "count" not in r2 and "label" not in r2  # optional fields given as None / blank are left out
    assert r2["length"] == 0.0  # low bound is inclusive


def test_range_bounds_are_inclusive(root: Path):
    records = [{"image": "imgs/good.png", "length": 0}, {"image": "imgs/good.png", "length": "100"}]
    m = load_manifest(_write(root / "m.json", records), FIELDS)
    assert [r["length"] for r in m.records] == [0.0, 100.0]


def test_first_failing_field_in_spec_order_wins(root: Path):
    bad_image_then_bad_number = {"image": "imgs/text.png", "length": "abc"}
    missing_then_bad_number = {"image": "imgs/nope.png", "length": "abc"}
    m = load_manifest(_write(root / "m.json", [GOOD, bad_image_then_bad_number, missing_then_bad_number]), FIELDS)
    assert m.skipped == {"unreadable_image": 1, "missing_file": 1}

    number_first = [FieldSpec("length", "float"), FieldSpec("image", "image")]
    m = load_manifest(root / "m.json", number_first)
    assert m.skipped == {"not_a_number": 2}


def test_check_images_false_only_checks_existence(root: Path):
    records = [GOOD, {"image": "imgs/text.png", "length": 1}, {"image": "imgs/nope.png", "length": 1}]
    m = load_manifest(_write(root / "m.json", records), FIELDS, check_images=False)
    assert m.skipped == {"missing_file": 1}
    assert len(m.records) == 2


def test_each_image_is_decoded_once_and_workers_agree(root: Path, monkeypatch: pytest.MonkeyPatch):
    import finescale.data.images as images_mod  # manifest imports check_image from there when it first checks one

    calls: list[str] = []
    real = images_mod.check_image

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(images_mod, "check_image", counting)
    records = [GOOD] * 5 + [{"image": "imgs/text.png", "length": 1}] * 3 + [{"image": "imgs/other.png", "length": 2}]
    path = _write(root / "m.json", records)
    serial = load_manifest(path, FIELDS, workers=1)
    assert sorted(calls) == sorted({str(root / "imgs" / n) for n in ("good.png", "text.png", "other.png")})
    threaded = load_manifest(path, FIELDS, workers=4)
    assert serial.records == threaded.records and serial.skipped == threaded.skipped == {"unreadable_image": 3}


# --- mixed and all-bad manifests ----------------------------------------------------------------------------------


def test_mixed_manifest_counts_and_summary(root: Path, caplog: pytest.LogCaptureFixture):
    records = [
        GOOD,
        {"image": "imgs/other.png", "length": 3},
        {"image": "imgs/nope.png", "length": 1},
        {"image": "imgs/nope2.png", "length": 1},
        {"image": "imgs/text.png", "length": 1},
        {"image": "imgs/good.png", "length": "abc"},
        {"image": "imgs/good.png"},
        "junk",
    ]
    with caplog.at_level(logging.INFO, logger="finescale"):
        m = load_manifest(_write(root / "train.json", records), FIELDS)
    assert isinstance(m, Manifest) and m.path == root / "train.json"
    assert m.skipped == {
        "missing_file": 2,
        "unreadable_image": 1,
        "not_a_number": 1,
        "missing_field": 1,
        "not_a_record": 1,
    }
    assert m.summary() == {"n_total": 8, "n_valid": 2, "skipped": m.skipped}
    json.dumps(m.summary())
    logs = [r for r in caplog.records if r.name == "finescale"]
    assert len(logs) == 1
    line = logs[0].getMessage()
    assert "train.json" in line and "6 of 8" in line and "missing_file: 2" in line and "not_a_record: 1" in line


def test_clean_manifest_logs_nothing(root: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="finescale"):
        m = load_manifest(_write(root / "m.json", [GOOD]), FIELDS)
    assert m.skipped == {} and m.summary() == {"n_total": 1, "n_valid": 1, "skipped": {}}
    assert not [r for r in caplog.records if r.name == "finescale"]


@pytest.mark.parametrize(
    ("n_missing", "n_nan", "counts"),
    [(8, 4, "missing_file: 8, not_a_number: 4"), (3, 9, "not_a_number: 9, missing_file: 3")],  # most frequent first
)
def test_all_bad_raises_one_line_error_naming_the_file(root: Path, n_missing: int, n_nan: int, counts: str):
    records = [{"image": f"imgs/nope{i}.png", "length": 1} for i in range(n_missing)]
    records += [{"image": "imgs/good.png", "length": "abc"} for _ in range(n_nan)]
    path = _write(root / "train.json", records)
    with pytest.raises(EmptyManifestError) as info:
        load_manifest(path, FIELDS)
    message = str(info.value)
    assert isinstance(info.value, FinescaleError)
    assert "\n" not in message
    assert message == f"no valid records in {path}: {n_missing + n_nan} records, all skipped ({counts})"


def test_empty_list_raises_empty_manifest_error(root: Path):
    with pytest.raises(EmptyManifestError, match=r"m\.json"):
        load_manifest(_write(root / "m.json", []), FIELDS)


# --- file formats and file errors ---------------------------------------------------------------------------------


def test_records_wrapper_and_jsonl(root: Path):
    m = load_manifest(_write(root / "wrapped.json", {"records": [GOOD, {"length": 1}]}), FIELDS)
    assert len(m.records) == 1 and m.skipped == {"missing_field": 1}

    lines = [json.dumps(GOOD), "", json.dumps({"image": "imgs/other.png", "length": 2}), "  "]
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    m = load_manifest(root / "m.jsonl", FIELDS)
    assert m.n_total == 2 and [r["length"] for r in m.records] == [11.5, 2.0]


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("missing.json", None, "does not exist"),
        ("broken.json", '[{"image": "a.png",', "not valid JSON"),
        ("object.json", '{"items": []}', "must hold a list"),
        ("number.json", "42", "must hold a list"),
        ("broken.jsonl", '{"image": "a.png"}\n{oops\n', "line 2"),
    ],
)
def test_unreadable_manifest_raises_finescale_error(tmp_path: Path, name: str, content: str | None, pattern: str):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(FinescaleError, match=pattern) as info:
        load_manifest(path, FIELDS)
    assert not isinstance(info.value, EmptyManifestError)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- path resolution ----------------------------------------------------------------------------------------------


def test_image_paths_resolve_against_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = tmp_path / "data"
    _png(data / "sub" / "a.png")
    _png(tmp_path / "shared" / "b.png")
    absolute = _png(tmp_path / "elsewhere" / "c.png")
    _png(tmp_path / "cwd" / "sub" / "a.png")  # same relative path under the cwd must not be picked
    monkeypatch.chdir(tmp_path / "cwd")
    records = [
        {"image": "sub/a.png", "length": 1},
        {"image": "../shared/b.png", "length": 2},
        {"image": str(absolute), "length": 3},
        {"image": "a.png", "length": 4},  # exists only under cwd/sub, not next to the manifest
    ]
    m = load_manifest(_write(data / "m.json", records), FIELDS)
    assert [r["image"] for r in m.records] == [
        str(data / "sub" / "a.png"),
        str(tmp_path / "shared" / "b.png"),
        str(absolute),
    ]
    assert m.skipped == {"missing_file": 1}
    assert all(Path(r["image"]).is_absolute() for r in m.records)


def test_relative_manifest_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _png(tmp_path / "ds" / "x.png")
    _write(tmp_path / "ds" / "m.json", [{"image": "x.png", "length": 1}])
    monkeypatch.chdir(tmp_path)
    m = load_manifest("ds/m.json", FIELDS)
    assert m.records[0]["image"] == str(tmp_path / "ds" / "x.png")


def test_field_spec_validation():
    with pytest.raises(ValueError):
        FieldSpec("x", "bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FieldSpec("x", "float", low=2, high=1)
    with pytest.raises(ValueError):
        load_manifest("unused.json", [FieldSpec("a", "str"), FieldSpec("a", "int")])
