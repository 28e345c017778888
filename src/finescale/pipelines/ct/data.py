"""Data of the ``ct`` pipeline: manifest records -> volumes in the packed store -> slices (or the whole volume) as
the model's input.

A record: ``{"volume": path, "name": VolumeName, "patient": ..., "labels": [18 x 0/1], "metadata": {...}}`` (what
``finescale synth ct`` writes; a CT-RATE labels CSV is turned into such records by :func:`records_from_csv`). The
deterministic front (HU, resampling, crop/pad) ran once when the store was packed; a dataset item reads only the
slices it needs from the store and applies the random tail (``views.py``). ``data.train_storage_share`` trains on
the leading training volumes that fit in a share of the training manifest's source-file bytes, counted as source
files or as stored files (:func:`volumes_within_budget`): the bench's data-budget pair.

A batch: ``slices`` (B, S, 3, H, W) float in [0, 1] (2-D) or ``volume`` (B, 1, Z, Y, X) (3-D); ``body`` (B, S, 1, H, W)
or (B, 1, Z, Y, X) body mask for CT-aware mixing; ``labels`` (B, 18) float.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from finescale.data.ct_io import LABELS, read_labels_csv, read_metadata_csv, volume_relpath
from finescale.data.datamodule import ManifestDataModule
from finescale.data.manifest import FieldSpec, Manifest, load_manifest
from finescale.data.volume_pack import pack
from finescale.data.volume_store import VolumeStore
from finescale.errors import FinescaleError
from finescale.pipelines.ct.config import CTConfig
from finescale.pipelines.ct.views import SliceViews

FIELDS = (FieldSpec("volume", "image"), FieldSpec("name", "str", required=False))
OVER_BUDGET = "over_storage_budget"  # skip reason of the training volumes a storage budget leaves out
MB = 1e6
log = logging.getLogger("finescale")


def _labels_ok(record: dict) -> bool:
    labels = record.get("labels")
    return isinstance(labels, list) and len(labels) == len(LABELS) and all(v in (0, 1) for v in labels)


def load_records(path: str | Path) -> Manifest:
    """Validated records of a JSON manifest, or of a CT-RATE labels CSV (volumes found in CT-RATE's nested layout
    under the CSV's folder or its ``volumes/``, metadata from ``metadata.csv`` beside it when present). Records with
    a missing volume or labels that are not 18 zeros and ones are skipped and counted."""
    path = Path(path)
    source = path if path.suffix.lower() != ".csv" else records_from_csv(path)
    manifest = load_manifest(source, FIELDS, check_images=False)
    good = [r for r in manifest.records if _labels_ok(r)]
    skipped = dict(manifest.skipped)
    if len(good) < len(manifest.records):
        skipped["out_of_range"] = skipped.get("out_of_range", 0) + len(manifest.records) - len(good)
    if not good:
        raise FinescaleError(f"no valid records in {path}: no record holds 18 labels of 0 or 1")
    for record in good:
        record.setdefault("name", Path(record["volume"]).name)
    return Manifest(path=manifest.path, records=good, skipped=skipped, n_total=manifest.n_total)


def records_from_csv(labels_csv: Path) -> Path:
    """The JSON manifest of a CT-RATE labels CSV, written to a temporary file (the data folder may be read-only)."""
    import json
    import tempfile

    root = labels_csv.parent
    meta_path = root / "metadata.csv"
    metadata = read_metadata_csv(meta_path) if meta_path.exists() else {}
    volumes = root / "volumes" if (root / "volumes").is_dir() else root
    records = []
    for name, labels in read_labels_csv(labels_csv).items():
        record = {"volume": str(volumes / volume_relpath(name)), "name": name, "labels": [int(v) for v in labels]}
        if name in metadata:
            record["metadata"] = metadata[name]
        records.append(record)
    handle = tempfile.NamedTemporaryFile("w", suffix=f"_{labels_csv.stem}.json", delete=False)  # paths are absolute
    with handle:
        json.dump(records, handle)
    return Path(handle.name)


def store_path(cfg: CTConfig, manifest: Path) -> Path:
    """The store a config reads: ``data.store``, else one per grid beside the manifest (shared by every run)."""
    if cfg.data.store is not None:
        return Path(cfg.data.store)
    z, y, x = cfg.data.spacing
    dz, dy, dx = cfg.data.shape
    return Path(manifest).parent / ".store" / f"{z:g}x{y:g}x{x:g}mm_{dz}x{dy}x{dx}"


def ensure_store(cfg: CTConfig, manifests: Sequence[Path], *, workers: int = 2) -> VolumeStore:
    """Pack the manifests' volumes into the config's store (a volume already there is skipped) and open it."""
    path = store_path(cfg, manifests[0])
    for manifest in manifests:
        pack(
            load_records(manifest).records,  # validated, volume paths absolute: a JSON manifest or a labels CSV
            path,
            spacing=tuple(cfg.data.spacing),
            shape=tuple(cfg.data.shape),
            workers=workers,
            metadata_csv=cfg.data.metadata_csv,
            progress=True,
        )
    return VolumeStore(path)


def storage_budget(records: Sequence[dict], source_bytes: Mapping[str, int], share: float) -> int:
    """``share`` of the records' source-file bytes, in whole bytes (rounded: 0.29 x 100 is 28.999... in floats)."""
    return round(share * sum(source_bytes[r["name"]] for r in records))


def volumes_within_budget(
    records: Sequence[dict],
    source_bytes: Mapping[str, int],
    stored_bytes: Mapping[str, int],
    share: float,
    fmt: str,
) -> list[dict]:
    """The leading ``records`` whose bytes, counted as ``fmt`` (``source``: ``source_bytes``, the files as
    downloaded; ``packed``: ``stored_bytes``, the files in the store), sum to at most :func:`storage_budget`. The
    first volume that does not fit ends the selection, as a download stopping at a full disk would: the kept volumes
    are a prefix of the manifest, the same for both counts up to where the smaller one stops. A budget that holds
    not even the first volume is a FinescaleError."""
    if fmt not in ("source", "packed"):
        raise ValueError(f"fmt must be 'source' or 'packed', got {fmt!r}")
    sizes = source_bytes if fmt == "source" else stored_bytes
    budget = storage_budget(records, source_bytes, share)
    kept: list[dict] = []
    used = 0
    for record in records:
        used += sizes[record["name"]]
        if used > budget:
            break
        kept.append(record)
    if not kept:
        first = f": the first, {records[0]['name']}, takes {sizes[records[0]['name']] / MB:.3f} MB" if records else ""
        raise FinescaleError(
            f"train_storage_share {share:g} is a budget of {budget / MB:.3f} MB ({fmt} bytes) that holds no "
            f"training volume{first}; raise the share"
        )
    return kept


def volume_sizes(records: Sequence[dict], store: VolumeStore) -> tuple[dict[str, int], dict[str, int]]:
    """({name: source-file bytes}, {name: bytes in the store}) of stored records. The source size is the one pack
    measured (the file may be a URL, or gone since); a volume stored without one is measured on disk now."""
    source, stored = {}, {}
    for record in records:
        name = record["name"]
        meta = store.meta(name)
        stored[name] = int(meta["stored_bytes"])
        size = meta.get("source_bytes")
        if size is None:
            path = Path(record["volume"])
            if not path.is_file():
                raise FinescaleError(f"no source-file size for {name}: not in the store's meta and {path} is missing")
            size = path.stat().st_size
        source[name] = int(size)
    return source, stored


class CTVolumes(Dataset):
    """Records -> model inputs from the store. ``view``: a test-time augmentation view (0 = as is); ``corrupt``:
    the robustness check's corrupted copy (stronger noise, motion, a shifted window)."""

    def __init__(
        self,
        records: Sequence[dict],
        store: VolumeStore,
        cfg: CTConfig,
        *,
        train: bool,
        view: int = 0,
        corrupt: bool = False,
    ) -> None:
        missing = [r["name"] for r in records if r["name"] not in store]
        if missing:
            raise FinescaleError(f"{len(missing)} volumes are not in the store {store.path} (first: {missing[0]})")
        self.records = list(records)
        self.store = store
        self.views = SliceViews(cfg, train=train, view=view, corrupt=corrupt)
        self.cache: dict[str, np.ndarray] | None = {} if cfg.data.cache else None

    def __len__(self) -> int:
        return len(self.records)

    def volume(self, name: str) -> np.ndarray:
        if self.cache is None:
            return self.store.read(name)
        if name not in self.cache:
            self.cache[name] = self.store.read(name)
        return self.cache[name]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))  # follows the seeded torch RNG
        item = self.views(self.volume(record["name"]), rng)
        item["labels"] = torch.tensor(record["labels"], dtype=torch.float32)
        return item


class CTDataModule(ManifestDataModule):
    """Train/val manifests -> datasets reading the packed store (packed on first use)."""

    def __init__(self, cfg: CTConfig, store: VolumeStore) -> None:
        super().__init__(cfg)
        self.store = store

    def load_manifest(self, path: Path) -> Manifest:
        return load_records(path)

    def setup(self, stage: str | None = None) -> None:
        first = "train" not in self.manifests
        super().setup(stage)
        if first and self.cfg.data.train_storage_share is not None:  # the training split only, never val/test
            self.manifests["train"] = self.train_within_budget(self.manifests["train"])
            self.train_set = self.make_dataset(self.manifests["train"].records, train=True)

    def train_within_budget(self, manifest: Manifest) -> Manifest:
        """The training manifest cut to ``data.train_storage_share``. The volumes left out count as skipped
        (``train_skipped_over_storage_budget`` in the run's metrics), so ``train_n_valid`` is the number trained on."""
        share, fmt = self.cfg.data.train_storage_share, self.cfg.data.train_storage_format
        source, stored = volume_sizes(manifest.records, self.store)
        kept = volumes_within_budget(manifest.records, source, stored, share, fmt)
        budget = storage_budget(manifest.records, source, share)
        log.info(
            "storage budget %.1f MB (%g of the training source files, counted %s) keeps %d of %d training volumes",
            budget / MB,
            share,
            fmt,
            len(kept),
            len(manifest.records),
        )
        skipped = {**manifest.skipped, OVER_BUDGET: len(manifest.records) - len(kept)}
        return dataclasses.replace(manifest, records=kept, skipped=skipped)

    def make_dataset(self, records: Sequence[dict], *, train: bool) -> Dataset:
        return CTVolumes(records, self.store, self.cfg, train=train)
