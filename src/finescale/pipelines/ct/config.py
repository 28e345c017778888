"""Config of the ``ct`` pipeline. Defaults are the ``quick`` preset (CPU minutes); ``configs/ct_full.yaml`` is the
seed's scale (ResNet50 at 224 px, CT-CLIP's 0.75 x 0.75 x 1.5 mm grid of 480 x 480 x 240) for a GPU.

Every technique of the seed is a field here and a row of ``finescale bench ct``; the defaults follow that bench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from finescale.config import RunConfig, Section, TrainerConfig


class CTModelConfig(Section):
    dimension: Literal["2d", "3d"] = Field(
        "2d", description="2d: slices through a 2-D backbone (the seed's); 3d: a MONAI 3-D ResNet on the volume"
    )
    volume_width: float = Field(
        0.5, gt=0, description="3-D baseline: width factor of the MONAI ResNet's stages (1.0 in full)"
    )
    volume_stem_stride: int = Field(2, ge=1, description="3-D baseline: its first convolution's stride (MedicalNet: 2)")
    backbone: str = Field("resnet10t", description="timm 2-D backbone (resnet50 in full)")
    pretrained: bool = Field(False, description="load timm's pretrained weights (needs them cached locally)")
    weights: str | None = Field(None, description="state-dict file to load into the backbone")
    attention: Literal["none", "cbam", "medical", "dual"] = Field(
        "none", description="attention on the backbone's feature map (the seed's CBAM, medical or DANet dual)"
    )
    slice_pool: Literal["attention", "mean", "max"] = Field(
        "attention", description="how slice features become one volume feature (learnable slice importance)"
    )
    head: Literal["enhanced", "plain"] = Field("plain", description="the seed's enhanced classifier or one Linear")
    head_dropout: float = Field(
        0.2, ge=0, lt=1, description="plain head: dropout before its Linear (what --ensemble bayesian samples)"
    )
    calibration: Literal["temperature", "platt", "threshold", "none"] = Field(
        "threshold",
        description="per-label calibration fitted on the validation split after training (threshold: the shift "
        "that puts each label's validation-F1-best threshold at 0.5)",
    )


class CTDataConfig(Section):
    store: Path | None = Field(
        None, description="packed volume store (default: packed once beside the manifest, .store/<grid>)"
    )
    metadata_csv: Path | None = Field(None, description="CT-RATE metadata CSV (default: from the manifest records)")
    spacing: list[float] = Field([5.0, 2.5, 2.5], description="grid spacing z,y,x in mm (CT-CLIP: 1.5,0.75,0.75)")
    shape: list[int] = Field([64, 128, 128], description="grid shape z,y,x (CT-CLIP: 240,480,480)")
    slices_per_volume: int = Field(12, ge=1, description="slices taken from each volume (the seed's 12)")
    image_size: int = Field(96, ge=32, description="slice side fed to the backbone (224 in full)")
    progressive_sizes: list[int] = Field(
        [64, 96], description="progressive resizing: slice side per stage, stages spread over the epochs; [] = off"
    )
    channels: Literal["windows", "adjacent"] = Field(
        "windows", description="3 input channels: lung/mediastinum/bone windows, or the slice and its 2 neighbours"
    )
    window: Literal["fixed", "adaptive"] = Field(
        "adaptive", description="HU windows: derived from the volume's own body/lung histogram, or fixed presets"
    )
    denoise: bool = Field(False, description="non-local-means denoising of each slice")
    clahe: bool = Field(False, description="CLAHE contrast enhancement of each slice")
    ct_augment: bool = Field(True, description="scanner noise, breathing motion, lung texture (training only)")
    elastic: bool = Field(True, description="elastic deformation (training only)")
    flips: bool = Field(False, description="left-right flips (training only)")
    mix: Literal["none", "mixup", "cutmix", "ct_aware"] = Field(
        "mixup", description="batch mixing: mixup, cutmix (area-adjusted lambda) or anatomy-aligned CT-aware mixing"
    )
    mix_alpha: float = Field(0.4, gt=0, description="Beta(alpha, alpha) of the mixing weight")
    cache: bool = Field(True, description="keep the stored volumes' slices in memory after the first read")
    train_storage_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="train on the training manifest's volumes, in manifest order, that fit in this share of the "
        "training manifest's source-file bytes (None = the whole training manifest)",
    )
    train_storage_format: Literal["source", "packed"] = Field(
        "packed",
        description="how a volume's bytes count against train_storage_share: its source file as downloaded "
        "(.nii.gz / .mha) or its file in the packed store",
    )

    @field_validator("spacing", "shape")
    @classmethod
    def _three(cls, value: list) -> list:
        if len(value) != 3 or any(v <= 0 for v in value):
            raise ValueError("give three positive numbers: z,y,x")
        return value


class CTLossConfig(Section):
    loss: Literal["bce", "focal"] = Field("bce", description="multi-label loss: BCE or focal")
    focal_gamma: float = Field(2.0, ge=0, description="focal loss gamma")
    focal_alpha: float = Field(0.25, ge=-1, le=1, description="focal loss alpha (-1 = no class weighting)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="multi-label smoothing: t(1-s) + s/2")


class CTConfig(RunConfig):
    pipeline: Literal["ct"] = "ct"
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(epochs=16, batch_size=8, lr=2e-3))
    model: CTModelConfig = Field(default_factory=CTModelConfig)
    data: CTDataConfig = Field(default_factory=CTDataConfig)
    loss: CTLossConfig = Field(default_factory=CTLossConfig)


def upgrade_checkpoint_config(config: dict) -> dict:
    """Fields a checkpoint's config may predate, filled with what the model was built with then: the 3-D baseline at
    MONAI's defaults (full width, stride 1) before ``model.volume_width`` / ``volume_stem_stride``; a plain head
    without dropout before ``model.head_dropout``."""
    model = dict(config.get("model") or {})
    model.setdefault("head_dropout", 0.0)  # before the field existed the plain head had no dropout
    if "volume_width" not in model:
        model.update(volume_width=1.0, volume_stem_stride=1)
    return {**config, "model": model}
