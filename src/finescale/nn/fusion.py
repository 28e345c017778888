"""Fusing feature vectors from several branches (scales, crops, embeddings) into one vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from finescale.registry import Registry


class ConcatFusion(nn.Module):
    """Concatenate branch features, then LayerNorm -> Linear -> GELU -> Dropout: [(B, d_i)] -> (B, out_dim)."""

    def __init__(self, *, in_dims: Sequence[int], out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        total = sum(in_dims)
        self.mlp = nn.Sequential(nn.LayerNorm(total), nn.Linear(total, out_dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = out_dim

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat(list(features), dim=1))


class AttentionFusion(nn.Module):
    """Each branch becomes a token (projection + learned branch embedding); one transformer layer lets the
    branches attend to each other; the tokens are averaged: [(B, d_i)] -> (B, out_dim)."""

    def __init__(self, *, in_dims: Sequence[int], out_dim: int, dropout: float = 0.1, heads: int = 4) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in in_dims)
        self.branch_embed = nn.Parameter(torch.zeros(len(in_dims), out_dim))
        nn.init.trunc_normal_(self.branch_embed, std=0.02)
        self.mixer = nn.TransformerEncoderLayer(
            out_dim, heads, dim_feedforward=2 * out_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([p(f) for p, f in zip(self.proj, features, strict=True)], dim=1) + self.branch_embed
        return self.norm(self.mixer(tokens).mean(dim=1))


FUSIONS = Registry("fusion")
FUSIONS.add("concat", ConcatFusion)
FUSIONS.add("attention", AttentionFusion)
