"""Manifest loading shared by all pipelines: read a JSON/JSONL list of records, validate them, count what is skipped."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from finescale.errors import EmptyManifestError, FinescaleError

__all__ = ["SKIP_REASONS", "FieldSpec", "Manifest", "check_manifest_file", "load_manifest"]

logger = logging.getLogger("finescale")

SKIP_REASONS = (
    "not_a_record",
    "missing_field",
    "empty_string",
    "not_a_number",
    "nan",
    "out_of_range",
    "missing_file",
    "unreadable_image",
)

_KINDS = ("image", "float", "int", "str")


@dataclass(frozen=True)
class FieldSpec:
    """One field a record must (or may) have; ``low``/``high`` give an inclusive range for numbers."""

    name: str
    kind: Literal["image", "float", "int", "str"]
    required: bool = True
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"FieldSpec {self.name!r}: kind must be one of {_KINDS}, got {self.kind!r}")
        if (self.low is not None or self.high is not None) and self.kind not in ("float", "int"):
            raise ValueError(f"FieldSpec {self.name!r}: low/high only apply to float and int fields")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"FieldSpec {self.name!r}: low {self.low} is above high {self.high}")


@dataclass
class Manifest:
    """Validated records of a manifest file, with the number of records skipped per reason."""

    path: Path
    records: list[dict]
    skipped: dict[str, int]
    n_total: int

    @property
    def n_valid(self) -> int:
        return len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> dict:
        """``{"n_total", "n_valid", "skipped"}`` for metrics.json."""
        return {"n_total": self.n_total, "n_valid": self.n_valid, "skipped": dict(self.skipped)}


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _read_raw(path: Path) -> list[Any]:
    """The manifest's list of raw records; FinescaleError (one sentence naming the file) when it cannot be had."""
    if not path.exists():
        raise FinescaleError(f"manifest file {path} does not exist")
    if not path.is_file():
        raise FinescaleError(f"manifest path {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FinescaleError(f"manifest file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise FinescaleError(f"cannot read manifest file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FinescaleError(f"manifest file {path} has invalid JSON on line {lineno}: {exc.msg}") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FinescaleError(
            f"manifest file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return data["records"]
    if isinstance(data, dict) and isinstance(data.get("images"), list):  # COCO (defects): its images are the records
        return data["images"]
    if not isinstance(data, list):
        raise FinescaleError(
            f'manifest file {path} must hold a list of records, {{"records": [...]}} or a COCO file with'
            f' "images", not a {type(data).__name__}'
        )
    return data


def check_manifest_file(path: str | os.PathLike[str]) -> None:
    """What can be checked of a manifest before anything heavy is imported: the file exists, and a JSON or JSONL
    one holds a list of records (other formats, such as a pipeline's CSV, are read by the pipeline). FinescaleError
    in one sentence naming the file otherwise."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        _read_raw(path)
    elif not path.exists():
        raise FinescaleError(f"manifest file {path} does not exist")
    elif not path.is_file():
        raise FinescaleError(f"manifest path {path} is not a file")


def _number(value: Any, spec: FieldSpec) -> int | float:
    """Convert a number (or a string holding one) for a float/int field, or raise _Skip with the reason."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Skip("not_a_number")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _Skip("not_a_number") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Skip("nan")
        if spec.kind == "int":
            if not value.is_integer():
                raise _Skip("not_a_number")
            value = int(value)
    number: int | float = value if spec.kind == "int" else float(value)
    if (spec.low is not None and number < spec.low) or (spec.high is not None and number > spec.high):
        raise _Skip("out_of_range")
    return number


def _validate(raw: Any, fields: Sequence[FieldSpec], root: Path) -> tuple[dict, list[str], str | None]:
    """Check one record field by field, stopping at the first failure.

    Returns (record, image paths still to decode, reason of the first failed check or None). The images to decode
    all come before the failed field, so a decode failure among them takes precedence over that reason.
    """
    if not isinstance(raw, dict):
        return {}, [], "not_a_record"
    record = dict(raw)
    to_decode: list[str] = []
    for spec in fields:
        value = raw.get(spec.name)
        blank = isinstance(value, str) and not value.strip()
        if value is None or (blank and not spec.required):
            if spec.required:
                return record, to_decode, "missing_field"
            record.pop(spec.name, None)  # optional and absent (None or blank counts as absent)
            continue
        try:
            if blank:
                raise _Skip("empty_string")
            if spec.kind in ("float", "int"):
                record[spec.name] = _number(value, spec)
            elif isinstance(value, bool) or not isinstance(value, str | int | float):
                raise _Skip("missing_field")  # a list, dict or bool is no usable string or path
            elif spec.kind == "str":
                record[spec.name] = str(value).strip()
            else:
                image = Path(str(value).strip()).expanduser()
                image = Path(os.path.abspath(image if image.is_absolute() else root / image))
                if not image.is_file():
                    raise _Skip("missing_file")
                record[spec.name] = str(image)
                to_decode.append(str(image))
        except _Skip as skip:
            return record, to_decode, skip.reason
    return record, to_decode, None


def _check_images(paths: set[str], workers: int) -> dict[str, str | None]:
    from finescale.data.images import check_image  # cv2 and PIL: imported when an image is checked, not before

    ordered = sorted(paths)
    if workers <= 1 or len(ordered) <= 1:
        return {p: check_image(p) for p in ordered}
    with ThreadPoolExecutor(max_workers=min(workers, len(ordered)), thread_name_prefix="finescale-check") as pool:
        return dict(zip(ordered, pool.map(check_image, ordered), strict=True))


def _format_counts(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))


def load_manifest(
    path: str | os.PathLike[str], fields: Sequence[FieldSpec], *, check_images: bool = True, workers: int = 4
) -> Manifest:
    """Load and validate a manifest (JSON list, ``{"records": [...]}`` or ``.jsonl``).

    Each record is checked field by field in ``fields`` order and skipped with the reason of its first failed check
    (see SKIP_REASONS). Image paths are resolved against the manifest's folder; with ``check_images`` each image is
    also fully decoded (``workers`` threads). Raises FinescaleError when the file cannot be read as a list of
    records, EmptyManifestError when no valid record is left.
    """
    path = Path(path)
    names = [spec.name for spec in fields]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate field names in {names}")
    raw_records = _read_raw(path)
    root = path.absolute().parent

    checked = [_validate(raw, fields, root) for raw in raw_records]
    decoded: dict[str, str | None] = {}
    if check_images:
        decoded = _check_images({p for _, to_decode, _ in checked for p in to_decode}, workers)

    records: list[dict] = []
    counts = dict.fromkeys(SKIP_REASONS, 0)
    for record, to_decode, reason in checked:
        if any(decoded.get(p) for p in to_decode):
            reason = "unreadable_image"
        if reason is None:
            records.append(record)
        else:
            counts[reason] += 1
    skipped = {reason: n for reason, n in counts.items() if n}

    n_total = len(raw_records)
    if skipped and records:  # with nothing left the error below says it all, in one line
        n_skipped = sum(skipped.values())
        logger.warning(
            "manifest %s: skipped %d of %s (%s)", path, n_skipped, _plural(n_total, "record"), _format_counts(skipped)
        )
    if not records:
        if n_total == 0:
            raise EmptyManifestError(f"no valid records in {path}: the file holds no records")
        raise EmptyManifestError(
            f"no valid records in {path}: {_plural(n_total, 'record')}, all skipped ({_format_counts(skipped)})"
        )
    return Manifest(path=path, records=records, skipped=skipped, n_total=n_total)
