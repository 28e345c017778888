"""Bench variants of the ``length`` pipeline, as config overrides: the plain baseline (one scale, hard labels, no
crops, no auxiliary head, none of finescale's measurement branches), each technique added alone, the full
recipe, and the recipe with each technique switched off in turn (``recipe-<name>``)."""

from __future__ import annotations

from typing import Any

from finescale.pipelines.length.config import LengthConfig

METRICS = ("length_mae_mm", "length_bin_accuracy", "length_within_1bin")

OFF: dict[str, dict[str, Any]] = {
    "multiscale": {},  # filled from the recipe's first scale
    "crops": {"use_crops": False},
    "smooth_labels": {"smooth_sigma": 0.0},
    "aux_regression": {"aux_regression_weight": 0.0},
    "geometry": {"use_geometry": False},
    "profile": {"use_profile": False},
}


def bench_variants(cfg: LengthConfig) -> dict[str, dict[str, Any]]:
    recipe = cfg.model
    on: dict[str, dict[str, Any]] = {
        "multiscale": {"scales": recipe.scales},
        "crops": {"use_crops": True},
        "smooth_labels": {"smooth_sigma": recipe.smooth_sigma or 0.5},
        "aux_regression": {"aux_regression_weight": recipe.aux_regression_weight or 0.3},
        "geometry": {"use_geometry": True},
        "profile": {"use_profile": True},
    }
    off = {**OFF, "multiscale": {"scales": recipe.scales[:1]}}
    baseline = {k: v for changes in off.values() for k, v in changes.items()}
    full = {k: v for changes in on.values() for k, v in changes.items()}
    variants: dict[str, dict[str, Any]] = {"baseline": baseline}
    variants.update({f"+{name}": {**baseline, **on[name]} for name in on})
    variants["recipe"] = full
    variants.update({f"recipe-{name}": {**full, **off[name]} for name in on})
    return variants
