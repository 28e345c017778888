"""The crash checkpoint: a run that raises mid-training leaves a last.ckpt that ``--resume`` can start from."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from finescale.engine.callbacks import SaveLastOnException


class Crash(RuntimeError):
    pass


class FailsAtStep(L.LightningModule):
    """A linear regression that raises when asked for the training step numbered ``fail_at`` (0-based)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.fail_at = fail_at

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == self.fail_at:
            raise Crash(f"crash at step {self.global_step}")
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_until_crash(tmp_path: Path, fail_at: int) -> tuple[FailsAtStep, Path]:
    L.seed_everything(0, verbose=False)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=generator), torch.randn(32, 1, generator=generator))
    module = FailsAtStep(fail_at)
    last = tmp_path / "run" / "last.ckpt"
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,  # no ModelCheckpoint: the only file can come from SaveLastOnException
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveLastOnException(last)],
    )
    with pytest.raises(Crash):
        trainer.fit(module, DataLoader(data, batch_size=4))  # 8 steps an epoch: the crash comes mid-epoch
    return module, last


def test_a_crash_after_some_steps_writes_last_ckpt_with_the_step_reached(tmp_path: Path):
    module, last = fit_until_crash(tmp_path, fail_at=5)
    assert last.exists()
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5
    # the weights of the crashed run, after its 5 updates, not the initial ones
    for key, value in module.state_dict().items():
        torch.testing.assert_close(ckpt["state_dict"][key], value)
    assert ckpt["optimizer_states"]  # enough to resume the optimiser too


def test_a_crash_before_the_first_step_writes_nothing(tmp_path: Path):
    _, last = fit_until_crash(tmp_path, fail_at=0)
    assert not last.exists() and not list(tmp_path.rglob("*.ckpt"))
