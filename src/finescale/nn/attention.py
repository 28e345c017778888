"""Attention over a visual feature and two embedding vectors (e.g. manufacturer and model embeddings).

Each block takes ``visual`` (B, Dv), ``company`` (B, Dc), ``model`` (B, Dm) and returns ``(fused, weights)``:
``fused`` is (B, out_dim) and ``weights`` are input-dependent softmax weights (each row sums to 1) that say how much
each input counted, kept so that a prediction can report them. The weights come from a small gate MLP over all the
projected inputs, so the balance can change per image (an unusual implant leans on what the image shows).
"""

from __future__ import annotations

import torch
from torch import nn

from finescale.registry import Registry


def _project(in_dim: int, dim: int) -> nn.Module:
    """Linear + LayerNorm: puts inputs of any width and scale on one footing before they are weighed."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))


def _gate(n_inputs: int, dim: int, n_weights: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_inputs * dim, dim), nn.GELU(), nn.Linear(dim, n_weights))


class DualAttention(nn.Module):
    """Weights company vs model embeddings, then concatenates their mix with the visual feature.

    (B, Dv), (B, Dc), (B, Dm) -> fused (B, 2 * dim), weights (B, 2) over (company, model). The visual feature is
    never down-weighted: this block suits the case where the embeddings refine what the image already shows.
    """

    def __init__(self, *, visual_dim: int, company_dim: int, model_dim: int, dim: int = 256) -> None:
        super().__init__()
        self.visual, self.company, self.model = (_project(d, dim) for d in (visual_dim, company_dim, model_dim))
        self.gate = _gate(3, dim, 2)
        self.out_dim = 2 * dim

    def forward(
        self, visual: torch.Tensor, company: torch.Tensor, model: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v, c, m = self.visual(visual), self.company(company), self.model(model)
        weights = self.gate(torch.cat([v, c, m], dim=1)).softmax(dim=1)
        mixed = weights[:, :1] * c + weights[:, 1:] * m
        return torch.cat([v, mixed], dim=1), weights


class TripleAttention(nn.Module):
    """Softmax weights over visual, company and model features projected to one width; their weighted sum.

    (B, Dv), (B, Dc), (B, Dm) -> fused (B, dim), weights (B, 3) over (visual, company, model).
    """

    def __init__(self, *, visual_dim: int, company_dim: int, model_dim: int, dim: int = 256) -> None:
        super().__init__()
        self.visual, self.company, self.model = (_project(d, dim) for d in (visual_dim, company_dim, model_dim))
        self.gate = _gate(3, dim, 3)
        self.out_dim = dim

    def forward(
        self, visual: torch.Tensor, company: torch.Tensor, model: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.stack([self.visual(visual), self.company(company), self.model(model)], dim=1)  # (B, 3, dim)
        weights = self.gate(tokens.flatten(1)).softmax(dim=1)
        return (weights[:, :, None] * tokens).sum(dim=1), weights


class HierarchicalAttention(nn.Module):
    """Two levels: company and model embeddings are mixed first, then that mix is weighed against the visual feature.

    (B, Dv), (B, Dc), (B, Dm) -> fused (B, dim), weights (B, 3): the effective weights over (visual, company, model),
    i.e. (w_visual, w_embeddings * w_company, w_embeddings * w_model).
    """

    def __init__(self, *, visual_dim: int, company_dim: int, model_dim: int, dim: int = 256) -> None:
        super().__init__()
        self.visual, self.company, self.model = (_project(d, dim) for d in (visual_dim, company_dim, model_dim))
        self.inner_gate = _gate(2, dim, 2)
        self.outer_gate = _gate(2, dim, 2)
        self.out_dim = dim

    def forward(
        self, visual: torch.Tensor, company: torch.Tensor, model: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v, c, m = self.visual(visual), self.company(company), self.model(model)
        inner = self.inner_gate(torch.cat([c, m], dim=1)).softmax(dim=1)  # (B, 2) over (company, model)
        embeddings = inner[:, :1] * c + inner[:, 1:] * m
        outer = self.outer_gate(torch.cat([v, embeddings], dim=1)).softmax(dim=1)  # (B, 2) over (visual, embeddings)
        fused = outer[:, :1] * v + outer[:, 1:] * embeddings
        return fused, torch.cat([outer[:, :1], outer[:, 1:] * inner], dim=1)


ATTENTIONS = Registry("embedding attention")
ATTENTIONS.add("dual", DualAttention)
ATTENTIONS.add("triple", TripleAttention)
ATTENTIONS.add("hierarchical", HierarchicalAttention)
