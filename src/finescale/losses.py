"""Losses shared by the pipelines. Shapes: B = batch, K = classes/bins."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_bin(values: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the closest bin centre for each value: (B,) float -> (B,) long."""
    return (values[:, None] - centers[None, :]).abs().argmin(dim=1)


def gaussian_smooth_labels(values: torch.Tensor, centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft targets ``exp(-((c - v) / sigma)^2)`` over bin centres, normalised to sum to 1: (B,) -> (B, K).

    ``sigma`` is in the unit of the values (mm). ``sigma <= 0`` gives hard one-hot labels at the nearest bin.
    A value between two bins spreads its mass over both, which is what makes neighbouring-bin mistakes cheap.
    """
    if sigma <= 0:
        return F.one_hot(nearest_bin(values, centers), num_classes=centers.numel()).to(values.dtype)
    weights = torch.exp(-(((centers[None, :] - values[:, None]) / sigma) ** 2))
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    return F.smooth_l1_loss(pred, target, beta=beta)
