"""Progressive unfreezing with a real (tiny, CPU) Lightning Trainer: the right fraction trains at the right epoch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from finescale.engine.unfreeze import ProgressiveUnfreezing, fraction_at, set_trainable_fraction


class Tiny(L.LightningModule):
    """``body``: 4 Linear layers (8 parameter tensors) and a BatchNorm; ``head``: always trains."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
        self.head = nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.head(self.body(x)).squeeze(1), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(Callback):
    """Per epoch: which body tensors may train, and which changed during the epoch."""

    def __init__(self) -> None:
        self.trainable: list[list[bool]] = []
        self.changed: list[list[bool]] = []
        self.bn_training: list[bool] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Tiny) -> None:
        self.trainable.append([p.requires_grad for p in pl_module.body.parameters()])
        self.before = [p.detach().clone() for p in pl_module.body.parameters()]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Tiny, *args: object) -> None:
        self.bn_training.append(pl_module.body[1].training)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Tiny) -> None:
        after = list(pl_module.body.parameters())
        self.changed.append([not torch.equal(a, b) for a, b in zip(after, self.before, strict=True)])


def test_stages_follow_the_epochs_in_a_real_trainer():
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16)), batch_size=4)
    recorder = Recorder()
    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=2,
        callbacks=[ProgressiveUnfreezing(["body"], [(1, 0.5), (3, 1.0)]), recorder],
    )
    trainer.fit(Tiny(), train_dataloaders=data)
    n = 10  # 4 Linear layers x (weight, bias) + BatchNorm (weight, bias)
    frozen, half, full = [False] * n, [False] * 5 + [True] * 5, [True] * n
    assert recorder.trainable == [frozen, half, half, full]
    assert recorder.changed == [frozen, half, half, full]
    # epoch 0: the frozen BatchNorm keeps its statistics (eval mode); from epoch 3 on it trains normally
    assert recorder.bn_training[:2] == [False, False] and recorder.bn_training[-1] is True


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.0), (19, 0.0), (20, 0.5), (39, 0.5), (40, 1.0), (99, 1.0)])
def test_fraction_at_the_seed_schedule(epoch: int, expected: float):
    assert fraction_at([(20, 0.5), (40, 1.0)], epoch) == expected


def test_fraction_counts_from_the_last_tensors():
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))  # 6 tensors
    assert set_trainable_fraction(module, 1 / 3) == 2
    assert [p.requires_grad for p in module.parameters()] == [False] * 4 + [True] * 2
    assert set_trainable_fraction(module, 0.0) == 0 and not any(p.requires_grad for p in module.parameters())


def test_bad_stage_is_refused():
    with pytest.raises(ValueError):
        ProgressiveUnfreezing(["body"], [(1, 1.5)])
