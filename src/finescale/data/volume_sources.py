"""Where ``pack`` finds its volumes: manifest records (JSON manifest or a list of records) or every ``.nii.gz`` /
``.nii`` / ``.mha`` under a folder or fsspec URL, each with its CT-RATE metadata row when there is one."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from finescale.data.ct_io import read_metadata_csv, volume_stem, volume_suffix
from finescale.data.manifest import _read_raw as read_manifest_records
from finescale.errors import FinescaleError

# ------------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class PackItem:
    """One volume to pack."""

    name: str  # VolumeName, e.g. "train_1_a_1.nii.gz"
    location: str  # local path or fsspec URL
    record: dict[str, Any] | None  # manifest record as given (labels, patient, ...); None for folder sources
    metadata: dict[str, Any] | None  # metadata CSV row (HU scaling, spacing), or None
    source_bytes: int | None  # size of the source file; None when it does not exist
    problem: str | None = None  # skip reason found while listing (e.g. a record without "volume")


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _jsonable(value: Any) -> Any:
    """Plain JSON values (numpy scalars and arrays, paths) so records survive json and msgpack."""

    def convert(obj: Any) -> Any:
        if isinstance(obj, np.ndarray | np.generic):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=convert))


def _size(location: str) -> int | None:
    try:
        if _is_url(location):
            fs, path = fsspec.core.url_to_fs(location)
            return int(fs.size(path))
        return os.stat(location.removeprefix("file://")).st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


class _MetadataTables:
    """Metadata CSVs read once each: ``metadata_csv`` for every volume, else the CSV a record names (or its own
    row). A volume finds its row by VolumeName, else by stem (``x.mha`` -> the row of ``x.nii.gz``)."""

    def __init__(self, forced: str | os.PathLike | None):
        self.forced = self._indexed(read_metadata_csv(forced)) if forced is not None else None
        self.by_path: dict[str, dict[str, dict[str, Any]]] = {}

    @staticmethod
    def _indexed(table: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """{VolumeName or stem: row}: one dict lookup per volume, not a scan of 50k rows."""
        return {volume_stem(name): row for name, row in table.items()} | dict(table)

    def row(self, name: str, record_metadata: Any = None, root: Path | None = None) -> dict[str, Any] | None:
        if self.forced is not None:
            table = self.forced
        elif isinstance(record_metadata, Mapping):
            return dict(record_metadata)
        elif isinstance(record_metadata, str) and record_metadata:
            csv_path = str(root / record_metadata if root is not None else record_metadata)
            if csv_path not in self.by_path:
                self.by_path[csv_path] = self._indexed(read_metadata_csv(csv_path))
            table = self.by_path[csv_path]
        else:
            return None
        row = table.get(os.path.basename(name)) or table.get(volume_stem(name))
        return dict(row) if row is not None else None


def _items_from_records(records: Sequence[Any], root: Path, tables: _MetadataTables) -> list[PackItem]:
    items = []
    for record in records:
        volume = record.get("volume") if isinstance(record, Mapping) else None
        if not isinstance(volume, str | os.PathLike) or not str(volume):
            items.append(PackItem(str(record)[:80], "", None, None, None, problem="missing_field"))
            continue
        volume = os.fspath(volume)
        location = volume if _is_url(volume) or os.path.isabs(volume) else str(root / volume)
        name = str(record.get("name") or os.path.basename(volume))
        row = tables.row(name, record.get("metadata"), root)
        items.append(PackItem(name, location, _jsonable(dict(record)), row, _size(location)))
    return items


def _items_from_fs(source: str, tables: _MetadataTables) -> list[PackItem]:
    """Every ``.nii.gz`` / ``.nii`` / ``.mha`` under ``source`` (recursively), sorted by path."""
    try:
        fs, root = fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as e:  # an unknown protocol, or its package (e.g. huggingface_hub) missing
        raise FinescaleError(f"cannot open pack source {source}: {e}") from None
    try:
        if not fs.exists(root):
            raise FinescaleError(f"pack source {source} does not exist")
        listing = {root: fs.info(root)} if fs.isfile(root) else fs.find(root, detail=True)
    except FinescaleError:
        raise
    except Exception as e:  # network and permission errors arrive as many types, by backend
        raise FinescaleError(f"cannot list pack source {source}: {type(e).__name__}: {e}") from None
    local = type(fs).__name__ == "LocalFileSystem"
    items = []
    for path, info in sorted(listing.items()):
        if info.get("type") == "directory" or not volume_suffix(path):
            continue
        name = os.path.basename(path)
        location = path if local else fs.unstrip_protocol(path)
        items.append(PackItem(name, location, None, tables.row(name), int(info.get("size") or 0)))
    return items


def discover(
    source: str | os.PathLike | Sequence[Mapping[str, Any]], metadata_csv: str | os.PathLike | None = None
) -> list[PackItem]:
    """The volumes of ``source``: a list of manifest records, a JSON/JSONL manifest (volume paths relative to it),
    or a folder / fsspec URL searched recursively for volume files."""
    tables = _MetadataTables(metadata_csv)
    if isinstance(source, Sequence) and not isinstance(source, str | bytes):
        items = _items_from_records(source, Path.cwd(), tables)
    elif Path(source).suffix.lower() in (".json", ".jsonl") and not _is_url(os.fspath(source)):
        manifest = Path(source)
        items = _items_from_records(read_manifest_records(manifest), manifest.parent, tables)
    else:
        items = _items_from_fs(os.fspath(source), tables)
    if not items:
        raise FinescaleError(f"no volumes ({', '.join(('.nii.gz', '.nii', '.mha'))}) found in {source}")
    return items
