"""Losses shared by the pipelines. Shapes: B = batch, K = classes/bins."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
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


# Detection (defects): the classification losses of the RPN (objectness) and the RoI head, injected into the detector.


class DetectionClassLoss(nn.Module):
    """Classification loss of a detector's sampled examples: focal (sigmoid) or cross-entropy, times ``weight``.

    Two uses, told apart by the logits' rank:

    - binary (RPN objectness): logits (N,), targets (N,) in {0, 1}; ``ce`` is binary cross-entropy on the logit.
    - classes (RoI head): targets (N,) int64 labels in 0..C, 0 = background. ``focal``: logits (N, C), one sigmoid per
      class and no background column, a background sample's target is the all-zero one-hot (mmdetection's
      ``FocalLoss`` in a bbox head). ``ce``: logits (N, C + 1), softmax with column 0 the background (torchvision).

    Normalisation (mmdetection's ``avg_factor``): the per-sample losses (focal: summed over the C classes) times the
    optional per-sample ``sample_weights`` (N,) are summed and divided by ``avg_factor``, by default the sum of the
    sample weights (N when none are given: the mean over sampled examples, torchvision's and mmdetection's RPN / RoI
    normalisation; with Soft Teacher's soft background weights it is Soft Teacher's ``sum / max(weights.sum(), 1)``),
    never below 1. The result is multiplied by ``weight``. ``alpha < 0`` turns the focal class weighting off; ``gamma``
    and ``alpha`` are ignored by ``ce``.
    """

    def __init__(
        self, kind: Literal["focal", "ce"] = "focal", *, gamma: float = 2.0, alpha: float = 0.25, weight: float = 1.0
    ) -> None:
        super().__init__()
        if kind not in ("focal", "ce"):
            raise ValueError(f"kind must be 'focal' or 'ce', got {kind!r}")
        self.kind, self.gamma, self.alpha, self.weight = kind, gamma, alpha, weight

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, gamma={self.gamma}, alpha={self.alpha}, weight={self.weight}"

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Unreduced, unweighted loss of each sample: (N,) or (N, C / C + 1) logits, (N,) targets -> (N,)."""
        if logits.ndim == 1:
            soft = targets.to(logits.dtype)
            if self.kind == "ce":
                return F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
            return sigmoid_focal_loss(logits, soft, alpha=self.alpha, gamma=self.gamma, reduction="none")
        if self.kind == "ce":
            return F.cross_entropy(logits, targets.long(), reduction="none")
        one_hot = F.one_hot(targets.long(), num_classes=logits.shape[1] + 1)[:, 1:].to(logits.dtype)
        return sigmoid_focal_loss(logits, one_hot, alpha=self.alpha, gamma=self.gamma, reduction="none").sum(dim=1)

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        sample_weights: torch.Tensor | None = None,
        avg_factor: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted, normalised loss (a scalar; 0 with the graph kept when there are no samples)."""
        losses = self.per_sample(logits, targets)
        if sample_weights is not None:
            losses = losses * sample_weights.to(losses.dtype)
        if avg_factor is None:
            avg_factor = losses.new_tensor(float(len(losses))) if sample_weights is None else sample_weights.sum()
        return (
            self.weight
            * losses.sum()
            / torch.as_tensor(avg_factor, dtype=losses.dtype, device=losses.device).clamp_min(1.0)
        )
