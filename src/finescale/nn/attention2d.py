"""Attention on a 2-D feature map: (B, C, H, W) -> (B, C, H, W).

``ATTENTIONS_2D`` maps the ``ct`` pipeline's ``--attention`` names to constructors taking the channel count:

- ``none``: :class:`torch.nn.Identity`.
- ``cbam``: :class:`CBAM`, Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
- ``dual``: :class:`DualAttention`, DANet's position + channel attention, Fu et al., "Dual Attention Network for Scene
  Segmentation", CVPR 2019.
- ``medical``: :class:`MedicalAttention`, the ``ct`` seed's region-aware, multi-scale, per-pathology attention.

``dual`` and ``medical`` are residual and exactly the identity at initialisation (a zero scale or a zero-initialised
output projection), so inserting them after a pretrained backbone does not disturb its features on the first step.
CBAM is a multiplicative gate and, as published, starts at about half the input (sigmoid(0) = 0.5 per gate).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """CBAM's channel gate: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), the MLP C -> C/r -> C with ReLU, shared.

    (B, C, H, W) -> weights (B, C, 1, 1) in (0, 1).
    """

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3)))
        peak = self.mlp(x.amax(dim=(2, 3)))
        return torch.sigmoid(avg + peak)[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: sigmoid(conv_k×k([mean_c(x); max_c(x)])).

    (B, C, H, W) -> weights (B, 1, H, W) in (0, 1). The paper's formula (a plain convolution with bias); the authors'
    code adds a BatchNorm after it, which we leave out.
    """

    def __init__(self, *, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate, then spatial gate, applied in sequence.

    (B, C, H, W) -> (B, C, H, W). ``reduction`` is the MLP's bottleneck ratio r, ``kernel_size`` the spatial conv's.
    """

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction=reduction)
        self.spatial = SpatialAttention(kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


class PositionAttention(nn.Module):
    """DANet's position attention module without its residual: each position gathers values from all positions,
    weighted by softmax(query · key) over the positions.

    (B, C, H, W) -> (B, C, H, W). Query and key are 1x1 projections to C / ``reduction`` channels; value keeps C.
    """

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C')
        key = self.key(x).flatten(2)  # (B, C', N)
        attention = torch.bmm(query, key).softmax(dim=-1)  # (B, N, N): row i = where position i looks
        value = self.value(x).flatten(2)  # (B, C, N)
        return torch.bmm(value, attention.transpose(1, 2)).view(b, c, h, w)


class ChannelAffinity(nn.Module):
    """DANet's channel attention module without its residual: each channel becomes a mix of all channels, weighted by
    their Gram-matrix affinity. (B, C, H, W) -> (B, C, H, W); no parameters.

    As in the authors' code, the softmax is over ``rowmax(E) - E`` for the Gram matrix E (the paper writes softmax(E)):
    this favours dissimilar channels, and is what DANet's published results were trained with.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.flatten(2)  # (B, C, N)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)
        attention = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
        return torch.bmm(attention, flat).view(b, c, h, w)


class DualAttention(nn.Module):
    """DANet's position and channel attention modules, summed: x + gamma_p * PAM(x) + gamma_c * CAM(x).

    (B, C, H, W) -> (B, C, H, W). Each DANet module is ``gamma * attention(x) + x`` with ``gamma`` initialised to 0;
    DANet's head sums the two. Summing them as they are would count x twice, so the two keep one shared residual:
    the block is exactly the identity at initialisation and learns how much of each attention to add. DANet's 3x3
    conv-BN-ReLU around each module belongs to its segmentation head (channel reduction), not to the modules.
    """

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        self.position = PositionAttention(channels, reduction=reduction)
        self.channel = ChannelAffinity()
        self.gamma_position = nn.Parameter(torch.zeros(1))
        self.gamma_channel = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma_position * self.position(x) + self.gamma_channel * self.channel(x)


def _conv_bn_relu(in_channels: int, out_channels: int, *, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class MultiScaleContext(nn.Module):
    """ASPP-style multi-scale context (DeepLab): parallel 3x3 convolutions at several dilations plus the image-level
    mean, concatenated and fused by a 1x1 convolution. (B, C, H, W) -> (B, C, H, W).

    A 7x7 ResNet map with dilations 1, 2, 4 sees 3, 5 and 9 cells: a nodule, a lobe, a whole lung.
    """

    def __init__(self, channels: int, *, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv_bn_relu(channels, channels, kernel_size=3, dilation=d) for d in dilations)
        self.image_level = nn.Conv2d(channels, channels, 1)
        self.fuse = _conv_bn_relu(channels * (len(dilations) + 1), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image_level = F.relu(self.image_level(x.mean(dim=(2, 3), keepdim=True))).expand_as(x)
        return self.fuse(torch.cat([branch(x) for branch in self.branches] + [image_level], dim=1))


class QuadrantGate(nn.Module):
    """Region-aware channel gate: one set of channel weights per quadrant of the map. (B, C, H, W) -> (B, C, H, W)
    weights in (0, 1), constant within each quadrant.

    Each quadrant's mean feature goes through a shared MLP (C -> C/r -> C) plus a learned embedding of the quadrant,
    so the gate reads both what a region shows and which region it is. On an axial slice in radiological convention
    the quadrants are right/left lung (image left/right) by anterior/posterior (image top/bottom): dependent
    findings (effusion, atelectasis) sit posterior, the heart anterior-left.
    """

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.region_embedding = nn.Parameter(torch.zeros(1, hidden, 2, 2))
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quadrants = F.adaptive_avg_pool2d(x, 2)  # (B, C, 2, 2): [anterior, posterior] x [right, left]
        gates = torch.sigmoid(self.excite(F.relu(self.squeeze(quadrants) + self.region_embedding)))
        return F.interpolate(gates, size=x.shape[-2:], mode="nearest")


class MedicalAttention(nn.Module):
    """The ``ct`` seed's medical attention: region-aware (quadrant), multi-scale, pathology-specific weighting.

    (B, C, H, W) -> (B, C, H, W); :meth:`forward_with_maps` also gives per-label attention maps (B, L, H, W).

    Design, in a reduced width m = max(C // ``reduction``, 8) to stay cheap on a 2048-channel ResNet-50 map:

    1. ``reduce``: 1x1 conv-BN-ReLU, C -> m.
    2. ``context``: :class:`MultiScaleContext` (dilated 3x3 convs at 1, 2, 4 + image-level mean): findings range
       from a few-millimetre nodule to a diffuse pattern over a whole lung.
    3. ``label_logits``: 1x1 conv m -> L, one evidence map per pathology (L = ``n_labels``, CT-RATE's 18).
       Softmax over the positions turns each into a spatial attention map that sums to 1, the per-label maps; a
       head can pool per-label features with ``einsum("blhw,bchw->blc", maps, x)``.
    4. ``saliency``: sigmoid of a learned 1x1 mix of the L evidence maps (B, 1, H, W): where any pathology shows,
       each pathology weighted by what it has learned.
    5. ``quadrants``: :class:`QuadrantGate` on the context, per-quadrant channel weights (B, m, H, W).
    6. ``expand``: 1x1 conv m -> C, zero-initialised, added to x: ``x + expand(context * quadrants * saliency)``.

    The zero-initialised ``expand`` makes the block exactly the identity at initialisation (the ResNet zero-init
    residual idea); the gradient reaches ``expand`` on the first step and everything before it from the second.
    """

    def __init__(self, channels: int, *, n_labels: int = 18, reduction: int = 8) -> None:
        super().__init__()
        width = max(channels // reduction, 8)
        self.reduce = _conv_bn_relu(channels, width)
        self.context = MultiScaleContext(width)
        self.label_logits = nn.Conv2d(width, n_labels, 1)
        self.saliency = nn.Conv2d(n_labels, 1, 1)
        self.quadrants = QuadrantGate(width)
        self.expand = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (out (B, C, H, W), per-label maps (B, L, H, W), each map summing to 1 over H x W)."""
        context = self.context(self.reduce(x))
        evidence = self.label_logits(context)  # (B, L, H, W)
        saliency = torch.sigmoid(self.saliency(evidence))  # (B, 1, H, W)
        weighted = context * self.quadrants(context) * saliency
        maps = evidence.flatten(2).softmax(dim=-1).view_as(evidence)
        return x + self.expand(weighted), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_maps(x)[0]


# "none" is nn.Identity, which accepts (and ignores) the channel count like the others take it.
ATTENTIONS_2D: dict[str, Callable[[int], nn.Module]] = {
    "none": nn.Identity,
    "cbam": CBAM,
    "medical": MedicalAttention,
    "dual": DualAttention,
}
