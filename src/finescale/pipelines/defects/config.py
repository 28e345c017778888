"""Config of the ``defects`` pipeline. Defaults are the ``quick`` preset (CPU minutes, small images, a small
backbone); ``configs/defects_full.yaml`` is the seed's scale (ResNet-50 FPN on 720 x 256 views, K = 2048) for a GPU.

Every technique of the seed is a field here and a row of ``finescale bench defects``; the defaults follow that bench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from finescale.config import RunConfig, Section, TrainerConfig

# The seed's targeted ratio set and the one it replaced; height / width, torchvision's and mmdetection's convention.
SEED_ANCHOR_RATIOS = [0.2, 0.35, 0.45, 0.55, 0.65, 1.0, 2.0]
PREVIOUS_ANCHOR_RATIOS = [0.2, 0.35, 0.5, 1.0, 2.0]


class DefectsDataConfig(Section):
    categories: list[str] = Field(
        [], description="class names in label order; filled from --train-json's categories when left empty"
    )
    unlabeled_json: Path | None = Field(None, description="COCO file of unlabeled images (Soft Teacher's data)")
    views: int = Field(8, ge=1, description="views per tool (images sharing a group_id); 1 = every image alone")
    image_height: int = Field(288, ge=32, description="height every view is resized to (720 in full)")
    image_width: int = Field(96, ge=32, description="width every view is resized to (256 in full)")
    augment: Literal["seed", "soft_teacher"] = Field(
        "seed", description="strong view's colour space: the seed's targeted one or Soft Teacher's original"
    )
    flip: bool = Field(True, description="random horizontal flip of a whole tool (training only)")


class DefectsModelConfig(Section):
    backbone: str = Field("resnet10t", description="timm backbone under the FPN (resnet50 in full)")
    pretrained: bool = Field(False, description="load timm's pretrained weights (needs them cached locally)")
    weights: str | None = Field(None, description="state-dict file to load into the backbone")
    fpn_channels: int = Field(64, ge=8, description="FPN channels (256 in full)")
    anchor_sizes: list[int] = Field(
        [12, 24, 48, 96], description="anchor side per level P2..P5 in pixels (32..256 in full)"
    )
    anchor_ratios: list[float] = Field(
        SEED_ANCHOR_RATIOS, description="anchor aspect ratios, height / width (the seed's targeted set)"
    )
    rpn_loss: Literal["focal", "ce"] = Field("focal", description="RPN objectness loss: focal or cross-entropy")
    rpn_focal_gamma: float = Field(2.5, ge=0, description="RPN focal gamma")
    rpn_focal_alpha: float = Field(0.75, ge=-1, le=1, description="RPN focal alpha (-1 = no weighting)")
    rpn_loss_weight: float = Field(3.0, gt=0, description="RPN classification loss weight")
    roi_loss: Literal["focal", "ce"] = Field("focal", description="RoI classifier loss: focal (sigmoid) or softmax CE")
    roi_focal_gamma: float = Field(3.5, ge=0, description="RoI focal gamma")
    roi_focal_alpha: float = Field(0.75, ge=-1, le=1, description="RoI focal alpha (-1 = no weighting)")
    roi_loss_weight: float = Field(2.5, gt=0, description="RoI classification loss weight")
    multiview: bool = Field(True, description="multi-view transformer fusion of the views' FPN features")
    pool_tokens: int = Field(256, ge=1, description="K: pooled tokens per view and level, min(K, h*w) (2048 in full)")
    mv_layers: int = Field(2, ge=1, description="multi-view transformer layers")
    mv_heads: int = Field(8, ge=1, description="multi-view attention heads")
    mv_mlp_ratio: float = Field(3.0, gt=0, description="multi-view MLP width / channels")
    mv_checkpointing: bool = Field(False, description="gradient checkpointing of the fusion (memory for compute)")
    rpn_batch_per_image: int = Field(256, ge=8, description="anchors sampled per image for the RPN loss")
    roi_batch_per_image: int = Field(128, ge=8, description="proposals sampled per image for the RoI loss (512 full)")
    rpn_post_nms_train: int = Field(300, ge=1, description="proposals kept per image in training (2000 full)")
    rpn_post_nms_test: int = Field(150, ge=1, description="proposals kept per image at inference (1000 full)")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="lowest detection score reported")
    detections_per_image: int = Field(100, ge=1, description="detections kept per image")

    @field_validator("anchor_ratios")
    @classmethod
    def _positive_ratios(cls, value: list[float]) -> list[float]:
        if not value or any(r <= 0 for r in value):
            raise ValueError("give positive height/width ratios such as 0.5,1,2")
        return value

    @field_validator("anchor_sizes")
    @classmethod
    def _four_sizes(cls, value: list[int]) -> list[int]:
        if len(value) != 4 or any(s <= 0 for s in value):
            raise ValueError("give four positive anchor sizes, one per level P2..P5")
        return value


class SemiConfig(Section):
    semi_supervised: bool = Field(True, description="Soft Teacher: also learn from --unlabeled-json via an EMA teacher")
    unsup_ratio: int = Field(1, ge=1, description="unlabeled tools per labeled tool in a batch (the seed's 4 in full)")
    unsup_weight: float = Field(4.0, ge=0, description="weight of the unsupervised losses")
    ema_momentum: float = Field(0.999, ge=0, lt=1, description="teacher = EMA of the student, every step")
    ema_ramp: bool = Field(
        True, description="Mean Teacher's ramp min(m, 1 - 1/(step+1)): no random start lingering in the teacher"
    )
    pseudo_score_thr: float = Field(0.4, ge=0, le=1, description="teacher boxes kept as pseudo labels (ST: 0.5)")
    rpn_pseudo_thr: float = Field(0.35, ge=0, le=1, description="pseudo boxes the student's RPN learns (ST: 0.9)")
    cls_pseudo_thr: float = Field(0.35, ge=0, le=1, description="pseudo boxes the RoI classifier learns (ST: 0.9)")
    soft_background: bool = Field(True, description="weight background proposals by the teacher's background score")
    jitter_n: int = Field(10, ge=2, description="box jitters per pseudo box for the regression reliability")
    jitter_scale: float = Field(0.06, gt=0, description="jitter offset std as a fraction of the box size")
    jitter_max_std: float = Field(0.02, gt=0, description="pseudo boxes regressed only below this mean relative std")
    unsup_warmup_steps: int = Field(
        100, ge=0, description="supervised-only steps before the unsupervised loss starts (0 in full)"
    )
    predict_with: Literal["teacher", "student"] = Field("teacher", description="which weights eval and predict use")


class DefectsConfig(RunConfig):
    pipeline: Literal["defects"] = "defects"
    trainer: TrainerConfig = Field(
        default_factory=lambda: TrainerConfig(
            epochs=1000, max_steps=200, val_every_n_steps=100, batch_size=1, lr=2e-3, warmup_epochs=0.0
        )
    )
    model: DefectsModelConfig = Field(default_factory=DefectsModelConfig)
    data: DefectsDataConfig = Field(default_factory=DefectsDataConfig)
    semi: SemiConfig = Field(default_factory=SemiConfig)
