"""Bench of the ``dims`` pipeline: the image-only regressor, each embedding alone, both embeddings under each attention
type, the recipe without progressive unfreezing and with the other embedding sources, and the ceiling of the
embeddings: ``oracle-dual`` and ``oracle-triple`` feed the class embeddings of the TRUE company and model (in training
and test) instead of the classifiers' predictions, so they show what the embeddings give when the classifiers are
right. Every variant of one seed reuses the same two classifiers (trained once per seed by :func:`bench_shared`), so
rows differ only in the regressor; the sizes of every row snap with the model classifier's own probabilities, and
``dims_raw_avg_mae_mm`` is the regressor's own answer before snapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finescale.pipelines.dims.config import DimsConfig

METRICS = (
    "dims_avg_mae_mm",
    "dims_raw_avg_mae_mm",
    "dims_length_mae_mm",
    "dims_diameter_mae_mm",
    "dims_unseen_avg_mae_mm",
    "dims_unseen_length_mae_mm",
    "dims_unseen_diameter_mae_mm",
    "dims_model_accuracy",
)
ORACLE = ("dual", "triple")


def bench_variants(cfg: DimsConfig) -> dict[str, dict[str, Any]]:
    reg = cfg.regress
    recipe = {
        "attention_type": reg.attention_type,
        "embedding_source": reg.embedding_source,
        "use_company": True,
        "use_model": True,
        "unfreeze_epochs": reg.unfreeze_epochs,
        "unfreeze_fractions": reg.unfreeze_fractions,
        "embedding_lr_mult": reg.embedding_lr_mult,
    }
    variants: dict[str, dict[str, Any]] = {
        "baseline": {**recipe, "embedding_source": "none", "aux_classify_weight": 0},
        "+company": {**recipe, "use_model": False},
        "+model": {**recipe, "use_company": False},
    }
    others = [a for a in ("dual", "triple", "hierarchical") if a != reg.attention_type]  # the recipe has the default
    variants.update({f"attention-{a}": {**recipe, "attention_type": a} for a in others})
    variants["no-unfreezing"] = {**recipe, "unfreeze_epochs": [0], "unfreeze_fractions": [1.0]}
    variants.update({f"source-{s}": {**recipe, "embedding_source": s} for s in ("hard", "features")})
    # the ceiling: the true names' embeddings, under the measured best attention (dual) and the seed's (triple)
    variants.update({f"oracle-{a}": {**recipe, "embedding_source": "oracle", "attention_type": a} for a in ORACLE})
    variants["recipe"] = recipe
    return variants


def bench_shared(cfg: DimsConfig, out: Path) -> dict[str, Any]:
    """Train (or reuse) the company and model classifiers of one bench seed in ``out``; the overrides that make
    every variant of that seed start from them."""
    from finescale.pipelines.dims.workflow import ensure_classifier

    return {
        "company_checkpoint": str(ensure_classifier(cfg, Path(out) / "company", "company")),
        "model_checkpoint": str(ensure_classifier(cfg, Path(out) / "model", "model")),
    }
