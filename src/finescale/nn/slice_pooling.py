"""Per-slice features to one per-volume feature: (B, S, D) -> ((B, D), slice weights (B, S)).

CT-RATE's labels are per volume while the 2-D recipe sees S slices, so the slice features must be pooled before the
classifier. Every pool returns the pooled feature and weights (B, S) that sum to 1 over the slices and say how much
each slice counted (uniform for ``mean``; for ``max``, the share of feature dimensions whose maximum that slice
holds). All are invariant to the order of the slices. ``SLICE_POOLS`` maps the config names to constructors taking D.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SliceAttentionPool(nn.Module):
    """Learnable slice importance: gated attention MIL pooling (Ilse et al., "Attention-based Deep Multiple Instance
    Learning", ICML 2018).

    score_s = w^T (tanh(V h_s) * sigmoid(U h_s)), a = softmax_s(score), pooled = sum_s a_s h_s.
    (B, S, D) -> (pooled (B, D), weights (B, S)). ``mask`` (B, S) bool marks the valid slices of padded stacks.
    The sigmoid gate lets a slice's score depend on features that tanh alone would saturate.
    """

    def __init__(self, dim: int, *, hidden: int = 128) -> None:
        super().__init__()
        self.value = nn.Linear(dim, hidden)  # V
        self.gate = nn.Linear(dim, hidden)  # U
        self.score = nn.Linear(hidden, 1)  # w

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x))).squeeze(-1)  # (B, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=1)
        return torch.einsum("bs,bsd->bd", weights, x), weights


class MeanSlicePool(nn.Module):
    """Mean over slices: (B, S, D) -> (pooled (B, D), uniform weights (B, S)). ``dim`` is unused (same signature as
    :class:`SliceAttentionPool`)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = x.new_full(x.shape[:2], 1.0 / x.shape[1])
        return x.mean(dim=1), weights


class MaxSlicePool(nn.Module):
    """Feature-wise max over slices: (B, S, D) -> (pooled (B, D), weights (B, S)), the weight of a slice being the
    share of the D features whose maximum it holds. ``dim`` is unused (same signature as :class:`SliceAttentionPool`).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, argmax = x.max(dim=1)  # (B, D) each
        counts = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device).scatter_add_(
            1, argmax, torch.ones_like(pooled)
        )
        return pooled, counts / x.shape[2]


SLICE_POOLS: dict[str, Callable[[int], nn.Module]] = {
    "attention": SliceAttentionPool,
    "mean": MeanSlicePool,
    "max": MaxSlicePool,
}
