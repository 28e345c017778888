"""Feature pyramid: a timm backbone (``features_only``) + torchvision's FeaturePyramidNetwork -> [P3, P4, P5] by
default, or any other set of strides (the defects detector asks for P2..P5: strides 4, 8, 16, 32)."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from finescale.errors import FinescaleError
from finescale.nn.backbones import ImageNormalize, load_weights

PYRAMID_STRIDES = (8, 16, 32)


def group_norm(num_channels: int, **kwargs: Any) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups, a drop-in for timm's ``norm_layer`` (it passes device/dtype keywords)."""
    return nn.GroupNorm(math.gcd(num_channels, 8), num_channels, **kwargs)


class FeaturePyramid(nn.Module):
    """(B, 1 or 3, H, W) in [0, 1] -> [P3, P4, P5], each (B, out_channels, ceil(H / s), ceil(W / s)) for s in 8, 16, 32.

    ``strides`` picks other levels, one output per stride in the given order: (4, 8, 16, 32) -> [P2, P3, P4, P5]
    (``level_names`` holds "p2".."p5"). The backbone stages at those strides (C3..C5 by default) feed torchvision's
    top-down FPN. Normalisation uses the timm model's own mean/std, so callers hand over raw pixels. Any timm CNN with
    those strides works, including the tiny ``test_resnet`` (tests, quick preset) and ``resnet18`` (full preset).
    """

    def __init__(
        self,
        *,
        name: str,
        out_channels: int = 256,
        pretrained: bool = False,
        weights: Path | None = None,
        norm: str = "batch",
        strides: tuple[int, ...] = PYRAMID_STRIDES,
    ) -> None:
        super().__init__()
        self.name = name
        extra = {"norm_layer": group_norm} if norm == "group" else {}
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **extra)
        except RuntimeError as err:  # unknown name, or a model without a feature-extraction mode
            raise FinescaleError(f"timm model {name!r} cannot serve as a feature pyramid: {err}") from None
        if weights is not None:
            load_weights(self.body, weights)
        reductions = list(self.body.feature_info.reduction())
        strides = tuple(strides)
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise FinescaleError(f"timm model {name!r} has no feature stage at stride(s) {missing}")
        # the last stage of each stride (some models emit several maps at one stride)
        self.stage_indices = [max(i for i, r in enumerate(reductions) if r == s) for s in strides]
        channels = self.body.feature_info.channels()
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.stage_indices], out_channels)
        self.normalize = ImageNormalize(self.body.pretrained_cfg)
        self.out_channels = out_channels
        self.strides: tuple[int, ...] = strides
        self.level_names = [f"p{round(math.log2(s))}" for s in strides]  # stride 2**k -> "pk"

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        stages = self.body(self.normalize(images))
        levels = OrderedDict((name, stages[j]) for name, j in zip(self.level_names, self.stage_indices, strict=True))
        return list(self.fpn(levels).values())
