"""Volume classifiers of the ``ct`` pipeline: ``slices`` (B, S, 3, H, W) -> 18 logits, or ``volume`` (B, 1, Z, Y, X)
-> 18 logits for the 3-D baseline.

2-D (the seed's): every slice through one timm backbone's feature map -> attention on the map (CBAM, medical, DANet
dual or none) -> global average pool -> per-slice features (B, S, C) -> slice pooling (learnable slice importance,
mean or max) -> the seed's enhanced classifier (or one Linear) -> 18 logits. CT-RATE's labels are per volume, so the
loss is on the pooled prediction.

Both keep a per-label calibration ``a * logit + b`` as a persistent buffer (identity until
:func:`finescale.pipelines.ct.workflow.calibrate` fits it on the validation split), so it travels in the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from finescale.errors import FinescaleError
from finescale.losses import multilabel_focal_loss, smoothed_targets
from finescale.nn.attention2d import ATTENTIONS_2D
from finescale.nn.backbones import ImageNormalize, load_weights
from finescale.nn.heads import EnhancedClassifier, PlainHead
from finescale.nn.slice_pooling import SLICE_POOLS
from finescale.nn.volume3d import Volume3DClassifier
from finescale.pipelines.ct.config import CTConfig

N_LABELS = 18


class MultiLabelLoss(nn.Module):
    """BCE or focal loss on (possibly soft, mixed) multi-label targets, with optional label smoothing."""

    def __init__(self, *, kind: str, smoothing: float, gamma: float, alpha: float) -> None:
        super().__init__()
        self.kind, self.smoothing, self.gamma, self.alpha = kind, smoothing, gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = smoothed_targets(targets, self.smoothing) if self.smoothing > 0 else targets
        if self.kind == "focal":
            return multilabel_focal_loss(logits, targets, gamma=self.gamma, alpha=self.alpha)
        return F.binary_cross_entropy_with_logits(logits, targets)


class Calibrated(nn.Module):
    """Shared by both classifiers: the calibration buffer, the loss and ``predict``."""

    def __init__(self, loss: MultiLabelLoss) -> None:
        super().__init__()
        self.criterion = loss
        self.register_buffer("calibration", torch.stack([torch.ones(N_LABELS), torch.zeros(N_LABELS)]))

    def logits(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        cls = self.criterion(self.logits(batch), batch["labels"])
        return {"cls": cls, "loss": cls}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """``logits`` (B, 18) as trained, ``probs`` (B, 18) after the per-label calibration."""
        logits = self.logits(batch).float()
        scale, bias = self.calibration
        return {"logits": logits, "probs": torch.sigmoid(logits * scale + bias)}


class SliceClassifier(Calibrated):
    """The seed's 2-D recipe; see the module docstring."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        normalize: nn.Module,
        attention: nn.Module,
        pool: nn.Module,
        head: nn.Module,
        loss: MultiLabelLoss,
    ) -> None:
        super().__init__(loss)
        self.backbone, self.normalize, self.attention, self.pool, self.head = backbone, normalize, attention, pool, head

    @classmethod
    def from_config(cls, cfg: CTConfig, *, load_weights_: bool = True) -> SliceClassifier:
        m = cfg.model
        try:
            backbone = timm.create_model(m.backbone, pretrained=m.pretrained and load_weights_, num_classes=0)
        except RuntimeError as err:  # timm's error for an unknown name
            raise FinescaleError(f"timm has no model {m.backbone!r}: {err}") from None
        if m.weights and load_weights_:
            load_weights(backbone, Path(m.weights))
        channels = int(backbone.num_features)
        attention = ATTENTIONS_2D[m.attention](channels) if m.attention != "none" else nn.Identity()
        pool = SLICE_POOLS[m.slice_pool](channels)
        if m.head == "enhanced":
            head = EnhancedClassifier(channels, N_LABELS)
        else:
            head = PlainHead(channels, N_LABELS, dropout=m.head_dropout)
        return cls(
            backbone=backbone,
            normalize=ImageNormalize(backbone.pretrained_cfg),
            attention=attention,
            pool=pool,
            head=head,
            loss=loss_from_config(cfg),
        )

    def slice_features(self, slices: torch.Tensor) -> torch.Tensor:
        """(B, S, 3, H, W) in [0, 1] -> (B, S, C)."""
        b, s = slices.shape[:2]
        maps = self.backbone.forward_features(self.normalize(slices.flatten(0, 1)))
        maps = self.attention(maps)
        if isinstance(maps, tuple):  # an attention that also returns its per-label maps
            maps = maps[0]
        return maps.mean(dim=(2, 3)).view(b, s, -1)

    def logits(self, batch: dict) -> torch.Tensor:
        pooled, _slice_weights = self.pool(self.slice_features(batch["slices"]))  # every pool gives (B, D), (B, S)
        return self.head(pooled)


class VolumeClassifier(Calibrated):
    """The 3-D baseline: a small MONAI ResNet on the windowed volume (B, 1, Z, Y, X)."""

    def __init__(self, *, net: nn.Module, loss: MultiLabelLoss) -> None:
        super().__init__(loss)
        self.net = net

    @classmethod
    def from_config(cls, cfg: CTConfig) -> VolumeClassifier:
        m = cfg.model
        net = Volume3DClassifier(1, N_LABELS, widen_factor=m.volume_width, stem_stride=m.volume_stem_stride)
        return cls(net=net, loss=loss_from_config(cfg))

    def logits(self, batch: dict) -> torch.Tensor:
        return self.net(batch["volume"])


def loss_from_config(cfg: CTConfig) -> MultiLabelLoss:
    lc = cfg.loss
    return MultiLabelLoss(kind=lc.loss, smoothing=lc.label_smoothing, gamma=lc.focal_gamma, alpha=lc.focal_alpha)


def build_model(cfg: CTConfig, *, load_weights: bool = True) -> Calibrated:
    """The classifier of ``cfg.model.dimension``; ``load_weights=False`` reads no pretrained or --weights file."""
    if cfg.model.dimension == "3d":
        return VolumeClassifier.from_config(cfg)
    return SliceClassifier.from_config(cfg, load_weights_=load_weights)
