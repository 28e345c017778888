"""The ``ct`` pipeline's 3-D baseline: a MONAI 3-D ResNet on the whole windowed volume.

It answers the bench's question whether 12 slices through a 2-D backbone with attention beat a network that sees
every voxel at the same budget.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import resnet
from torch import nn

from finescale.errors import FinescaleError

_RESNETS: dict[int, Callable[..., resnet.ResNet]] = {
    10: resnet.resnet10,
    18: resnet.resnet18,
    34: resnet.resnet34,
    50: resnet.resnet50,
}


class Volume3DClassifier(nn.Module):
    """MONAI's 3-D ResNet (Chen et al., MedicalNet layout): (B, in_channels, Z, Y, X) -> logits (B, n_out).

    The input is windowed HU in [0, 1]. ``depth`` picks resnet10 / 18 / 34 / 50; ``widen_factor`` scales every
    stage's width (0.5 halves the 64-128-256-512 channels, a quarter of the compute, for CPU budgets).
    ``stem_stride`` is the first 7x7x7 convolution's stride: 2 as in MedicalNet and every 2-D ResNet; MONAI's default
    of 1 runs that convolution at full resolution, measured 5.7x the cost of the whole network with stride 2 on a
    64 x 128 x 128 volume (CPU, fwd + bwd). Trained from scratch: MedicalNet's weights are not downloadable here.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_out: int = 18,
        depth: int = 10,
        *,
        widen_factor: float = 1.0,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise FinescaleError(f"no 3-D ResNet of depth {depth}; choose one of: {', '.join(map(str, _RESNETS))}")
        self.net = _RESNETS[depth](
            spatial_dims=3,
            n_input_channels=in_channels,
            num_classes=n_out,
            widen_factor=widen_factor,
            conv1_t_stride=stem_stride,
        )

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.net(volume)
