"""AdamW over parameter groups with their own learning rates, and a warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamGroup:
    """A named part of a model trained at ``lr_mult`` times the base learning rate."""

    name: str
    module: nn.Module
    lr_mult: float = 1.0


def build_param_groups(groups: Sequence[ParamGroup], *, lr: float, weight_decay: float) -> list[dict]:
    """Split each group into decayed weights and undecayed norms/biases (1-d tensors), skipping shared params.

    All parameters are included, frozen ones too: progressive unfreezing flips ``requires_grad`` later and the
    optimizer must already know them (AdamW skips parameters whose grad is None).
    """
    seen: set[int] = set()
    out: list[dict] = []
    for group in groups:
        decay, no_decay = [], []
        for param in group.module.parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if param.ndim <= 1 else decay).append(param)
        for suffix, params, wd in (("", decay, weight_decay), ("_no_decay", no_decay, 0.0)):
            if params:
                out.append(
                    {"params": params, "lr": lr * group.lr_mult, "weight_decay": wd, "name": group.name + suffix}
                )
    return out


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float, cycles: int = 1) -> float:
    """Learning-rate multiplier: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio``; with ``cycles`` > 1
    the decay restarts from 1 that many times in equal cycles (SGDR's warm restarts)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps) / max(1, cycles)
    done = step - warmup_steps
    progress = min(1.0, (done % span) / span) if done < span * max(1, cycles) else 1.0
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    groups: Sequence[ParamGroup],
    *,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
    cycles: int = 1,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(build_param_groups(groups, lr=lr, weight_decay=weight_decay), lr=lr)

    def multiplier(step: int) -> float:
        return warmup_cosine(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_lr_ratio, cycles=cycles
        )

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
