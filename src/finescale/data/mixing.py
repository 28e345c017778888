"""Batch mixing for multi-label training: mixup, CutMix and anatomy-aligned CT mixing.

Each takes a batch ``x`` (B, ..., H, W) (images (B, C, H, W) or slice stacks (B, S, C, H, W)) and targets ``y``
(B, L) in [0, 1], pairs every sample with another of the batch (a random permutation) and returns the mixed
``(x, y)``: y = lam y_i + (1 - lam) y_j (:func:`finescale.losses.mix_targets`), on which BCE equals the mixup loss.
lam ~ Beta(alpha, alpha). All randomness comes from ``generator`` (a CPU ``torch.Generator``; None = torch's global
RNG), so a seeded generator gives the same mix on any device.
"""

from __future__ import annotations

import math

import torch
from scipy.special import betaincinv

from finescale.losses import mix_targets


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha) by inverting its CDF: torch's Beta sampler takes no generator."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return float(betaincinv(alpha, alpha, torch.rand((), generator=generator).item()))


def _partners(batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(batch, generator=generator).to(device)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 0.4, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): x = lam x_i + (1 - lam) x_j, one lam for the batch. Shapes kept."""
    lam = _beta(alpha, generator)
    j = _partners(x.shape[0], generator, x.device)
    return lam * x + (1 - lam) * x[j], mix_targets(y, y[j], lam)


def cutmix(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al. 2019): one box of the partner's pixels pasted into every sample at the same place.

    The box has the area share 1 - lam0 (lam0 ~ Beta) and a uniformly random centre; clipped at the image border it
    covers less, so lam is recomputed from the clipped box: lam = 1 - box area / (H W), the true share kept.
    """
    height, width = x.shape[-2:]
    cut = math.sqrt(1.0 - _beta(alpha, generator))
    cy, cx = (int(torch.randint(n, (), generator=generator)) for n in (height, width))
    half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
    y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
    j = _partners(x.shape[0], generator, x.device)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[j][..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return mixed, mix_targets(y, y[j], lam)


def _bounding_boxes(plane: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, W) bool -> (top, bottom, left, right) (B,) each, half-open; the whole image where a plane is empty."""
    rows, cols = plane.any(dim=2), plane.any(dim=1)
    empty = ~rows.any(dim=1)
    rows, cols = rows | empty[:, None], cols | empty[:, None]
    top, left = rows.int().argmax(dim=1), cols.int().argmax(dim=1)
    bottom = rows.shape[1] - rows.flip(1).int().argmax(dim=1)
    right = cols.shape[1] - cols.flip(1).int().argmax(dim=1)
    return top, bottom, left, right


def ct_aware_mix(
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anatomy-aligned CutMix: the partner's tissue is pasted only where both samples have anatomy.

    ``masks`` bool (B, ..., H, W) with x's number of dimensions, broadcastable to it (e.g. (B, S, 1, H, W) body or
    lung masks of the slices, for all channels).
    Mixup superimposes two bodies at different places and CutMix pastes a partner's mediastinum into a lung or air
    into a body: images no scanner makes. Here, per pair (i, j), a box sized like CutMix's (area share 1 - lam0 of
    the bounding box of both masks' overlap, uniform centre inside it) is cut, and only the pixels in the box and in
    both masks are taken from j: lung goes into lung, body into body, the outline stays i's. lam is then per
    sample the share of i's anatomy kept, lam_i = 1 - |pasted| / |mask_i|, counting mask pixels, not air, since the
    labels are about the anatomy. Pixels outside either mask never change.
    """
    if masks.ndim != x.ndim:
        raise ValueError(f"masks need x's number of dimensions ({x.ndim}), got shape {tuple(masks.shape)}")
    b, (height, width) = x.shape[0], x.shape[-2:]
    masks = masks.to(device=x.device, dtype=torch.bool)
    j = _partners(b, generator, x.device)
    both = masks & masks[j]
    plane = both.reshape(b, -1, height, width).any(dim=1)  # (B, H, W): where the pair overlaps in any slice
    top, bottom, left, right = _bounding_boxes(plane)
    lam0 = torch.tensor([_beta(alpha, generator) for _ in range(b)])
    cut = (1.0 - lam0).sqrt().to(x.device)
    centre = torch.rand(b, 2, generator=generator).to(x.device)
    cy = top + (centre[:, 0] * (bottom - top)).long()
    cx = left + (centre[:, 1] * (right - left)).long()
    half_h, half_w = ((bottom - top) * cut).long() // 2, ((right - left) * cut).long() // 2
    y0, y1 = torch.maximum(cy - half_h, top), torch.minimum(cy + half_h, bottom)
    x0, x1 = torch.maximum(cx - half_w, left), torch.minimum(cx + half_w, right)
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])  # (B, W)
    box = (in_rows[:, :, None] & in_cols[:, None, :]).view(b, *([1] * (masks.ndim - 3)), height, width)
    pasted = box & both  # (B, ..., H, W), masks' shape
    mixed = torch.where(pasted, x[j], x)
    mask_area = masks.reshape(b, -1).sum(dim=1).clamp_min(1)
    lam = 1.0 - pasted.reshape(b, -1).sum(dim=1) / mask_area
    return mixed, mix_targets(y, y[j], lam)
