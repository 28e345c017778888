"""Bench of the ``ct`` pipeline, all on the same data, budget and seeds: the plain baseline (backbone + one Linear,
BCE, fixed windows, no augmentation, mean over slices, no calibration), each of the seed's techniques added alone,
the recipe (all of them) and the recipe minus each; ``selected`` (the techniques that helped alone, together);
``defaults`` (the preset as a user gets it); plus the 3-D baseline (a MONAI ResNet on the volume). The
data-budget pair ``budget-source`` / ``budget-packed`` trains the baseline on the training volumes that fit in
:data:`BUDGET_SHARE` of the training manifest's source-file bytes, counted as source files or as stored files, so it
measures how much more data the packed store fits in one storage budget and what that buys. Then, without training:
the baseline's runs with each per-label calibration refitted (the ``+calibration`` rows), the recipe's seeds as one
ensemble (mean, adaptive and bayesian combination) and each seed with test-time augmentation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finescale.engine.rundir import run_config
from finescale.engine.trainer import BEST
from finescale.eval.bench import TEST_METRICS
from finescale.pipelines.ct.config import CTConfig
from finescale.serialize import read_json

METRICS = (
    "ct_macro_auroc",
    "ct_macro_f1",
    "ct_macro_precision",
    "ct_macro_recall",
    "ct_macro_accuracy",
    "ct_external_macro_auroc",
    "ct_corrupted_macro_auroc",
)

ENSEMBLE_KINDS = ("mean", "adaptive", "bayesian")
CALIBRATION_KINDS = ("temperature", "platt", "threshold")
RECALIBRATED = ("baseline", "defaults")  # the variants whose runs get each calibration refitted
TTA_VIEWS = 4  # as is, flipped, slices shifted up and down (views.py)
BUDGET_SHARE = 0.35  # a store up to 1 / 0.35 = 2.9x smaller than the source files still fits less than all

# technique -> (its setting in the recipe, its setting in the baseline)
TECHNIQUES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "attention": ({"attention": "cbam"}, {"attention": "none"}),
    "slice_attention": ({"slice_pool": "attention"}, {"slice_pool": "mean"}),
    "enhanced_head": ({"head": "enhanced"}, {"head": "plain", "head_dropout": 0.0}),
    "adaptive_window": ({"window": "adaptive"}, {"window": "fixed"}),
    "denoise_clahe": ({"denoise": True, "clahe": True}, {"denoise": False, "clahe": False}),
    "ct_augment": ({"ct_augment": True, "elastic": True}, {"ct_augment": False, "elastic": False}),
    "mixup": ({"mix": "mixup"}, {"mix": "none"}),
    "focal_smoothing": ({"loss": "focal", "label_smoothing": 0.1}, {"loss": "bce", "label_smoothing": 0.0}),
    "progressive": ({"progressive_sizes": None}, {"progressive_sizes": []}),  # None: the preset's stages
    "calibration": ({"calibration": "temperature"}, {"calibration": "none"}),
}


# the techniques that beat the baseline alone by more than its seed spread (2 seeds, commit 46ff111, README): the
# ``selected`` row stacks them, the test of whether the single-technique gains add up where the full recipe's did not
SELECTED = ("progressive", "ct_augment", "slice_attention", "mixup")


def bench_variants(cfg: CTConfig) -> dict[str, dict[str, Any]]:
    def resolved(settings: dict[str, Any]) -> dict[str, Any]:
        return {k: (cfg.data.progressive_sizes if v is None else v) for k, v in settings.items()}

    on = {name: resolved(pair[0]) for name, pair in TECHNIQUES.items()}
    off = {name: resolved(pair[1]) for name, pair in TECHNIQUES.items()}
    baseline = {k: v for settings in off.values() for k, v in settings.items()}
    recipe = {k: v for settings in on.values() for k, v in settings.items()}
    variants: dict[str, dict[str, Any]] = {"baseline": {**baseline, "flips": False}}
    # no trained "+calibration": its training is the baseline's, bench_combined refits the baseline's checkpoints
    singles = [name for name in on if name != "calibration"]
    variants.update({f"+{name}": {**baseline, "flips": False, **on[name]} for name in singles})
    variants["recipe"] = recipe
    variants.update({f"recipe-{name}": {**recipe, **off[name]} for name in on})
    variants["recipe-adjacent"] = {**recipe, "channels": "adjacent"}
    variants["selected"] = {**variants["baseline"], **{k: v for name in SELECTED for k, v in on[name].items()}}
    variants["defaults"] = {}  # the preset exactly as a user gets it: the row its defaults are chosen by
    variants["3d"] = {**baseline, "dimension": "3d", "flips": False}
    for fmt in ("source", "packed"):  # the pair differs only in how a volume's bytes count against the budget
        budget = {"train_storage_share": BUDGET_SHARE, "train_storage_format": fmt}
        variants[f"budget-{fmt}"] = {**variants["baseline"], **budget}
    return variants


def bench_eval_options(data_dir: Path) -> dict[str, Any]:
    """Every bench run is also scored on the external split (the held-out scanner) when the data has one."""
    external = Path(data_dir) / "external.json"
    return {"external_json": external} if external.exists() else {}


def bench_combined(runs: Mapping[str, Sequence[Path]], data_dir: Path, out: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows from finished runs, without training. The seeds of each variant in :data:`RECALIBRATED` with each other
    per-label calibration refitted on the validation split (``<variant> + <kind> calibration``: calibration changes
    no training step, so for the baseline these are the ``+calibration`` variants at no training cost). The recipe's
    seeds as one ensemble, once per combination rule, and each seed with :data:`TTA_VIEWS` test-time views. All
    scored like every bench run (same test, external and corrupted sets); a row's training time is its members'.
    Each evaluation is kept in ``out`` and reused when the bench runs again."""
    from finescale.pipelines.ct.workflow import calibrate, evaluate

    test_json = Path(data_dir) / "test.json"

    def finished(variant: str) -> list[Path]:
        return [Path(d) for d in runs.get(variant, ()) if (Path(d) / TEST_METRICS).exists()]

    def scored(folder: Path, members: Sequence[Path], trained: Sequence[Path], **options: Any) -> dict[str, Any]:
        done = folder / TEST_METRICS
        if not done.exists():  # evaluate writes this file itself: its flat metrics, beside predictions and report
            evaluate(list(members), test_json, out=done, **bench_eval_options(data_dir), **options)
        seconds = sum(read_json(m / TEST_METRICS)["train_seconds"] for m in trained)
        return {**read_json(done), "train_seconds": seconds}

    def recalibrated(folder: Path, run: Path, kind: str) -> dict[str, Any]:
        if not (folder / TEST_METRICS).exists():
            calibrate(run / BEST, kind=kind, out=folder / BEST)
        return scored(folder, [folder / BEST], [run])

    rows: dict[str, list[dict[str, Any]]] = {}
    for variant in RECALIBRATED:
        done = finished(variant)
        own = {(run_config(d) or {}).get("model", {}).get("calibration") for d in done}
        for kind in [k for k in CALIBRATION_KINDS if k not in own] if done else ():  # its own: the variant's row
            folder = out / "calibration" / variant / kind
            rows[f"{variant} + {kind} calibration"] = [recalibrated(folder / d.name, d, kind) for d in done]
    recipe = finished("recipe")
    if len(recipe) > 1:
        for kind in ENSEMBLE_KINDS:
            folder = out / f"ensemble_{kind}"
            rows[f"recipe ensemble {kind} x{len(recipe)}"] = [
                scored(folder, [d / BEST for d in recipe], recipe, ensemble=kind)
            ]
    if recipe:
        rows[f"recipe TTA x{TTA_VIEWS}"] = [
            scored(out / f"tta{TTA_VIEWS}" / d.name, [d / BEST], [d], tta=TTA_VIEWS) for d in recipe
        ]
    return rows
