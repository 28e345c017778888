"""Progressive unfreezing as a Lightning callback: parts of a model (pretrained embedding models, a backbone) start
frozen so that a fresh head cannot wreck them with its first large gradients, then thaw from the top layers down.

A schedule is a list of (epoch, fraction) stages: from ``epoch`` on, the last ``fraction`` of the named modules'
parameter tensors (in registration order, so the layers nearest the output come last) train; before the first stage
nothing of them trains. The state follows from the epoch alone, so a resumed run lands in the right stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def fraction_at(stages: Sequence[tuple[int, float]], epoch: int) -> float:
    """Fraction of parameter tensors unfrozen at ``epoch``: that of the last stage started, 0 before the first."""
    fraction = 0.0
    for start, value in sorted(stages):
        if epoch >= start:
            fraction = value
    return fraction


def set_trainable_fraction(module: nn.Module, fraction: float) -> int:
    """Let the last ``ceil(fraction * n)`` of ``module``'s n parameter tensors train and freeze the rest; returns
    how many train."""
    params = list(module.parameters())
    n_train = min(len(params), math.ceil(fraction * len(params) - 1e-9))
    for i, param in enumerate(params):
        param.requires_grad_(i >= len(params) - n_train)
    return n_train


class ProgressiveUnfreezing(Callback):
    """Unfreeze the named submodules of the LightningModule (e.g. ``"model.company_embedder"``) stage by stage.

    Each named module is thawed separately by the same fraction, so two embedding models of different depth both
    open their top half at a 0.5 stage. Normalisation layers whose parameters are all frozen are kept in eval mode
    so that their running statistics, learned with the frozen weights, stay as they were.
    """

    def __init__(self, module_names: Sequence[str], stages: Sequence[tuple[int, float]]) -> None:
        if not module_names:
            raise ValueError("give at least one module to unfreeze")
        for epoch, fraction in stages:
            if epoch < 0 or not 0.0 <= fraction <= 1.0:
                raise ValueError(f"bad unfreezing stage ({epoch}, {fraction}): epoch >= 0 and 0 <= fraction <= 1")
        self.module_names = list(module_names)
        self.stages = sorted((int(e), float(f)) for e, f in stages)
        self.fraction: float | None = None

    def apply(self, pl_module: L.LightningModule, epoch: int) -> float:
        """Set ``requires_grad`` for ``epoch``'s stage; returns the fraction that trains."""
        self.fraction = fraction_at(self.stages, epoch)
        for name in self.module_names:
            set_trainable_fraction(pl_module.get_submodule(name), self.fraction)
        return self.fraction

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = self.fraction
        fraction = self.apply(pl_module, trainer.current_epoch)
        if fraction != previous:
            pl_module.log("unfrozen_fraction", fraction, on_epoch=True, on_step=False)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, idx: int) -> None:
        # Frozen norm layers keep their statistics (eval mode); thawed ones follow the model's mode again. Done per
        # batch because Lightning puts the whole model back into train mode after each validation.
        for name in self.module_names:
            for layer in pl_module.get_submodule(name).modules():
                if isinstance(layer, _BatchNorm | nn.GroupNorm | nn.LayerNorm):
                    layer.train(pl_module.training and any(p.requires_grad for p in layer.parameters()))
