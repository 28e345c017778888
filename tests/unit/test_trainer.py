from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from finescale.config import TrainerConfig, build_config
from finescale.engine.trainer import build_trainer
from finescale.pipelines.length.config import LengthConfig


@pytest.mark.parametrize(("devices", "strategy", "expected"), [("auto", "auto", 1), ("1", "auto", 1), ("2", "ddp", 2)])
def test_the_devices_string_goes_to_lightning_as_given(tmp_path: Path, devices: str, strategy: str, expected: int):
    cfg = TrainerConfig(accelerator="cpu", devices=devices, strategy=strategy, progress=False)
    trainer = build_trainer(cfg, tmp_path, monitor="val_loss", mode="min")
    assert trainer.num_devices == expected


class _Tiny(L.LightningModule):
    """8 training batches of 2 samples per epoch, a validation score to monitor."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=2)


@pytest.mark.parametrize(("flag", "steps"), [("1", 1), ("0.5", 4), ("3", 3), ("1.0", 8)])
def test_limit_train_batches_counts_or_takes_a_fraction(tmp_path: Path, flag: str, steps: int):
    """``--limit-train-batches 1`` trains on one batch (Lightning reads the float 1.0 as "all"), 0.5 on half."""
    cfg = build_config(LengthConfig, overrides={"limit_train_batches": flag, "epochs": 1, "accelerator": "cpu"})
    trainer = build_trainer(
        cfg.trainer.model_copy(update={"progress": False}), tmp_path, monitor="val_loss", mode="min"
    )
    trainer.fit(_Tiny())
    assert trainer.global_step == steps
