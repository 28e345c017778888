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
    [({"smooth_sigma": -1}, "--smooth-sigma"), ({"fusion": "sum"}, "--fusion"), ({"nonsense": 1}, "nonsense")],
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


def test_a_range_error_names_the_flag_the_user_typed():
    with pytest.raises(FinescaleError) as info:
        build_config(LengthConfig, overrides={"batch_size": 0})
    assert str(info.value).startswith("invalid value for --batch-size (0): ")
    assert "trainer.batch_size" not in str(info.value)


def test_a_range_error_from_a_yaml_file_names_its_key_and_the_file(tmp_path: Path):
    user = tmp_path / "my.yaml"
    user.write_text("trainer:\n  bacth_size: 3\n")
    with pytest.raises(FinescaleError, match=r"^unknown config key trainer\.bacth_size in .*my\.yaml$"):
        build_config(LengthConfig, config_file=user)
    user.write_text("trainer:\n  batch_size: 0\n")
    with pytest.raises(FinescaleError, match=r"^invalid value for trainer\.batch_size in .*my\.yaml \(0\): "):
        build_config(LengthConfig, config_file=user)
    # the flag given on top wins, and is what a bad value is reported by
    assert build_config(LengthConfig, config_file=user, overrides={"batch_size": 4}).trainer.batch_size == 4
    with pytest.raises(FinescaleError, match=r"^invalid value for --batch-size \(-2\)"):
        build_config(LengthConfig, config_file=user, overrides={"batch_size": -2})


@pytest.mark.parametrize("given, expected", [("1", 1), ("0.5", 0.5), ("1.0", 1.0), ("3", 3), (2.0, 2), (1.0, 1.0)])
def test_limit_train_batches_is_a_count_or_a_fraction(given, expected):
    """Lightning reads an int as a count and a float as a fraction: "1" is one batch, "1.0" all of them; a count
    stored as 2.0 by an older config.yaml stays a count."""
    value = build_config(LengthConfig, overrides={"limit_train_batches": given}).trainer.limit_train_batches
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("given", ["0", "1.5", "-1", "many"])
def test_limit_train_batches_refuses_what_is_neither(given):
    with pytest.raises(FinescaleError, match="^invalid value for --limit-train-batches"):
        build_config(LengthConfig, overrides={"limit_train_batches": given})


def test_a_resumed_run_starts_from_its_own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    first = build_config(
        LengthConfig, preset="quick", overrides={"train_json": "t.json", "val_json": "v.json", "fusion_dim": 32}
    )
    saved = save_config(first, tmp_path / "run" / "config.yaml")
    again = build_config(LengthConfig, preset=None, base=saved, overrides={"epochs": 3})
    assert again.train_json == tmp_path / "t.json" and again.model.fusion_dim == 32 and again.trainer.epochs == 3
    with pytest.raises(FinescaleError, match="'quick' preset"):
        build_config(LengthConfig, preset="full", base=saved)


def test_a_saved_config_names_its_files_absolutely_so_a_resume_works_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from finescale.pipelines.ct.config import CTConfig

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    overrides = {"train_json": "data/train.json", "val_json": "/abs/val.json", "store": "store", "backbone": "resnet18"}
    cfg = build_config(CTConfig, preset="quick", overrides=overrides)
    saved = save_config(cfg, Path("runs/a/config.yaml"))
    monkeypatch.chdir(tmp_path)  # a --resume started from elsewhere
    again = build_config(CTConfig, preset=None, base=tmp_path / "project" / saved)
    assert again.train_json == tmp_path / "project" / "data" / "train.json"
    assert again.val_json == Path("/abs/val.json")
    assert again.data.store == tmp_path / "project" / "store"  # a nested file field too
    assert again.data.metadata_csv is None and again.model.backbone == "resnet18"  # the rest as it was
