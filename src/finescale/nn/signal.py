"""Encoders for 1-D signals, such as intensity profiles sampled along an object's axis."""

from __future__ import annotations

import torch
from torch import nn


class ProfileEncoder(nn.Module):
    """Stack of strided 1-D convolutions, then mean and max pooling: (B, C, L) -> (B, out_dim).

    The mean of each profile is removed first, so the encoder sees the oscillation (threads), not the exposure.
    """

    def __init__(self, *, in_channels: int, width: int = 32, depth: int = 4, out_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(depth):
            layers += [
                nn.Conv1d(channels, width * 2 ** min(i, 2), 7, stride=2, padding=3, bias=False),
                nn.BatchNorm1d(width * 2 ** min(i, 2)),
                nn.GELU(),
            ]
            channels = width * 2 ** min(i, 2)
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * channels, out_dim)
        self.out_dim = out_dim

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        signal = signal - signal.mean(dim=-1, keepdim=True)
        features = self.convs(signal)
        return self.proj(torch.cat([features.mean(dim=-1), features.amax(dim=-1)], dim=1))
