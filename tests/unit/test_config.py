from pathlib import Path

import pytest

from finescale.config import build_config, flag_paths, read_yaml, save_config, validate_config
from finescale.errors import FinescaleError
from finescale.pipelines.length.config import LengthConfig


def test_quick_preset_is_the_field_defaults():
    cfg = build_config(LengthConfig, preset="quick")
    assert cfg.model.scales == [64, 128]
    assert cfg.preset == "quick"


def test_full_preset_follows_the_seed():
    cfg = build_config(LengthConfig, preset="full")
    assert cfg.model.backbone == "vit_base_patch16_224"
    assert cfg.model.scales == [224, 384]
    assert cfg.model.use_crops and cfg.model.smooth_sigma == 0.5 and cfg.model.aux_regression_weight == 0.3


def test_cli_style_overrides_reach_nested_fields():
    cfg = build_config(LengthConfig, overrides={"scales": "224,384", "epochs": 3, "use_crops": False, "lr": None})
    assert cfg.model.scales == [224, 384]
    assert cfg.trainer.epochs == 3
    assert cfg.model.use_crops is False
    assert cfg.trainer.lr == LengthConfig().trainer.lr  # None means "not given"


def test_every_leaf_field_name_is_unique():
    paths = flag_paths(LengthConfig)
    assert paths["epochs"] == ("trainer", "epochs")
    assert paths["smooth_sigma"] == ("model", "smooth_sigma")


@pytest.mark.parametrize(
    "overrides, message",
    [({"smooth_sigma": -1}, "smooth_sigma"), ({"fusion": "sum"}, "fusion"), ({"nonsense": 1}, "nonsense")],
)
def test_bad_values_give_one_line_errors(overrides, message):
    with pytest.raises(FinescaleError, match=message) as info:
        build_config(LengthConfig, overrides=overrides)
    assert "\n" not in str(info.value)


def test_user_yaml_is_merged_and_saved_config_round_trips(tmp_path: Path):
    user = tmp_path / "mine.yaml"
    user.write_text("model:\n  fusion: attention\ntrainer:\n  epochs: 2\n")
    cfg = build_config(LengthConfig, preset="quick", config_file=user, overrides={"epochs": 5})
    assert cfg.model.fusion == "attention" and cfg.trainer.epochs == 5
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert validate_config(LengthConfig, read_yaml(saved)) == cfg
