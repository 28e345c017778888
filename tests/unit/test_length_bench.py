from finescale.config import build_config
from finescale.eval.bench import bench_markdown, merge_rows, summarise
from finescale.pipelines.length.bench import bench_variants
from finescale.pipelines.length.config import LengthConfig


def test_variants_cover_baseline_each_technique_recipe_and_ablations():
    cfg = build_config(LengthConfig, preset="quick")
    variants = bench_variants(cfg)
    assert list(variants)[0] == "baseline" and "recipe" in variants
    base = build_config(LengthConfig, overrides=variants["baseline"]).model
    assert base.scales == cfg.model.scales[:1] and not base.use_crops and base.smooth_sigma == 0
    assert base.aux_regression_weight == 0 and not base.use_geometry and not base.use_profile
    crops_only = build_config(LengthConfig, overrides=variants["+crops"]).model
    assert crops_only.use_crops and crops_only.smooth_sigma == 0 and crops_only.scales == cfg.model.scales[:1]
    recipe = build_config(LengthConfig, overrides=variants["recipe"]).model
    assert recipe == cfg.model.model_copy(update={"smooth_sigma": recipe.smooth_sigma})
    no_smooth = build_config(LengthConfig, overrides=variants["recipe-smooth_labels"]).model
    assert no_smooth.smooth_sigma == 0 and no_smooth.use_crops and no_smooth.scales == cfg.model.scales


def test_summary_mean_and_sample_std():
    row = summarise("x", [0, 1], [{"m": 1.0, "train_seconds": 2.0}, {"m": 3.0, "train_seconds": 4.0}], ["m"])
    assert row["m_mean"] == 2.0 and abs(row["m_std"] - 2**0.5) < 1e-9 and row["train_seconds_mean"] == 3.0
    table = bench_markdown({"pipeline": "p", "preset": "quick", "rows": [row]}, ["m"])
    assert "| x | 2 | 2.000 ± 1.414 | 3.000 ± 1.414 |" in table


def test_a_partial_bench_replaces_its_rows_in_place_and_keeps_the_others():
    earlier = [{"variant": "baseline", "x": 1}, {"variant": "recipe", "x": 2}, {"variant": "old", "x": 3}]
    merged = merge_rows(earlier, [{"variant": "recipe", "x": 20}, {"variant": "new", "x": 40}])
    assert merged == [
        {"variant": "baseline", "x": 1},
        {"variant": "recipe", "x": 20},
        {"variant": "old", "x": 3},
        {"variant": "new", "x": 40},
    ]
    assert merge_rows([], earlier) == earlier
