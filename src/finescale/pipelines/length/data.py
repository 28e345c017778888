"""Data for the ``length`` pipeline: manifest records -> multi-scale views (+ end crops) -> batches.

A batch is a dict: ``scales`` = list over scales of (B, 1, s, s) float in [0, 1]; ``crops`` = (B, R, 1, c, c) with the
collar crop, the tip crop and (``whole_crop``) the whole implant, R = 2 or 3 (only when crops are on);
``geometry`` = (B, 4) scale-free measurements of the implant (only with ``use_geometry``); ``profile`` = (B, 5, P)
intensity profiles along the implant axis (only with ``use_profile``); ``length_mm`` = (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset

from finescale.data.datamodule import ManifestDataModule
from finescale.data.images import letterbox_square, read_image
from finescale.data.manifest import FieldSpec, Manifest, load_manifest
from finescale.data.regions import axis_geometry, axis_profiles, find_bright_axis, object_crops
from finescale.data.transforms import RandFlipAndExposure, RandShiftZoom
from finescale.data.transforms import resize_image as _resize
from finescale.pipelines.length.config import LengthModelConfig

FIELDS = (FieldSpec("image", "image"), FieldSpec("length_mm", "float", low=0.5, high=100.0))


def load_records(path: str | Path) -> Manifest:
    return load_manifest(path, FIELDS)


def prepare_views(image: np.ndarray, model_cfg: LengthModelConfig) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """The deterministic front of the pipeline for one grey image (H, W) in [0, 1]: padded to a square, resized to
    every scale, and the two end crops read from the full-resolution image."""
    square, _ = letterbox_square(image)
    views: dict[str, torch.Tensor | list[torch.Tensor]] = {
        "scales": [torch.from_numpy(_resize(square, s))[None] for s in model_cfg.scales]
    }
    if model_cfg.use_crops or model_cfg.use_geometry or model_cfg.use_profile:
        axis = find_bright_axis(image)
    if model_cfg.use_crops:
        crops = object_crops(
            image, axis, out=model_cfg.crop_size, side_frac=model_cfg.crop_frac, whole=model_cfg.whole_crop
        )
        views["crops"] = torch.from_numpy(crops)[:, None]
    if model_cfg.use_geometry:
        views["geometry"] = torch.from_numpy(axis_geometry(axis, image.shape))
    if model_cfg.use_profile:
        views["profile"] = torch.from_numpy(axis_profiles(image, axis, samples=model_cfg.profile_samples))
    return views


class LengthDataset(Dataset):
    """Records -> views. With ``cache`` the deterministic views of every image are computed once (float16)."""

    def __init__(self, records: Sequence[dict], model_cfg: LengthModelConfig, *, augment: bool, cache: bool) -> None:
        self.records = list(records)
        self.model_cfg = model_cfg
        self.augment = RandFlipAndExposure() if augment else None
        self.shift_zoom = RandShiftZoom() if augment else None
        self._cache: list[dict] | None = None
        if cache:
            self._cache = [
                _to_half(prepare_views(read_image(r["image"]), model_cfg))
                for r in track(self.records, description="preparing images", transient=True)
            ]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        if self._cache is not None:
            views = self._cache[index]
        else:
            views = prepare_views(read_image(self.records[index]["image"]), self.model_cfg)
        scales = [v.float() for v in views["scales"]]
        if self.shift_zoom is not None:
            scales = self.shift_zoom(scales)
        flat = scales + ([views["crops"].float()] if "crops" in views else [])
        flipped = False
        if self.augment is not None:
            flat, flipped = self.augment(flat)
        n = len(self.model_cfg.scales)
        item = {"scales": flat[:n], "length_mm": torch.tensor(self.records[index]["length_mm"], dtype=torch.float32)}
        if "crops" in views:
            item["crops"] = flat[n]
        if "geometry" in views:
            geometry = views["geometry"].float().clone()
            if flipped:
                geometry[3] = -geometry[3]  # a mirrored image tilts the other way
            item["geometry"] = geometry
        if "profile" in views:
            profile = views["profile"].float()
            item["profile"] = profile.flip(0) if flipped else profile  # mirrored: left and right offsets swap
        return item


def _to_half(views: dict) -> dict:
    return {k: [t.half() for t in v] if isinstance(v, list) else v.half() for k, v in views.items()}


class LengthDataModule(ManifestDataModule):
    def load_manifest(self, path: Path) -> Manifest:
        return load_records(path)

    def make_dataset(self, records: Sequence[dict], *, train: bool) -> Dataset:
        data_cfg = self.cfg.data
        return LengthDataset(records, self.cfg.model, augment=train and data_cfg.augment, cache=data_cfg.cache)
