"""Config of the ``puzzle`` pipeline. Defaults are the ``quick`` preset (CPU minutes); ``full`` is the seed's scale
(ResNet18-FPN with 256 channels) on a GPU.

The seed's recipe is reachable as ``--head regression --rotation head --scale-mode fixed`` (pooled correlation ->
box regression, a rotation classifier, puzzle squeezed to 512 and the piece blown up to 224); the defaults are the
variants that work: dense correlation of the piece's spatial map trained as classification over positions, rotation
by matching the piece at each of its 4 rotations, and piece and puzzle seen at the same pixel scale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from finescale.config import RunConfig, Section, TrainerConfig


class PuzzleModelConfig(Section):
    backbone: str = Field("test_resnet", description="timm CNN with stride 8/16/32 stages (resnet18 in full)")
    pretrained: bool = Field(False, description="load timm's pretrained weights (needs them cached locally)")
    weights: str | None = Field(None, description="state-dict file to load into the backbone(s)")
    fpn_channels: int = Field(64, ge=4, description="channels of every pyramid level P3..P5 (256 in full)")
    norm: Literal["batch", "group"] = Field(
        "group",
        description="backbone normalisation: group (piece and puzzle normalised alike, measured in quick) or batch"
        " (timm's own, keeps pretrained statistics)",
    )
    shared_backbone: bool = Field(True, description="one feature pyramid for piece and puzzle instead of two")
    head: Literal["dense", "regression"] = Field(
        "dense",
        description="dense: the piece's feature map correlated at P3-P5, classification over positions + box at the"
        " peak; regression: the seed's pooled correlation -> MLP -> box (CIoU + SmoothL1)",
    )
    rotation: Literal["correlate", "head"] = Field(
        "correlate",
        description="correlate: match the piece at each of its 4 rotations, joint softmax over rotation x position;"
        " head: the seed's classifier on pooled P5 features of piece + puzzle",
    )
    rotation_input: Literal["image", "features"] = Field(
        "image",
        description="what is turned by 90 degrees for rotation matching: the piece image (exact) or its features",
    )
    temperature: float = Field(
        10.0, gt=0, description="initial logit scale of the dense head's similarities (regression head: sqrt(C), seed)"
    )
    zero_mean: bool = Field(True, description="dense head: zero-normalised correlation (channel means removed)")
    piece_mask: bool = Field(False, description="dense head: learn a weight per piece cell (table margin -> 0)")
    target_sigma: float = Field(1.0, ge=0, description="Gaussian position target width in P3 cells; 0 = one-hot")
    box_weight: float = Field(1.0, ge=0, description="weight of the box loss (dense: offset + size L1)")
    rotation_weight: float = Field(1.0, ge=0, description="weight of the rotation cross-entropy")
    regressor_width: int = Field(128, ge=8, description="hidden width of the box regressor MLP")


class PuzzleDataConfig(Section):
    scale_mode: Literal["piece", "fixed"] = Field(
        "piece",
        description="piece: puzzle and piece rescaled by one factor so the piece photo's longer side becomes"
        " piece_pixels; fixed: the seed's, puzzle to puzzle_size and piece to piece_size",
    )
    piece_input: Literal["cutout", "photo"] = Field(
        "cutout",
        description="what the model sees of a piece: cutout (table masked out, straightened; measured better) or the"
        " photo as taken",
    )
    piece_pixels: int = Field(64, ge=16, description="piece mode: the piece photo's longer side after rescaling")
    piece_window: int = Field(72, ge=16, description="piece mode: square the rescaled piece is padded/cropped to")
    window: int = Field(
        256,
        ge=64,
        description="piece mode: side of the training crop of the rescaled puzzle (more distractors per step than"
        " 128: measured better on whole puzzles)",
    )
    puzzle_size: int = Field(512, ge=64, description="fixed mode: the puzzle's longer side (padded to a square)")
    piece_size: int = Field(224, ge=16, description="fixed mode: the piece's square size")
    scale_jitter: float = Field(0.15, ge=0, lt=1, description="piece mode: random zoom of window + piece, +-fraction")
    augment: bool = Field(True, description="piece quarter turns (label follows), colour jitter and blur in training")
    cache: bool = Field(True, description="keep every rescaled puzzle and piece in memory")
    tile: int = Field(768, ge=64, description="inference: the rescaled puzzle is encoded in tiles of this side")
    tile_overlap: int = Field(128, ge=0, description="inference: overlap of neighbouring tiles (multiple of 64)")
    piece_chunk: int = Field(8, ge=1, description="inference: pieces correlated with the puzzle at once")
    band_mb: int = Field(256, ge=8, description="inference: memory budget of one band of the correlation, MiB")

    @field_validator("window", "tile", "puzzle_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError("must be a multiple of 32 (the coarsest feature stride)")
        return value

    @field_validator("tile_overlap")
    @classmethod
    def _overlap_multiple_of_64(cls, value: int) -> int:
        if value % 64:
            raise ValueError("must be a multiple of 64 (half of it is cut from each tile at stride 32)")
        return value

    @model_validator(mode="after")
    def _consistent_sizes(self) -> PuzzleDataConfig:
        if self.tile_overlap >= self.tile:
            raise ValueError("tile_overlap must be smaller than tile")
        if self.piece_window >= self.window:
            raise ValueError("piece_window must be smaller than window")
        return self


class PuzzleConfig(RunConfig):
    pipeline: Literal["puzzle"] = "puzzle"
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(epochs=8, batch_size=16, lr=3e-3))
    model: PuzzleModelConfig = Field(default_factory=PuzzleModelConfig)
    data: PuzzleDataConfig = Field(default_factory=PuzzleDataConfig)


def upgrade_checkpoint_config(config: dict) -> dict:
    """Checkpoints written before ``data.piece_input`` existed were trained on the piece photo as taken, not on
    today's default cutout."""
    data = config.get("data") or {}
    if "piece_input" in data:
        return config
    return {**config, "data": {**data, "piece_input": "photo"}}
