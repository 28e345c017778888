"""Multi-scale length model: whole image at several resolutions + collar/tip crops -> fused feature ->
length-bin classifier (Gaussian smooth labels) and an auxiliary fine-length regressor.

Fine length (the ``fine_mm`` output): by default the expectation of the bin centres under the predicted bin
distribution (sum_k p_k c_k), finer than the arg-max bin; with ``fine_length="regression"`` the auxiliary head's
output. On the synthetic test split the expectation was measured better (0.72 vs 0.84 mm MAE, same model), so the
regression head serves by default as an auxiliary training signal.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from finescale.errors import FinescaleError
from finescale.losses import gaussian_smooth_labels, nearest_bin, smooth_l1
from finescale.nn.backbones import TimmEncoder
from finescale.nn.fusion import FUSIONS
from finescale.nn.signal import ProfileEncoder
from finescale.pipelines.length.config import LengthModelConfig


def bin_centers(cfg: LengthModelConfig) -> torch.Tensor:
    count = int(round((cfg.bin_max - cfg.bin_min) / cfg.bin_width)) + 1
    return cfg.bin_min + cfg.bin_width * torch.arange(count, dtype=torch.float32)


class MultiScaleLengthModel(nn.Module):
    """Batch dict (see ``length.data``) -> ``logits`` (B, K) and ``regression`` (B,) in normalised length units."""

    def __init__(
        self,
        *,
        scale_encoders: nn.ModuleList,
        crop_encoder: nn.Module | None,
        geometry_encoder: nn.Module | None,
        profile_encoder: nn.Module | None,
        fusion: nn.Module,
        centers: torch.Tensor,
        smooth_sigma: float,
        aux_regression_weight: float,
        fine_length: str = "expectation",
    ) -> None:
        super().__init__()
        self.scale_encoders = scale_encoders
        self.crop_encoder = crop_encoder
        self.geometry_encoder = geometry_encoder
        self.profile_encoder = profile_encoder
        self.fusion = fusion
        self.classifier = nn.Linear(fusion.out_dim, centers.numel())
        self.regressor = nn.Linear(fusion.out_dim, 1) if aux_regression_weight > 0 else None
        self.register_buffer("centers", centers, persistent=False)
        self.smooth_sigma = smooth_sigma
        self.aux_regression_weight = aux_regression_weight
        if fine_length == "regression" and self.regressor is None:
            raise FinescaleError("fine_length='regression' needs the regression head (aux_regression_weight > 0)")
        self.fine_from_regression = fine_length == "regression"
        # Regression target scaling: centre and half-range of the bins, so targets are O(1).
        self.offset = float(centers.mean())
        self.scale = float((centers.max() - centers.min()) / 2) or 1.0

    @classmethod
    def from_config(cls, cfg: LengthModelConfig, *, load_weights: bool = True) -> MultiScaleLengthModel:
        """``load_weights=False``: the architecture only, no pretrained or --weights file read (a checkpoint
        brings every weight)."""
        weights = Path(cfg.weights) if cfg.weights and load_weights else None

        def encoder() -> TimmEncoder:
            return TimmEncoder(name=cfg.backbone, pretrained=cfg.pretrained and load_weights, weights=weights)

        first = encoder()
        scale_encoders = nn.ModuleList([first] + [first if cfg.share_backbone else encoder() for _ in cfg.scales[1:]])
        crop_encoder = (first if cfg.share_backbone else encoder()) if cfg.use_crops else None
        geometry_encoder = nn.Sequential(nn.Linear(4, 32), nn.GELU()) if cfg.use_geometry else None
        # crop features (collar, tip, whole) are kept apart so the fusion knows which region is which
        n_crops = 3 if cfg.whole_crop else 2
        in_dims = [e.out_dim for e in scale_encoders] + ([crop_encoder.out_dim] * n_crops if crop_encoder else [])
        profile_encoder = ProfileEncoder(in_channels=5) if cfg.use_profile else None
        in_dims += [32] if geometry_encoder else []
        in_dims += [profile_encoder.out_dim] if profile_encoder else []
        fusion = FUSIONS.create(cfg.fusion, in_dims=in_dims, out_dim=cfg.fusion_dim, dropout=cfg.dropout)
        return cls(
            scale_encoders=scale_encoders,
            crop_encoder=crop_encoder,
            geometry_encoder=geometry_encoder,
            profile_encoder=profile_encoder,
            fusion=fusion,
            centers=bin_centers(cfg),
            smooth_sigma=cfg.smooth_sigma,
            aux_regression_weight=cfg.aux_regression_weight,
            fine_length=cfg.fine_length,
        )

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features = [enc(x) for enc, x in zip(self.scale_encoders, batch["scales"], strict=True)]
        if self.crop_encoder is not None:
            crops = batch["crops"]  # (B, R, 1, c, c)
            b, regions = crops.shape[:2]
            crop_features = self.crop_encoder(crops.flatten(0, 1)).view(b, regions, -1)
            features += list(crop_features.unbind(dim=1))
        if self.geometry_encoder is not None:
            features.append(self.geometry_encoder(batch["geometry"]))
        if self.profile_encoder is not None:
            features.append(self.profile_encoder(batch["profile"]))
        fused = self.fusion(features)
        out = {"logits": self.classifier(fused)}
        if self.regressor is not None:
            out["regression"] = self.regressor(fused).squeeze(1)
        return out

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch)
        target = batch["length_mm"]
        cls_loss = F.cross_entropy(out["logits"], gaussian_smooth_labels(target, self.centers, self.smooth_sigma))
        losses = {"cls": cls_loss}
        total = cls_loss
        if self.regressor is not None:
            reg = smooth_l1(out["regression"], (target - self.offset) / self.scale, beta=0.1)
            losses["reg_aux"] = reg
            total = total + self.aux_regression_weight * reg
        losses["loss"] = total
        return losses

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """``probs`` (B, K), ``bin_index`` (B,), ``bin_mm`` (B,), ``expected_mm`` (B,), ``fine_mm`` (B,)."""
        out = self(batch)
        probs = out["logits"].softmax(dim=1)
        index = probs.argmax(dim=1)
        expected = probs @ self.centers
        pred = {"probs": probs, "bin_index": index, "bin_mm": self.centers[index], "expected_mm": expected}
        if self.regressor is not None:
            pred["regression_mm"] = out["regression"] * self.scale + self.offset
        pred["fine_mm"] = pred["regression_mm"] if self.fine_from_regression else expected
        return pred

    def target_bins(self, length_mm: torch.Tensor) -> torch.Tensor:
        return nearest_bin(length_mm, self.centers)
