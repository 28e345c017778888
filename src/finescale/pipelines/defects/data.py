"""Data of the ``defects`` pipeline: COCO tool groups -> resized views -> batches (docs/defects_design.md).

A batch is ``{"images": (B, V, 3, H, W) float32 in [0, 1], "view_mask": (B, V) bool, "targets": B*V dicts
{"boxes": (K, 4) float32 xyxy model px, "labels": (K,) int64 1..C} (index b*V + v), "image_ids": (B, V) int64 (-1 for
a missing view), "scales": (B, V, 2) float32 (sx, sy) model px per original px}``. Soft Teacher training gets
``{"labeled": batch, "unlabeled": batch}``; the unlabeled batch is the weak view (resize + flip) with empty targets,
and the training step makes the strong view from it (``data/detection_augment.strong_view``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from finescale.data.coco import CocoData, load_coco
from finescale.data.detection_augment import hflip_boxes
from finescale.data.images import read_image
from finescale.errors import FinescaleError, ImageReadError
from finescale.pipelines.defects.config import DefectsConfig

__all__ = ["DefectsDataModule", "ToolGroups", "collate_groups", "group_loader"]

log = logging.getLogger("finescale")


def _empty_target() -> dict[str, Tensor]:
    return {"boxes": torch.zeros(0, 4, dtype=torch.float32), "labels": torch.zeros(0, dtype=torch.int64)}


class ToolGroups(Dataset):
    """One item per tool group of a :class:`CocoData`: its V views resized to ``image_size`` (H, W), boxes scaled.

    ``train``: random horizontal flip of the whole tool (all views together, p 0.5) when ``flip``; draws from torch's
    global RNG, which Lightning seeds (per worker too). ``labeled`` False: targets stay empty (Soft Teacher's unlabeled
    images). A missing view, or one whose file fails to read, is zeros with ``view_mask`` False (a warning once)."""

    def __init__(
        self,
        coco: CocoData,
        image_size: tuple[int, int],
        *,
        train: bool = False,
        flip: bool = True,
        labeled: bool = True,
    ) -> None:
        self.coco = coco
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.flip = train and flip
        self.labeled = labeled
        self.views = coco.views or 1
        self._warned = False

    def __len__(self) -> int:
        return len(self.coco.records)

    def _read(self, image_id: int) -> tuple[np.ndarray, float, float] | None:
        """The view resized to (H, W) as (H, W, 3) float32, with (sx, sy); None when the file cannot be read."""
        path = self.coco.image_path(image_id)
        try:
            image = read_image(path, "rgb")
        except ImageReadError as exc:
            if not self._warned:
                log.warning("%s; the view is masked out (further unreadable views are masked silently)", exc)
                self._warned = True
            return None
        height, width = self.image_size
        h0, w0 = image.shape[:2]
        # area interpolation when shrinking so thin rust bands and chip edges average instead of aliasing
        interp = cv2.INTER_AREA if h0 > height or w0 > width else cv2.INTER_LINEAR
        return cv2.resize(image, (width, height), interpolation=interp), width / w0, height / h0

    def __getitem__(self, index: int) -> dict:
        height, width = self.image_size
        group = self.coco.records[index]
        flip = self.flip and bool(torch.rand(()) < 0.5)
        images = torch.zeros(self.views, 3, height, width)
        mask = torch.zeros(self.views, dtype=torch.bool)
        ids = torch.full((self.views,), -1, dtype=torch.int64)
        scales = torch.ones(self.views, 2)
        targets = [_empty_target() for _ in range(self.views)]
        for v, image_id in enumerate(group.image_ids):
            read = None if image_id is None else self._read(image_id)
            if read is None:
                continue
            pixels, sx, sy = read
            image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
            images[v], mask[v], ids[v], scales[v] = image, True, image_id, torch.tensor([sx, sy])
            if self.labeled:
                boxes = torch.from_numpy(self.coco.boxes[image_id]) * torch.tensor([sx, sy, sx, sy])
                labels = torch.from_numpy(self.coco.labels[image_id])
                targets[v] = {"boxes": boxes.float(), "labels": labels.long()}
        if flip:
            images = images.flip(-1)
            for target in targets:
                target["boxes"] = hflip_boxes(target["boxes"], width)
        return {"images": images, "view_mask": mask, "targets": targets, "image_ids": ids, "scales": scales}


def collate_groups(items: list[dict]) -> dict:
    """Items of :class:`ToolGroups` -> the batch of docs/defects_design.md (targets view-major: index b*V + v)."""
    return {
        "images": torch.stack([it["images"] for it in items]),
        "view_mask": torch.stack([it["view_mask"] for it in items]),
        "targets": [target for it in items for target in it["targets"]],
        "image_ids": torch.stack([it["image_ids"] for it in items]),
        "scales": torch.stack([it["scales"] for it in items]),
    }


def group_loader(
    dataset: Dataset, *, batch_size: int, num_workers: int = 0, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """A DataLoader of tool groups; shuffled ones draw their order from a generator seeded by ``seed``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_groups,
        drop_last=shuffle and len(dataset) > batch_size,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


class DefectsDataModule(L.LightningDataModule):
    """Reads the COCO files once (``manifests`` keeps their skip counts for metrics.json) and serves labeled
    batches, or ``{"labeled", "unlabeled"}`` batches (``CombinedLoader``, ``max_size_cycle``) for Soft Teacher."""

    def __init__(self, cfg: DefectsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.manifests: dict[str, CocoData] = {}

    @property
    def semi_supervised(self) -> bool:
        return self.cfg.semi.semi_supervised

    def _load(self, path: Path | None, flag: str) -> CocoData:
        if path is None:
            raise FinescaleError(f"the defects pipeline needs {flag} FILE (a COCO file)")
        return load_coco(path, views=self.cfg.data.views)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and "train" not in self.manifests:
            if self.semi_supervised and self.cfg.data.unlabeled_json is None:
                raise FinescaleError(
                    "Soft Teacher training needs --unlabeled-json FILE (a COCO file of unlabeled images);"
                    " give one, or train supervised only with --no-semi-supervised"
                )
            self.manifests["train"] = self._load(self.cfg.train_json, "--train-json")
            if self.semi_supervised:
                self.manifests["unlabeled"] = self._load(self.cfg.data.unlabeled_json, "--unlabeled-json")
        if "val" not in self.manifests:
            self.manifests["val"] = self._load(self.cfg.val_json, "--val-json")
        train, val = self.manifests.get("train"), self.manifests["val"]
        if train is not None and val.categories != train.categories:
            raise FinescaleError(
                f"{val.path} has the categories {val.categories} but {train.path} has {train.categories}:"
                " validation must use the training file's categories"
            )

    @property
    def categories(self) -> list[str]:
        return (self.manifests.get("train") or self.manifests["val"]).categories

    @property
    def category_ids(self) -> list[int]:
        return (self.manifests.get("train") or self.manifests["val"]).category_ids

    def _size(self) -> tuple[int, int]:
        return self.cfg.data.image_height, self.cfg.data.image_width

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        trainer, flip = self.cfg.trainer, self.cfg.data.flip
        labeled = group_loader(
            ToolGroups(self.manifests["train"], self._size(), train=True, flip=flip),
            batch_size=trainer.batch_size,
            num_workers=trainer.num_workers,
            shuffle=True,
            seed=trainer.seed,
        )
        if not self.semi_supervised:
            return labeled
        unlabeled = group_loader(
            ToolGroups(self.manifests["unlabeled"], self._size(), train=True, flip=flip, labeled=False),
            batch_size=trainer.batch_size * self.cfg.semi.unsup_ratio,
            num_workers=trainer.num_workers,
            shuffle=True,
            seed=trainer.seed + 1,
        )
        return CombinedLoader({"labeled": labeled, "unlabeled": unlabeled}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.manifests["val"])

    def eval_dataloader(self, coco: CocoData) -> DataLoader:
        """Labeled groups of any COCO file, in file order, without augmentation (evaluation, prediction)."""
        return group_loader(
            ToolGroups(coco, self._size()),
            batch_size=self.cfg.trainer.batch_size,
            num_workers=self.cfg.trainer.num_workers,
        )
