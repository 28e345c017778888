"""Bench variants of the ``length`` pipeline: the plain baseline, each technique added alone, the seed's full
recipe, and the recipe with each technique switched off in turn. Values are config overrides."""

from __future__ import annotations

from typing import Any

from finescale.pipelines.length.config import LengthConfig

METRICS = ("length_mae_mm", "length_bin_accuracy", "length_within_1bin")


def bench_variants(cfg: LengthConfig) -> dict[str, dict[str, Any]]:
    recipe = cfg.model
    techniques: dict[str, dict[str, Any]] = {
        "multiscale": {"scales": recipe.scales},
        "crops": {"use_crops": True},
        "smooth_labels": {"smooth_sigma": recipe.smooth_sigma or 0.5},
        "aux_regression": {"aux_regression_weight": recipe.aux_regression_weight or 0.3},
    }
    baseline = {"scales": recipe.scales[:1], "use_crops": False, "smooth_sigma": 0.0, "aux_regression_weight": 0.0}
    full = {k: v for t in techniques.values() for k, v in t.items()}
    variants: dict[str, dict[str, Any]] = {"baseline": baseline}
    variants.update({f"+{name}": {**baseline, **changes} for name, changes in techniques.items()})
    variants["recipe"] = full
    variants.update({f"recipe-{name}": {**full, **_switched_off(name, baseline)} for name in techniques})
    return variants


def _switched_off(name: str, baseline: dict[str, Any]) -> dict[str, Any]:
    key = {"multiscale": "scales", "crops": "use_crops", "smooth_labels": "smooth_sigma"}.get(
        name, "aux_regression_weight"
    )
    return {key: baseline[key]}
