"""The pruning callback stops a real Lightning run once the study's pruner says so, and only then."""

from __future__ import annotations

import lightning as L
import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from finescale.eval.hpo import PruneOnPlateau


class ConstantMetricTask(L.LightningModule):
    monitor = "val/score"

    def __init__(self, score: float) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.score = score

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.score)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(score: float) -> tuple[PruneOnPlateau, L.Trainer, optuna.Trial]:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    callback = PruneOnPlateau(trial)
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(
        max_epochs=4,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ConstantMetricTask(score), loader, loader)
    return callback, trainer, trial


def test_pruned_trial_stops_after_its_first_report():
    callback, trainer, _ = _fit(score=5.0)
    assert callback.pruned and trainer.current_epoch == 1


def test_good_trial_runs_every_epoch_and_reports_each():
    callback, trainer, trial = _fit(score=0.5)
    assert not callback.pruned and trainer.current_epoch == 4
    assert trial.study.trials[0].intermediate_values == {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}
