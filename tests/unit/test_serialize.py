"""Tests for finescale.serialize."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from finescale.serialize import read_json, to_jsonable, write_json


def _strict_loads(text: str):
    def reject(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


@dataclass
class Inner:
    path: Path
    scores: np.ndarray


@dataclass
class Outer:
    name: str
    inner: Inner
    tags: tuple = ()
    extra: dict = field(default_factory=dict)


def test_numpy_scalars_become_python_numbers():
    out = to_jsonable({"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "u": np.uint8(255)})
    assert out == {"i": 3, "f": 0.5, "b": True, "u": 255}
    assert type(out["i"]) is int and type(out["f"]) is float and type(out["b"]) is bool


def test_numpy_arrays_become_nested_lists_with_nan_as_none():
    arr = np.array([[1.0, np.nan], [np.inf, -2.5]], dtype=np.float32)
    assert to_jsonable(arr) == [[1.0, None], [None, -2.5]]
    assert to_jsonable(np.arange(3, dtype=np.int16)) == [0, 1, 2]


def test_python_nan_and_inf_become_none():
    assert to_jsonable([math.nan, math.inf, -math.inf, 1.5]) == [None, None, None, 1.5]
    assert to_jsonable(np.float64("nan")) is None


def test_torch_tensors():
    assert to_jsonable(torch.tensor(2.5)) == 2.5
    assert type(to_jsonable(torch.tensor(7))) is int
    assert to_jsonable(torch.tensor([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert to_jsonable(torch.tensor([1.0, float("nan")], requires_grad=True)) == [1.0, None]
    assert to_jsonable(torch.tensor([0.5, 2.0], dtype=torch.bfloat16)) == [0.5, 2.0]


def test_paths_tuples_sets():
    out = to_jsonable({"p": Path("/a/b.png"), "t": (1, (2, 3)), "s": {3, 1, 2}})
    assert out == {"p": "/a/b.png", "t": [1, [2, 3]], "s": [1, 2, 3]}


def test_dict_keys_become_strings():
    out = to_jsonable({1: "a", Path("x/y"): "b", np.int32(2): "c", None: "d"})
    assert out == {"1": "a", "x/y": "b", "2": "c", "null": "d"}
    assert all(isinstance(k, str) for k in out)


def test_dataclasses_are_converted_recursively():
    obj = Outer("run", Inner(Path("img.png"), np.array([0.25, np.nan])), tags=("a", "b"), extra={"k": np.float64(1)})
    assert to_jsonable(obj) == {
        "name": "run",
        "inner": {"path": "img.png", "scores": [0.25, None]},
        "tags": ["a", "b"],
        "extra": {"k": 1.0},
    }


def test_pydantic_models_use_model_dump():
    pydantic = pytest.importorskip("pydantic")

    class Cfg(pydantic.BaseModel):
        lr: float
        out: Path
        sizes: tuple[int, ...]

    assert to_jsonable({"cfg": Cfg(lr=1e-3, out=Path("runs/x"), sizes=(1, 2))}) == {
        "cfg": {"lr": 1e-3, "out": "runs/x", "sizes": [1, 2]}
    }


def test_unknown_types_raise_type_error():
    with pytest.raises(TypeError, match="object"):
        to_jsonable({"x": object()})


def test_write_json_roundtrip_creates_parents_and_is_strict(tmp_path: Path):
    target = tmp_path / "a" / "b" / "metrics.json"
    written = write_json(target, {"loss": np.float32(0.25), "bad": float("nan"), "t": torch.tensor([1, 2])})
    assert written == target
    text = target.read_text(encoding="utf-8")
    assert _strict_loads(text) == {"loss": 0.25, "bad": None, "t": [1, 2]}
    assert read_json(target) == {"loss": 0.25, "bad": None, "t": [1, 2]}
    assert text.startswith('{\n  "loss"')  # indent=2 by default
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]  # no temp file left behind


def test_write_json_replaces_existing_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "m.json"
    write_json(target, {"v": 1})
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(src).parent == tmp_path and Path(src) != target
        assert read_json(target) == {"v": 1}  # old content still in place until the rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_json(target, {"v": 2}, indent=None)
    assert len(calls) == 1 and calls[0][1] == target
    assert read_json(target) == {"v": 2}
    assert "\n  " not in target.read_text()


def test_write_json_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "m.json"
    write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json(target, {"v": object()})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_json(target, {"v": 3})
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
