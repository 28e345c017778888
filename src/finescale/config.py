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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from finescale.errors import FinescaleError

C = TypeVar("C", bound="RunConfig")
PRESETS = ("quick", "full")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TrainerConfig(Section):
    """Optimisation and hardware settings shared by every pipeline."""

    epochs: int = Field(10, ge=1, description="training epochs")
    max_steps: int = Field(0, ge=0, description="stop after this many optimizer steps (0 = --epochs decides)")
    val_every_n_steps: int = Field(0, ge=0, description="validate every N training steps (0 = after each epoch)")
    batch_size: int = Field(32, ge=1, description="batch size per device")
    lr: float = Field(1e-3, gt=0, description="base learning rate (AdamW)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (not applied to norms and biases)")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length before the cosine decay")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final learning rate as a fraction of the base")
    lr_cycles: int = Field(1, ge=1, description="cosine cycles after the warm-up; > 1 = warm restarts (SGDR)")
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
    limit_train_batches: int | float = Field(
        1.0,
        description="train batches per epoch: a whole number counts them (1 = one batch), a fraction takes that"
        " share (0.5; 1.0 = all)",
    )
    limit_val_batches: int | float = Field(
        1.0,
        description="validation batches: a whole number counts them (0 = none), a fraction takes that share"
        " (1.0 = all)",
    )
    progress: bool = Field(True, description="show the rich progress bar")

    @field_validator("limit_train_batches", "limit_val_batches", mode="before")
    @classmethod
    def _count_or_fraction(cls, value: Any, info: ValidationInfo) -> Any:
        """Lightning's rule, kept exact: an int counts batches, a float is a fraction, so ``1`` is one batch and
        ``1.0`` all of them. A flag's text is an int when it reads as one (``"1"``), else a float (``"1.0"``)."""
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise ValueError("give a whole number of batches or a fraction such as 0.5") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value  # pydantic reports the type
        low = 1 if info.field_name == "limit_train_batches" else 0
        if isinstance(value, float) and value > 1 and value.is_integer():
            value = int(value)  # older config.yaml files stored counts as floats (2.0): still a count
        if isinstance(value, float) and not (0 < value <= 1 or (low == 0 and value == 0)):
            raise ValueError("a fraction lies in (0, 1]; a count of batches is a whole number")
        if isinstance(value, int) and value < low:
            raise ValueError(f"a count of batches must be at least {low}")
        return value


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
    """Write ``cfg`` as YAML with its file fields (manifests, stores, checkpoints) made absolute, so that the run's
    config.yaml, the base of a ``--resume``, names the same files from any working directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(mode="json")
    for keys, annotation, _ in leaf_fields(type(cfg)):
        if strip_optional(annotation) is not Path:
            continue
        node = data
        for key in keys[:-1]:
            node = node[key]
        if node[keys[-1]] is not None:
            node[keys[-1]] = str(Path(node[keys[-1]]).absolute())
    path.write_text(yaml.safe_dump(data, sort_keys=False))
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
    preset: str | None = "quick",
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Path | None = None,
) -> C:
    """Defaults <- preset YAML <- user YAML <- CLI overrides, validated into ``cls``.

    ``base``: a run's config.yaml to start from instead of the preset (``--resume``): the run continues as it was
    configured, the user's YAML and flags on top. Its preset stays; ``preset`` None means "the run's" there and
    ``quick`` otherwise. A value out of range is reported by the flag that gave it (``--batch-size``) or its key in
    the YAML file it came from (``trainer.batch_size in my.yaml``)."""
    data: dict[str, Any] = cls().model_dump(mode="json")
    sources: list[tuple[Path, dict[str, Any]]] = []  # YAML files in the order they were merged
    if base is not None:
        run = read_yaml(base)
        was = run.get("preset", "quick")
        if preset is not None and preset != was:
            raise FinescaleError(
                f"the run was trained with the {was!r} preset ({base}); --resume continues it as it was: leave out"
                f" --preset or give --preset {was}"
            )
        preset = was
        data = deep_merge(data, run)
        sources.append((Path(base), run))
    else:
        preset = preset or "quick"
        if preset not in PRESETS:
            raise FinescaleError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        # Start from the full defaults so that a section default set by the pipeline (its own trainer settings)
        # survives an override of one field of that section.
        path = preset_path(data["pipeline"], preset)
        if not path.exists():  # a preset that silently fell back to the defaults would mislead: refuse
            raise FinescaleError(f"the {data['pipeline']} pipeline ships no {preset!r} preset ({path.name} is missing)")
        data = deep_merge(data, read_yaml(path))
    if config_file is not None:
        user = read_yaml(config_file)
        data = deep_merge(data, user)
        sources.append((Path(config_file), user))
    data["preset"] = preset
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = apply_overrides(data, cls, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise FinescaleError(_describe(err, cls, overrides, sources)) from None


def validate_config(cls: type[C], data: Mapping[str, Any]) -> C:
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise FinescaleError(_describe(err, cls, {}, [])) from None


def _describe(
    err: ValidationError,
    cls: type[RunConfig],
    overrides: Mapping[str, Any],
    sources: list[tuple[Path, dict[str, Any]]],
) -> str:
    """One line for the first error, in the user's words: the flag they typed, else the key of the YAML file that
    set the value, else the config path."""
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    leaves = {path for path, _, _ in leaf_fields(cls)}
    # a union member's tag (trainer.limit_train_batches.int) is no key the user knows: the longest field path
    loc = next((loc[:i] for i in range(len(loc), 0, -1) if loc[:i] in leaves), loc)
    key = ".".join(loc)
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        where = next((f" in {path}" for path, data in reversed(sources) if _has(data, loc)), "")
        return f"unknown config key {key}{where}"
    if loc in leaves and loc[-1] in overrides:
        return f"invalid value for --{loc[-1].replace('_', '-')} ({overrides[loc[-1]]}): {msg}"
    for path, data in reversed(sources):
        if _has(data, loc):
            return f"invalid value for {key} in {path} ({value!r}): {msg}"
    return f"invalid config value for {key}: {msg}"


def _has(data: Mapping[str, Any], loc: tuple[str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
