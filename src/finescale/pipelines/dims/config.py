"""Config of the ``dims`` pipeline. Defaults are the ``quick`` preset; ``configs/dims_full.yaml`` is the seed's.

One config class serves both stages: ``stage: classify`` trains a company or model classifier (the embedding models),
``stage: regress`` the length/diameter regressor that reuses them. The CLI verbs only show the flags of their stage
(``dims classify`` hides the ``regress`` section, ``dims train`` the ``classify`` one); the label vocabularies and
the classifiers' architectures are filled in by the workflow and travel in the checkpoint, so a checkpoint alone
predicts company and model names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from finescale.config import RunConfig, Section, TrainerConfig

TARGETS = ("company", "model")
ATTENTION_TYPES = ("dual", "triple", "hierarchical")


class DimsModelConfig(Section):
    """The image encoder shared by the classifiers and the regressor's visual branch."""

    backbone: str = Field("test_resnet", description="timm model name (ViT-B in full, a tiny CNN in quick)")
    pretrained: bool = Field(False, description="load timm's pretrained weights (needs them cached locally)")
    weights: str | None = Field(None, description="state-dict file to load into the backbone")
    image_size: int = Field(128, ge=32, description="square input resolution of the view")
    view: Literal["implant", "image"] = Field(
        "implant",
        description="implant: the implant found in the radiograph, upright and filling the frame; image: the whole "
        "radiograph padded to a square (the seed's input)",
    )
    embedding_dim: int = Field(128, ge=4, description="classifier embedding width (penultimate layer): 128|256|512")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before classifier and regression outputs (MC dropout)")


class DimsClassifyConfig(Section):
    target: Literal["company", "model"] = Field("company", description="what the classifier learns to name")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the classification loss")


class DimsRegressConfig(Section):
    company_checkpoint: Path | None = Field(
        None, description="company classifier checkpoint (default: train one into RUN/company first)"
    )
    model_checkpoint: Path | None = Field(
        None, description="model classifier checkpoint (default: train one into RUN/model first)"
    )
    attention_type: Literal["dual", "triple", "hierarchical"] = Field(
        "triple", description="how visual, company and model features are weighed"
    )
    attention_dim: int = Field(128, ge=4, description="width the three inputs are projected to before weighing")
    embedding_source: Literal["soft", "hard", "features", "none", "oracle"] = Field(
        "soft",
        description="soft: class embeddings weighted by the classifier's probabilities; hard: the arg-max class's "
        "embedding; features: the classifier's penultimate features; none: image only (ablation); oracle: the TRUE "
        "class's embedding, in training and evaluation (the ceiling of the embeddings; needs labels, so no predict)",
    )
    use_company: bool = Field(True, description="feed the company embedding (off: zeros, an ablation)")
    use_model: bool = Field(True, description="feed the model embedding (off: zeros, an ablation)")
    embedding_lr_mult: float = Field(0.1, ge=0, description="learning rate of the embedding models / base lr")
    unfreeze_epochs: list[int] = Field(
        [1, 2], description="epochs at which 50%, then all, of the embedding models unfreeze (head only before)"
    )
    unfreeze_fractions: list[float] = Field([0.5, 1.0], description="fraction unfrozen at each --unfreeze-epochs")
    stage_visual: bool = Field(
        False, description="also freeze the visual backbone until the first unfreeze epoch (for a pretrained one)"
    )
    head_dim: int = Field(128, ge=4, description="hidden width of the regression head")
    aux_classify_weight: float = Field(
        0.1, ge=0, description="weight of the classifiers' own losses while they fine-tune (keeps names right)"
    )
    target_center: list[float] = Field([11.0, 4.5], description="length, diameter (mm) mapped to 0 for the head")
    target_scale: list[float] = Field([5.0, 1.5], description="length, diameter (mm) mapped to 1 for the head")
    snap: bool = Field(
        True, description="move predicted sizes to the nearest catalogue sizes of the likely models (see catalogue.py)"
    )
    snap_sigma: list[float] = Field(
        [0.5, 0.2], description="length, diameter error (mm) the snapping assumes for the regressor"
    )
    mc_samples: int = Field(16, ge=0, description="MC-dropout passes at predict time for the uncertainty; 0 = off")

    @field_validator("unfreeze_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= f <= 1.0 for f in value):
            raise ValueError("fractions must lie in [0, 1]")
        return value

    @field_validator("target_center", "target_scale", "snap_sigma")
    @classmethod
    def _pair(cls, value: list[float]) -> list[float]:
        if len(value) != 2:
            raise ValueError("give two numbers: length, diameter")
        return value


class DimsDataConfig(Section):
    cache: bool = Field(True, description="keep the resized images in memory")
    augment: bool = Field(True, description="flips and exposure jitter during training")
    companies: list[str] = Field([], description="company vocabulary (default: the training manifest's, sorted)")
    models: list[str] = Field([], description="model vocabulary (default: the training manifest's, sorted)")


def _trainer() -> TrainerConfig:
    return TrainerConfig(epochs=4, batch_size=16, lr=2e-3)


class DimsConfig(RunConfig):
    """Everything a dims run needs; what is saved as config.yaml and in the checkpoint."""

    pipeline: Literal["dims"] = "dims"
    stage: Literal["classify", "regress"] = Field(
        "regress", description="set by the verb: classify or regress", json_schema_extra={"flag": False}
    )
    trainer: TrainerConfig = Field(default_factory=_trainer)
    model: DimsModelConfig = Field(default_factory=DimsModelConfig)
    classify: DimsClassifyConfig = Field(default_factory=DimsClassifyConfig)
    regress: DimsRegressConfig = Field(default_factory=DimsRegressConfig)
    data: DimsDataConfig = Field(default_factory=DimsDataConfig)
    embedders: dict[str, dict[str, Any]] = Field(
        {}, description="set by the workflow: the company/model classifiers' model section and labels"
    )
    catalogue: dict[str, dict[str, Any]] = Field(
        {},
        description="set by the workflow: per model, the lengths and diameters (mm) of the training manifest and the"
        " company that makes it",
    )

    def labels(self, target: str) -> list[str]:
        return list(self.data.companies if target == "company" else self.data.models)
