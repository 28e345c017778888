"""Bench of the ``defects`` pipeline, all on the same labeled images, budget and seeds: the strongest simple baseline
(a supervised single-view Faster R-CNN with cross-entropy losses and the seed's previous anchors), the seed's recipe,
the recipe minus each technique (minus the seed's lowered thresholds and targeted augmentation = the original Soft
Teacher's), and the recipe with K 1024 vs 2048 pooled tokens. Peak memory and train time come with every row."""

from __future__ import annotations

from typing import Any

from finescale.pipelines.defects.config import PREVIOUS_ANCHOR_RATIOS, DefectsConfig

# ranked by the first; the narrow classes (the seed's problem) right after it
METRICS = (
    "defects_map",
    "defects_ap_severe_rust",
    "defects_ap_chipped",
    "defects_ap_scratched",
    "defects_ap_broken",
    "defects_ap_tip_wear",
    "defects_ap50",
)

# technique -> its setting in the baseline (the recipe is the config's defaults)
TECHNIQUES: dict[str, dict[str, Any]] = {
    "soft_teacher": {"semi_supervised": False},
    "focal": {"rpn_loss": "ce", "roi_loss": "ce"},
    "targeted_anchors": {"anchor_ratios": PREVIOUS_ANCHOR_RATIOS},
    "multiview": {"multiview": False},
}
# the original Soft Teacher's thresholds (initial score, RPN, RoI classification) against the seed's lowered ones
SOFT_TEACHER_THRESHOLDS = {"pseudo_score_thr": 0.5, "rpn_pseudo_thr": 0.9, "cls_pseudo_thr": 0.9}


def bench_variants(cfg: DefectsConfig) -> dict[str, dict[str, Any]]:
    baseline = {k: v for settings in TECHNIQUES.values() for k, v in settings.items()}
    variants: dict[str, dict[str, Any]] = {"baseline": baseline, "recipe": {}}
    variants.update({f"recipe-{name}": dict(off) for name, off in TECHNIQUES.items()})
    variants["recipe-lowered_thresholds"] = dict(SOFT_TEACHER_THRESHOLDS)
    variants["recipe-targeted_augment"] = {"augment": "soft_teacher"}
    variants["recipe-K1024"] = {"pool_tokens": 1024}
    variants["recipe-K2048"] = {"pool_tokens": 2048}
    return variants
