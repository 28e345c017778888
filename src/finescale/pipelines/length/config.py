"""Config of the ``length`` pipeline. Defaults are the ``quick`` preset; ``configs/length_full.yaml`` is the seed's."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from finescale.config import RunConfig, Section, TrainerConfig


class LengthModelConfig(Section):
    backbone: str = Field("test_resnet", description="timm model name (ViT-B in full, a tiny CNN in quick)")
    pretrained: bool = Field(False, description="load timm's pretrained weights (needs them cached locally)")
    weights: str | None = Field(None, description="state-dict file to load into every backbone")
    scales: list[int] = Field([64, 128], description="input resolutions of the whole image, e.g. 224,384")
    share_backbone: bool = Field(True, description="one backbone for every scale instead of one each")
    use_crops: bool = Field(True, description="add the collar and tip crop branch")
    whole_crop: bool = Field(True, description="the crop branch also sees the whole implant, upright")
    use_geometry: bool = Field(True, description="feed the implant's measured pixel length/width/tilt to the fusion")
    use_profile: bool = Field(True, description="add a 1-D branch over intensity profiles along the implant axis")
    profile_samples: int = Field(256, ge=32, description="samples per axis profile")
    crop_size: int = Field(64, ge=16, description="crop resolution fed to the crop backbone")
    crop_frac: float = Field(0.4, gt=0, le=1, description="crop side as a fraction of the implant's pixel length")
    fusion: Literal["concat", "attention"] = Field("concat", description="how branch features are fused")
    fusion_dim: int = Field(256, ge=8, description="width of the fused feature")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after fusion")
    bin_min: float = Field(6.0, description="centre of the first length bin, mm")
    bin_max: float = Field(16.0, description="centre of the last length bin, mm")
    bin_width: float = Field(0.5, gt=0, description="distance between bin centres, mm")
    smooth_sigma: float = Field(0.5, ge=0, description="Gaussian smooth-label width in mm; 0 = hard labels")
    aux_regression_weight: float = Field(0.3, ge=0, description="weight of the fine-length regression loss; 0 = off")
    fine_length: Literal["expectation", "regression"] = Field(
        "expectation",
        description="fine length = expectation of the bin distribution (measured better) or the regression head",
    )

    @field_validator("scales")
    @classmethod
    def _scales_positive(cls, value: list[int]) -> list[int]:
        if not value or any(s < 32 for s in value):
            raise ValueError("give at least one scale, each >= 32 pixels")
        return value


class LengthDataConfig(Section):
    cache: bool = Field(True, description="keep the resized inputs of every image in memory")
    augment: bool = Field(True, description="flips and exposure jitter during training")


class LengthConfig(RunConfig):
    pipeline: Literal["length"] = "length"
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(epochs=6, batch_size=32, lr=2e-3))
    model: LengthModelConfig = Field(default_factory=LengthModelConfig)
    data: LengthDataConfig = Field(default_factory=LengthDataConfig)
