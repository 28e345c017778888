"""Prediction files in the shapes CT-RATE users already have, their readers, and scoring any such file.

* CSV, shaped like CT-RATE's labels CSV: a ``VolumeName`` column, then one column per label (CT-RATE's order) holding
  the probability instead of the 0/1 label. Probabilities are written with 9 significant digits (exact for float32,
  so no ties appear that the model did not make).
* JSON: a list of ``{"name": VolumeName, "probabilities": {label: p}, "uncertainty": {label: u}}``, ``uncertainty``
  only when there is one. The readers also take the same records one per line (``.jsonl``).

Volumes are matched by ``VolumeName`` without folder and without a volume extension (``.nii.gz``, ``.nii``, ``.mha``:
:func:`finescale.data.ct_io.volume_stem`), so ``valid_1_a_1.nii.gz`` in the labels CSV matches ``valid_1_a_1.mha``
or ``valid_1_a_1`` in someone else's predictions. Label names default to CT-RATE's 18 (:data:`finescale.data.ct_io.
LABELS`, in its CSV order); columns are found by name, so their order in a file does not matter, and other columns
are ignored. Problems with a file (a missing column, a cell that is not a number, a duplicated volume, a labelled
volume without prediction) raise :class:`FinescaleError` with one line.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finescale.data.ct_io import LABELS, volume_stem
from finescale.errors import FinescaleError
from finescale.eval.multilabel import as_numpy, vlm3d_scores
from finescale.serialize import write_json

log = logging.getLogger("finescale")

VOLUME_COLUMN = "VolumeName"
SHOWN_NAMES = 5  # how many volume names an error message lists


@dataclass(frozen=True)
class Predictions:
    """Per-volume probabilities (N, L) in ``names`` order, with an optional uncertainty (N, L)."""

    volumes: list[str]
    probabilities: np.ndarray
    names: list[str]
    uncertainty: np.ndarray | None = None


def volume_key(name: str) -> str:
    """The name a volume is matched by: no folder, no volume extension (``a/train_1_a_1.nii.gz`` -> ``train_1_a_1``)."""
    return volume_stem(name.strip())


def _format_probability(value: float) -> str:
    return format(float(value), ".9g")


def _check_table(volumes: Sequence[str], values: np.ndarray, names: Sequence[str], what: str) -> None:
    if values.shape != (len(volumes), len(names)):
        raise ValueError(f"{what} must be (N, L) = {(len(volumes), len(names))}, got {values.shape}")


def write_predictions_csv(
    path: str | Path, volumes: Sequence[str], probabilities: Any, names: Sequence[str] = LABELS
) -> Path:
    """Write ``VolumeName`` + one probability column per label name; ``probabilities`` (N, L) numpy or torch."""
    probs = as_numpy(probabilities)
    _check_table(volumes, probs, names, "probabilities")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([VOLUME_COLUMN, *names])
        for volume, row in zip(volumes, probs, strict=True):
            writer.writerow([volume, *(_format_probability(p) for p in row)])
    return path


def write_predictions_json(
    path: str | Path,
    volumes: Sequence[str],
    probabilities: Any,
    names: Sequence[str] = LABELS,
    *,
    uncertainty: Any | None = None,
) -> Path:
    """Write ``[{"name", "probabilities": {label: p}, "uncertainty": {label: u}}]``; arrays (N, L), numpy or torch."""
    probs = as_numpy(probabilities)
    _check_table(volumes, probs, names, "probabilities")
    spread = None if uncertainty is None else as_numpy(uncertainty)
    if spread is not None:
        _check_table(volumes, spread, names, "uncertainty")
    records = []
    for i, volume in enumerate(volumes):
        record: dict[str, Any] = {"name": volume, "probabilities": dict(zip(names, probs[i].tolist(), strict=True))}
        if spread is not None:
            record["uncertainty"] = dict(zip(names, spread[i].tolist(), strict=True))
        records.append(record)
    return write_json(path, records)


def _number(cell: Any, where: str) -> float:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        raise FinescaleError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise FinescaleError(f"{where}: {cell!r} is not a finite number")
    return value


def _read_csv_table(path: Path, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``VolumeName`` column and the ``names`` columns (any order, extra columns ignored) of a CSV -> (N,), (N, L)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in (VOLUME_COLUMN, *names) if c not in header]
            if missing:
                raise FinescaleError(f"{path}: missing column(s) {', '.join(missing)}")
            volumes, rows = [], []
            for line, row in enumerate(reader, start=2):
                volumes.append(row[VOLUME_COLUMN].strip())
                rows.append([_number(row[name], f"{path}, line {line}, column {name!r}") for name in names])
    except OSError as e:
        raise FinescaleError(f"cannot read {path}: {e.strerror or e}") from None
    return volumes, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))


def _load_records(path: Path) -> Any:
    """A JSON document, or for ``.jsonl`` the list of its non-empty lines' JSON values (``predict``'s output)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise FinescaleError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FinescaleError(f"{path} is not valid JSON: {e}") from None


def _read_json_records(path: Path, names: Sequence[str]) -> Predictions:
    records = _load_records(path)
    if not isinstance(records, list):
        raise FinescaleError(f"{path}: expected a list of {{'name', 'probabilities'}} records")
    volumes, probs, spreads = [], [], []
    for i, record in enumerate(records):
        where = f"{path}, record {i}"
        if not isinstance(record, dict) or "name" not in record or not isinstance(record.get("probabilities"), dict):
            raise FinescaleError(f"{where}: expected {{'name': ..., 'probabilities': {{label: p}}}}")
        volumes.append(str(record["name"]).strip())
        probs.append(_label_values(record["probabilities"], names, f"{where}, probabilities"))
        if isinstance(record.get("uncertainty"), dict):
            spreads.append(_label_values(record["uncertainty"], names, f"{where}, uncertainty"))
    uncertainty = np.asarray(spreads, dtype=np.float64) if spreads and len(spreads) == len(records) else None
    return Predictions(
        volumes, np.asarray(probs, dtype=np.float64).reshape(len(probs), len(names)), list(names), uncertainty
    )


def _label_values(mapping: dict[str, Any], names: Sequence[str], where: str) -> list[float]:
    missing = [name for name in names if name not in mapping]
    if missing:
        raise FinescaleError(f"{where}: missing label(s) {', '.join(missing)}")
    return [_number(mapping[name], f"{where}, {name!r}") for name in names]


def read_predictions(path: str | Path, names: Sequence[str] = LABELS) -> Predictions:
    """Read a predictions file by its suffix: ``.json`` (a list of records), ``.jsonl`` (one record a line), else CSV
    (``VolumeName`` + label columns)."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        return _read_json_records(path, names)
    volumes, probs = _read_csv_table(path, names)
    return Predictions(volumes, probs, list(names))


def read_labels_csv(path: str | Path, names: Sequence[str] = LABELS) -> tuple[list[str], np.ndarray]:
    """CT-RATE labels CSV -> (volume names (N,), 0/1 labels (N, L) in ``names`` order); other columns ignored."""
    volumes, labels = _read_csv_table(Path(path), names)
    bad = np.argwhere(~np.isin(labels, (0.0, 1.0)))
    if bad.size:
        row, col = bad[0]
        raise FinescaleError(f"{path}: {volumes[row]}, {names[col]!r}: label {labels[row, col]:g} is not 0 or 1")
    return volumes, labels.astype(np.int64)


def _index_by_key(volumes: Sequence[str], path: str | Path) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, volume in enumerate(volumes):
        key = volume_key(volume)
        if key in index:
            raise FinescaleError(f"{path}: volume {key!r} appears twice ({volumes[index[key]]!r}, {volume!r})")
        index[key] = i
    return index


def _shown(names: Sequence[str]) -> str:
    more = f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def align_predictions(
    label_volumes: Sequence[str], predictions: Predictions, *, labels_path: str | Path, predictions_path: str | Path
) -> np.ndarray:
    """Rows of ``predictions.probabilities`` in ``label_volumes`` order (N, L). A labelled volume without prediction
    is an error; predictions for unlabelled volumes are dropped with a warning."""
    _index_by_key(label_volumes, labels_path)
    by_key = _index_by_key(predictions.volumes, predictions_path)
    keys = [volume_key(v) for v in label_volumes]
    missing = [v for v, k in zip(label_volumes, keys, strict=True) if k not in by_key]
    if missing:
        raise FinescaleError(
            f"{predictions_path} has no prediction for {len(missing)} of the {len(keys)} volumes in {labels_path}: "
            f"{_shown(missing)}"
        )
    extra = sorted(set(by_key) - set(keys))
    if extra:
        log.warning(
            "%s: ignoring %d predictions for volumes not in %s: %s",
            predictions_path,
            len(extra),
            labels_path,
            _shown(extra),
        )
    return predictions.probabilities[[by_key[k] for k in keys]]


def score_files(
    labels_csv: str | Path, predictions_path: str | Path, names: Sequence[str] = LABELS, *, prefix: str = "ct_"
) -> dict[str, float]:
    """Score a predictions file (CSV or JSON, ours or anyone's) against a CT-RATE labels CSV with
    :func:`finescale.eval.multilabel.vlm3d_scores`, matching rows by ``VolumeName``."""
    label_volumes, labels = read_labels_csv(labels_csv, names)
    if not label_volumes:
        raise FinescaleError(f"{labels_csv} has no labelled volume")
    predictions = read_predictions(predictions_path, names)
    probs = align_predictions(label_volumes, predictions, labels_path=labels_csv, predictions_path=predictions_path)
    if probs.min() < 0.0 or probs.max() > 1.0:
        raise FinescaleError(
            f"{predictions_path}: probabilities must lie in [0, 1] (found {probs.min():.4g} .. {probs.max():.4g})"
        )
    return vlm3d_scores(probs, labels, names, prefix=prefix)
