"""The thin LightningModule every pipeline's task builds on.

A task wraps a plain ``nn.Module`` that exposes ``loss(batch) -> dict[str, Tensor]`` (the key ``loss`` is the total)
and ``predict(batch) -> dict[str, Tensor]``. The task logs every named loss, computes the pipeline's validation
metrics, and sets up AdamW with per-group learning rates and a warm-up + cosine schedule. The config travels in the
checkpoint as a plain dict so that ``torch.load(weights_only=True)`` can read it and rebuild the model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from finescale.config import RunConfig
from finescale.engine.optim import ParamGroup, build_optimizer


class TaskModule(L.LightningModule):
    """Base task. Subclasses set the class attributes and implement ``build_model`` and the metric hooks."""

    config_class: ClassVar[type[RunConfig]]
    monitor: ClassVar[str]  # validation metric that picks best.ckpt, e.g. "val/length_mae_mm"
    monitor_mode: ClassVar[str] = "min"

    def __init__(self, config: dict[str, Any], *, load_weights: bool = True) -> None:
        """``load_weights=False`` builds the architecture only, without reading pretrained or ``--weights`` files:
        the checkpoint loader's way, since the checkpoint brings every weight (as torchvision keeps ``weights``
        apart from the architecture)."""
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = self.config_class.model_validate(config)
        self.model = self.build_model(self.cfg, load_weights=load_weights)

    # ------------------------------------------------------------------ to implement per pipeline
    def build_model(self, cfg: RunConfig, *, load_weights: bool = True) -> nn.Module:
        raise NotImplementedError

    def update_val_metrics(self, batch: Any, prediction: dict[str, torch.Tensor]) -> None:
        """Feed one validation batch into torchmetrics objects owned by the task."""

    def compute_val_metrics(self) -> dict[str, torch.Tensor]:
        """Return (and reset) the epoch's validation metrics, keys without the ``val/`` prefix."""
        return {}

    def param_groups(self) -> list[ParamGroup]:
        """Parts of the model with their own learning-rate multiplier; one group by default."""
        return [ParamGroup("model", self.model)]

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        losses = self.model.loss(batch)
        # per step (every log_every_n_steps) as train/<name>_step, and the epoch's mean as train/<name>_epoch, so an
        # epoch with fewer steps than the logging interval still logs its training losses once
        named = {f"train/{k}": v.detach() for k, v in losses.items()}
        self.log_dict(named, batch_size=self._batch_size(batch), on_step=True, on_epoch=True)
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=self._batch_size(batch))
        return losses["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # a model that can give both from one forward pass says so with ``loss_and_predict(batch)``
        both = getattr(self.model, "loss_and_predict", None)
        losses, prediction = both(batch) if both else (self.model.loss(batch), self.model.predict(batch))
        size = self._batch_size(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=size, sync_dist=True)
        self.update_val_metrics(batch, prediction)

    def on_validation_epoch_end(self) -> None:
        metrics = self.compute_val_metrics()
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        trainer_cfg = self.cfg.trainer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        optimizer, scheduler = build_optimizer(
            self.param_groups(),
            lr=trainer_cfg.lr,
            weight_decay=trainer_cfg.weight_decay,
            warmup_steps=int(trainer_cfg.warmup_epochs * steps_per_epoch),
            total_steps=total,
            min_lr_ratio=trainer_cfg.min_lr_ratio,
            cycles=trainer_cfg.lr_cycles,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @staticmethod
    def _batch_size(batch: Any) -> int:
        if isinstance(batch, dict):
            for value in batch.values():
                if isinstance(value, torch.Tensor):
                    return int(value.shape[0])
                if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
                    return int(value[0].shape[0])
        return 1
