"""Bench variants of the ``dims`` pipeline (config overrides): the image-only baseline, each attention type and
embedding source, unfreezing switched off, and the seed's recipe (triple attention, soft embeddings, staged
unfreezing, embedding models at a tenth of the learning rate)."""

from __future__ import annotations

from typing import Any

from finescale.pipelines.dims.config import DimsConfig

METRICS = ("avg_mae_mm", "length_mae_mm", "diameter_mae_mm", "unseen_length_mae_mm", "unseen_diameter_mae_mm")


def bench_variants(cfg: DimsConfig) -> dict[str, dict[str, Any]]:
    reg = cfg.regress
    recipe = {
        "attention_type": "triple",
        "embedding_source": "soft",
        "unfreeze_epochs": reg.unfreeze_epochs,
        "unfreeze_fractions": reg.unfreeze_fractions,
        "embedding_lr_mult": reg.embedding_lr_mult,
    }
    variants: dict[str, dict[str, Any]] = {"baseline": {**recipe, "embedding_source": "none", "aux_classify_weight": 0}}
    variants.update({f"attention-{a}": {**recipe, "attention_type": a} for a in ("dual", "hierarchical")})
    variants.update({f"source-{s}": {**recipe, "embedding_source": s} for s in ("hard", "features")})
    variants["no-unfreezing"] = {**recipe, "unfreeze_epochs": [0], "unfreeze_fractions": [1.0]}
    variants["recipe"] = recipe
    return variants
