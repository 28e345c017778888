"""Monte-Carlo dropout: a cheap uncertainty estimate from the spread of several stochastic forward passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from finescale.errors import FinescaleError


def require_dropout(module: nn.Module) -> list[nn.Module]:
    """``module``'s dropout layers; an error when none has p > 0, since MC-dropout "samples" of such a model would
    all be equal and report zero uncertainty. Callers check before heavy work; :func:`dropout_active` always does."""
    dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not any(m.p > 0 for m in dropouts):
        raise FinescaleError(
            f"MC dropout needs a dropout layer with p > 0 and this {type(module).__name__} has none: "
            "train with dropout (ct: --head enhanced, or --head-dropout above 0)"
        )
    return dropouts


@contextmanager
def dropout_active(module: nn.Module) -> Iterator[None]:
    """Inside the block only ``module``'s dropout layers are in training mode (norm layers keep theirs); the modes
    are restored after it."""
    dropouts = require_dropout(module)
    modes = [m.training for m in dropouts]
    try:
        for layer in dropouts:
            layer.train()
        yield
    finally:
        for layer, mode in zip(dropouts, modes, strict=True):
            layer.train(mode)


def mc_dropout(module: nn.Module, fn: Callable[[], dict[str, torch.Tensor]], samples: int) -> dict[str, torch.Tensor]:
    """Run ``fn`` ``samples`` times with only ``module``'s dropout layers active (norm layers stay in eval mode);
    returns each output key stacked along a new first dim: (samples, ...). The module's modes are restored."""
    with dropout_active(module):
        runs = [fn() for _ in range(max(1, samples))]
    return {key: torch.stack([r[key] for r in runs]) for key in runs[0]}


def mc_dropout_per_item(
    module: nn.Module,
    fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    batch: dict[str, torch.Tensor],
    samples: int,
    *,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """MC dropout that gives each item of ``batch`` the same samples whatever else is in the batch: per item, one
    call of ``fn`` on ``samples`` copies of it (each copy draws its own dropout mask) from the same seed. Returns each
    output key as (B, samples, ...). The global RNG is left as it was."""
    devices = [t.device for t in batch.values() if isinstance(t, torch.Tensor)]
    cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    size = next(t.shape[0] for t in batch.values() if isinstance(t, torch.Tensor))
    runs = []
    for i in range(size):
        copies = {
            k: v[i : i + 1].expand(samples, *v.shape[1:]) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }
        with torch.random.fork_rng(devices=cuda), dropout_active(module):
            torch.manual_seed(seed)
            runs.append(fn(copies))
    return {key: torch.stack([r[key] for r in runs]) for key in runs[0]}
