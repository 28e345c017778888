"""Losses shared by the pipelines. Shapes: B = batch, K = classes/bins."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


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


# Multi-label (ct): logits and targets (B, L), targets in [0, 1] and possibly soft (smoothed or mixed).


def multilabel_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) averaged over batch and labels: (B, L), (B, L) -> scalar.

    torchvision's ``sigmoid_focal_loss``; its formula is linear in the target inside ``p_t`` and ``alpha_t``, so soft
    targets interpolate between the positive and negative losses. ``alpha < 0`` turns the class weighting off.
    """
    return sigmoid_focal_loss(logits, targets.to(logits.dtype), alpha=alpha, gamma=gamma, reduction="mean")


def smoothed_targets(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Multi-label label smoothing, each label a two-class problem: t (1 - s) + s / 2. (B, L) -> (B, L)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    return targets * (1.0 - smoothing) + smoothing / 2.0


def mix_targets(t1: torch.Tensor, t2: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Targets of mixed samples: lam t1 + (1 - lam) t2. (B, L), (B, L), lam a scalar or (B,) per sample -> (B, L).

    BCE is linear in its target, so BCE on these equals the mixup loss lam BCE(t1) + (1 - lam) BCE(t2).
    """
    dtype = t1.dtype if t1.is_floating_point() else torch.get_default_dtype()  # 0/1 integer labels become soft
    t1, t2 = t1.to(dtype), t2.to(dtype)
    lam = torch.as_tensor(lam, dtype=dtype, device=t1.device)
    if lam.ndim == 1:
        lam = lam.view(-1, *([1] * (t1.ndim - 1)))
    return lam * t1 + (1 - lam) * t2
