"""Monte-Carlo dropout: a cheap uncertainty estimate from the spread of several stochastic forward passes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def mc_dropout(module: nn.Module, fn: Callable[[], dict[str, torch.Tensor]], samples: int) -> dict[str, torch.Tensor]:
    """Run ``fn`` ``samples`` times with only ``module``'s dropout layers active (norm layers stay in eval mode);
    returns each output key stacked along a new first dim: (samples, ...). The module's modes are restored."""
    dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in dropouts]
    try:
        for layer in dropouts:
            layer.train()
        runs = [fn() for _ in range(max(1, samples))]
    finally:
        for layer, mode in zip(dropouts, modes, strict=True):
            layer.train(mode)
    return {key: torch.stack([r[key] for r in runs]) for key in runs[0]}
