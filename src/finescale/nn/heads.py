"""Classification heads of the ``ct`` pipeline: pooled features (B, D) -> logits (B, n_out).

:class:`EnhancedClassifier` is the ``ct`` seed's enhanced classifier layer for layer; :class:`EnhancedHead` puts the
seed's AdaptiveAvgPool2d in front of it for a feature map; :class:`PlainHead` is the baseline's single Linear.
"""

from __future__ import annotations

import torch
from torch import nn


class EnhancedClassifier(nn.Sequential):
    """The seed's classifier on pooled features: (B, in_features) -> (B, n_out).

    Dropout(0.3) -> Linear(in -> 512) -> ReLU -> BatchNorm1d(512) -> Dropout(0.15) -> Linear(512 -> 256) -> ReLU ->
    Dropout(0.075) -> Linear(256 -> n_out). BatchNorm comes after the ReLU, as the seed lists it. The pooling is the
    caller's (over slices in the ``ct`` recipe); :class:`EnhancedHead` takes a feature map instead.
    """

    HIDDEN = (512, 256)
    DROPOUT = (0.3, 0.15, 0.075)  # halved at each layer

    def __init__(self, in_features: int, n_out: int = 18) -> None:
        (h1, h2), (p1, p2, p3) = self.HIDDEN, self.DROPOUT
        super().__init__(
            nn.Dropout(p1),
            nn.Linear(in_features, h1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(h1),
            nn.Dropout(p2),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
            nn.Dropout(p3),
            nn.Linear(h2, n_out),
        )


class EnhancedHead(nn.Module):
    """The seed's full head on a feature map: AdaptiveAvgPool2d(1) -> :class:`EnhancedClassifier`.

    (B, C, H, W) -> (B, n_out), C = ``in_features``.
    """

    def __init__(self, in_features: int, n_out: int = 18) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = EnhancedClassifier(in_features, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(x).flatten(1))


class PlainHead(nn.Linear):
    """The baseline's head: one Linear, (B, in_features) -> (B, n_out), with an optional Dropout(``dropout``) in
    front: the layer MC dropout samples when the enhanced head's three are not there. The dropout holds no weights,
    so the state dict is the Linear's alone, with or without it."""

    def __init__(self, in_features: int, n_out: int = 18, dropout: float = 0.0) -> None:
        super().__init__(in_features, n_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(x))
