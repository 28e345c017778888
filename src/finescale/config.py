"""Typed run configs (pydantic), presets, YAML load/save and CLI overrides.

Every pipeline config subclasses :class:`RunConfig`: a ``trainer`` section shared by all pipelines plus its own
``model`` and ``data`` sections. Field defaults are the ``quick`` preset (CPU, minutes); the YAML presets in
``finescale/configs/<pipeline>_<preset>.yaml`` override them (``full`` = the seed's GPU settings). Leaf field names
are unique across sections so that each one is also a CLI flag (``trainer.epochs`` -> ``--epochs``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finescale.errors import FinescaleError

C = TypeVar("C", bound="RunConfig")
PRESETS = ("quick", "full")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TrainerConfig(Section):
    """Optimisation and hardware settings shared by every pipeline."""

    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(32, ge=1, description="batch size per device")
    lr: float = Field(1e-3, gt=0, description="base learning rate (AdamW)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (not applied to norms and biases)")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length before the cosine decay")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final learning rate as a fraction of the base")
    lr_cycles: int = Field(1, ge=1, description="cosine cycles after the warm-up; > 1 restarts them (SGDR warm restarts)")
    grad_clip: float = Field(1.0, ge=0, description="gradient norm clip, 0 = off")
    seed: int = Field(0, description="seed for every random source")
    accelerator: str = Field("auto", description="cpu, gpu, mps or auto")
    devices: str = Field("auto", description="number of devices, a list like 0,1, or auto")
    strategy: str = Field("auto", description="auto, ddp, ddp_spawn, fsdp ...")
    num_nodes: int = Field(1, ge=1, description="machines taking part in DDP")
    precision: str = Field("32-true", description="32-true, bf16-mixed, 16-mixed ...")
    num_workers: int = Field(0, ge=0, description="data loader worker processes")
    deterministic: bool = Field(True, description="use deterministic algorithms where torch has them")
    checkpoint_every_n_steps: int = Field(50, ge=1, description="also refresh last.ckpt every N steps")
    log_every_n_steps: int = Field(10, ge=1, description="logging interval in steps")
    limit_train_batches: float = Field(1.0, gt=0, description="fraction (<=1) or number (>1) of train batches")
    limit_val_batches: float = Field(1.0, ge=0, description="fraction (<=1) or number (>1) of val batches")
    progress: bool = Field(True, description="show the rich progress bar")


class RunConfig(Section):
    """Base of a pipeline's config; subclasses add ``model`` and ``data`` sections."""

    pipeline: str
    preset: Literal["quick", "full"] = "quick"
    train_json: Path | None = Field(None, description="training manifest")
    val_json: Path | None = Field(None, description="validation manifest")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


# ----------------------------------------------------------------------------------------------------------- files


def preset_path(pipeline: str, preset: str) -> Path:
    return Path(str(resources.files("finescale") / "configs" / f"{pipeline}_{preset}.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise FinescaleError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise FinescaleError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise FinescaleError(f"config file {path} must hold a mapping at the top level")
    return data


def save_config(cfg: RunConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------------- overrides


def leaf_fields(cls: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Yield (dotted path, annotation, FieldInfo) of every leaf field, descending into sub-sections."""
    for name, info in cls.model_fields.items():
        sub = _section_type(info.annotation)
        if sub is not None:
            yield from leaf_fields(sub, (*prefix, name))
        else:
            yield (*prefix, name), info.annotation, info


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def flag_paths(cls: type[RunConfig]) -> dict[str, tuple[str, ...]]:
    """Map each leaf field name to its dotted path; a name used twice is a programming error."""
    paths: dict[str, tuple[str, ...]] = {}
    for path, _, _ in leaf_fields(cls):
        if path[-1] in paths:
            raise AssertionError(f"config field name {path[-1]!r} is used twice: {paths[path[-1]]} and {path}")
        paths[path[-1]] = path
    return paths


def is_list_annotation(annotation: Any) -> bool:
    return typing.get_origin(strip_optional(annotation)) in (list, tuple)


def strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def apply_overrides(data: dict[str, Any], cls: type[RunConfig], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set leaf fields by name (``{"epochs": 3, "scales": "224,384"}``); comma strings fill list fields."""
    paths = flag_paths(cls)
    annotations = {path[-1]: ann for path, ann, _ in leaf_fields(cls)}
    out = deep_merge(data, {})
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in paths:
            raise FinescaleError(f"unknown config field {name!r}")
        if isinstance(value, str) and is_list_annotation(annotations[name]):
            value = [v.strip() for v in value.split(",") if v.strip()]
        node = out
        for key in paths[name][:-1]:
            node = node.setdefault(key, {})
        node[paths[name][-1]] = value
    return out


def build_config(
    cls: type[C],
    *,
    preset: str = "quick",
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Defaults <- preset YAML <- user YAML <- CLI overrides, validated into ``cls``."""
    if preset not in PRESETS:
        raise FinescaleError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    # Start from the full defaults so that a section default set by the pipeline (its own trainer settings)
    # survives an override of one field of that section.
    data: dict[str, Any] = cls().model_dump(mode="json")
    path = preset_path(data["pipeline"], preset)
    if not path.exists():  # a preset that silently fell back to the defaults would mislead: refuse
        raise FinescaleError(f"the {data['pipeline']} pipeline ships no {preset!r} preset ({path.name} is missing)")
    data = deep_merge(data, read_yaml(path))
    if config_file is not None:
        data = deep_merge(data, read_yaml(config_file))
    data["preset"] = preset
    data = apply_overrides(data, cls, overrides or {})
    return validate_config(cls, data)


def validate_config(cls: type[C], data: Mapping[str, Any]) -> C:
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FinescaleError(f"invalid config value for {where}: {first['msg']}") from None
