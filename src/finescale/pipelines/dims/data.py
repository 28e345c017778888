"""Data for the ``dims`` pipeline: manifest records -> one padded, resized grey view + targets -> batches.

A batch is a dict: ``image`` (B, 1, S, S) float in [0, 1]; ``length_mm``, ``diameter_mm`` (B,) float;
``company``, ``model`` (B,) long indices into the config's vocabularies, -1 for a name the vocabulary lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset

from finescale.data.datamodule import ManifestDataModule
from finescale.data.images import read_image
from finescale.data.manifest import FieldSpec, Manifest, load_manifest
from finescale.data.regions import find_bright_axis, whole_object_crop
from finescale.data.transforms import RandFlipAndExposure, square_view
from finescale.pipelines.dims.config import DimsConfig

REGRESS_FIELDS = (
    FieldSpec("image", "image"),
    FieldSpec("length_mm", "float", low=0.5, high=100.0),
    FieldSpec("diameter_mm", "float", low=0.5, high=30.0),
    FieldSpec("company", "str", required=False),
    FieldSpec("model", "str", required=False),
)


def classify_fields(target: str) -> tuple[FieldSpec, ...]:
    """A classifier needs the image and its own label only; sizes may be missing."""
    return (FieldSpec("image", "image"), FieldSpec(target, "str"))


def load_records(path: str | Path, *, target: str | None = None, check_images: bool = True) -> Manifest:
    return load_manifest(path, classify_fields(target) if target else REGRESS_FIELDS, check_images=check_images)


def read_vocabularies(path: str | Path) -> dict[str, list[str]]:
    """Company and model vocabularies of a manifest, read without decoding images (labels only)."""
    fields = (FieldSpec("company", "str", required=False), FieldSpec("model", "str", required=False))
    records = load_manifest(path, fields, check_images=False).records
    return {"companies": vocabulary(records, "company"), "models": vocabulary(records, "model")}


def vocabulary(records: Sequence[dict], key: str) -> list[str]:
    """Sorted distinct non-empty values of ``key``: the label order a classifier and its checkpoint keep."""
    return sorted({r[key] for r in records if r.get(key)})


def combination(record: dict) -> tuple[str, float, float]:
    """(model, length, diameter) with sizes rounded to 0.01 mm, so float noise cannot make a seen size unseen."""
    return str(record.get("model", "")), round(float(record["length_mm"]), 2), round(float(record["diameter_mm"]), 2)


def prepare_image(image: np.ndarray, size: int, view: str = "implant") -> torch.Tensor:
    """The deterministic front for one grey image (H, W) in [0, 1]: (1, size, size) float32. ``implant``: the
    implant found in the image, upright, filling the frame (threads, collar and apex at full detail); ``image``: the
    whole radiograph padded to a square (the seed's input)."""
    if view == "implant":
        return torch.from_numpy(whole_object_crop(image, find_bright_axis(image), out=size))[None]
    return torch.from_numpy(square_view(image, size))[None]


class DimsDataset(Dataset):
    """Records -> items. With ``cache`` each image's resized view is computed once and kept as float16."""

    def __init__(
        self,
        records: Sequence[dict],
        *,
        image_size: int,
        view: str,
        companies: Sequence[str],
        models: Sequence[str],
        augment: bool,
        cache: bool,
    ) -> None:
        self.records = list(records)
        self.image_size = image_size
        self.view = view
        self.company_index = {name: i for i, name in enumerate(companies)}
        self.model_index = {name: i for i, name in enumerate(models)}
        self.augment = RandFlipAndExposure() if augment else None
        self._cache: list[torch.Tensor] | None = None
        if cache:
            self._cache = [
                prepare_image(read_image(r["image"]), image_size, view).half()
                for r in track(self.records, description="preparing images", transient=True)
            ]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        if self._cache is not None:
            image = self._cache[index].float()
        else:
            image = prepare_image(read_image(record["image"]), self.image_size, self.view)
        if self.augment is not None:
            (image,), _ = self.augment([image])
        return {
            "image": image,
            "length_mm": torch.tensor(float(record.get("length_mm", float("nan"))), dtype=torch.float32),
            "diameter_mm": torch.tensor(float(record.get("diameter_mm", float("nan"))), dtype=torch.float32),
            "company": torch.tensor(self.company_index.get(record.get("company", ""), -1), dtype=torch.long),
            "model": torch.tensor(self.model_index.get(record.get("model", ""), -1), dtype=torch.long),
        }


def make_dataset(cfg: DimsConfig, records: Sequence[dict], *, train: bool, cache: bool | None = None) -> DimsDataset:
    """Training (augmented) or evaluation dataset; ``cache`` defaults to the config's."""
    return DimsDataset(
        records,
        image_size=cfg.model.image_size,
        view=cfg.model.view,
        companies=cfg.data.companies,
        models=cfg.data.models,
        augment=train and cfg.data.augment,
        cache=cfg.data.cache if cache is None else cache,
    )


class DimsDataModule(ManifestDataModule):
    """Train/val datasets of either stage; a classifier run validates only the records that carry its label."""

    def load_manifest(self, path: Path) -> Manifest:
        target = self.cfg.classify.target if self.cfg.stage == "classify" else None
        return load_records(path, target=target)

    def make_dataset(self, records: Sequence[dict], *, train: bool) -> Dataset:
        return make_dataset(self.cfg, records, train=train)
