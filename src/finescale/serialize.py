"""Turn run results (numpy, torch, paths, dataclasses, pydantic models) into plain JSON and write it atomically."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

__all__ = ["read_json", "to_jsonable", "write_json"]


def _key(key: Any) -> str:
    """Dict key as a string; non-string keys are written the way ``json.dumps`` would write them."""
    if isinstance(key, str):
        return key
    value = to_jsonable(key)
    return value if isinstance(value, str) else json.dumps(value, allow_nan=False)


def _tensor_to_jsonable(tensor: Any) -> Any:
    torch = sys.modules["torch"]
    tensor = tensor.detach()
    if tensor.is_complex():
        raise TypeError("cannot convert a complex tensor to JSON")
    if tensor.dtype.is_floating_point and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # bfloat16 / float16 / float8 have no exact Python counterpart in .tolist()
    return to_jsonable(tensor.cpu().tolist())


def to_jsonable(obj: Any) -> Any:
    """Recursively convert ``obj`` into values that ``json.dumps(..., allow_nan=False)`` accepts.

    numpy scalars/arrays and torch tensors become numbers or nested lists, paths become strings, tuples and sets
    become lists, dataclasses and pydantic models become dicts, dict keys become strings and NaN/inf become None.
    Raises TypeError for anything else.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)  # also turns IntEnum members into plain ints
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        if isinstance(obj, np.complexfloating):
            raise TypeError("cannot convert a complex number to JSON")
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        if np.iscomplexobj(obj):
            raise TypeError("cannot convert a complex array to JSON")
        return to_jsonable(obj.tolist())
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported: no import cost here
    if torch is not None and isinstance(obj, torch.Tensor):
        return _tensor_to_jsonable(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)  # deterministic output when the items are comparable
        except TypeError:
            return items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump) and not isinstance(obj, type):
        return to_jsonable(model_dump(mode="json"))
    raise TypeError(f"cannot convert {type(obj).__module__}.{type(obj).__qualname__} to JSON")


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Write ``to_jsonable(obj)`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    Parent folders are created. Readers never see a half-written file, and a failure leaves any old file intact.
    Returns the path written.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)  # mkstemp creates the file 0600
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file (UTF-8, a leading BOM is tolerated). Errors propagate as OSError / json.JSONDecodeError."""
    return json.loads(Path(path).read_text(encoding="utf-8-sig"))
