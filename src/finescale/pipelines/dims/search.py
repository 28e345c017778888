"""The ``dims`` hyperparameter search space for ``finescale hpo dims`` (the seed's dual-embedding HPO: embedding
width, attention type, unfreezing schedule, learning-rate multipliers), scored on the validation split."""

from __future__ import annotations

from typing import Any

from finescale.pipelines import SearchSpace
from finescale.pipelines.dims.config import DimsConfig


def search_space(trial: Any, cfg: DimsConfig) -> dict[str, Any]:
    """Config overrides for one Optuna trial; ranges are relative to ``cfg`` (the preset) where scale matters."""
    epochs = cfg.trainer.epochs
    start = round(epochs * trial.suggest_float("unfreeze_start_frac", 0.0, 0.5))
    full = start + round(epochs * trial.suggest_float("unfreeze_gap_frac", 0.0, 0.5))
    return {
        "embedding_dim": trial.suggest_categorical("embedding_dim", [128, 256, 512]),
        "attention_type": trial.suggest_categorical("attention_type", ["dual", "triple", "hierarchical"]),
        "embedding_source": trial.suggest_categorical("embedding_source", ["soft", "hard"]),
        "lr": trial.suggest_float("lr", cfg.trainer.lr / 3, cfg.trainer.lr * 3, log=True),
        "embedding_lr_mult": trial.suggest_float("embedding_lr_mult", 0.01, 1.0, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "unfreeze_epochs": [start, full],
        "unfreeze_fractions": [0.5, 1.0],
    }


SEARCH = SearchSpace(suggest=search_space, objective="dims_avg_mae_mm", direction="minimize")
