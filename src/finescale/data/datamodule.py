"""The DataModule every manifest-based pipeline shares: load train/val manifests once, build datasets, serve
loaders with the trainer config's batch size and workers. A pipeline says how to load and how to wrap records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from finescale.data.manifest import Manifest


class ManifestDataModule(L.LightningDataModule):
    """Subclasses implement ``load_manifest`` and ``make_dataset``; ``manifests`` keeps the skip counts."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.manifests: dict[str, Manifest] = {}

    def load_manifest(self, path: Path) -> Manifest:
        raise NotImplementedError

    def make_dataset(self, records: Sequence[dict], *, train: bool) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if "train" in self.manifests:  # Lightning calls setup per stage; the data is read once
            return
        self.manifests["train"] = self.load_manifest(self.cfg.train_json)
        self.manifests["val"] = self.load_manifest(self.cfg.val_json)
        self.train_set = self.make_dataset(self.manifests["train"].records, train=True)
        self.val_set = self.make_dataset(self.manifests["val"].records, train=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: Dataset, *, shuffle: bool) -> DataLoader:
        workers = self.cfg.trainer.num_workers
        return DataLoader(
            dataset,
            batch_size=self.cfg.trainer.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=shuffle and len(dataset) > self.cfg.trainer.batch_size,
        )
