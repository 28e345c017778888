"""The table of pipelines. Each pipeline's ``<name>/pipeline.py`` holds a ``PIPELINE`` object (a :class:`Pipeline`),
imported only when asked for, so that ``finescale --help`` stays fast and one pipeline's needs never slow another."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finescale.errors import FinescaleError

PIPELINE_NAMES: tuple[str, ...] = ("length", "dims", "puzzle")
# Pipelines that `finescale demo` runs by default (all of them; `--tasks` picks a subset).
DEMO_TASKS: tuple[str, ...] = ("length", "dims", "puzzle")


@dataclass(frozen=True)
class SearchSpace:
    """What ``finescale hpo <pipeline>`` searches: ``suggest(trial, cfg)`` returns config overrides for one Optuna
    trial (ranges may depend on the preset's ``cfg``); ``objective`` is a validation metric key."""

    suggest: Callable[..., dict[str, Any]]  # (optuna.Trial, config) -> {config field: value}
    objective: str
    direction: str = "minimize"


@dataclass(frozen=True)
class Pipeline:
    """What the shared CLI, bench, demo and checkpoint loader need to know about one pipeline."""

    name: str
    config_class: type
    task_class: type
    predictor_class: type
    train: Callable[..., Any]  # (cfg, run_dir, *, resume, callbacks) -> run summary dict
    evaluate: Callable[..., Any]  # (checkpoint, manifest, out) -> metrics dict
    synth: Callable[..., Any]  # (out, n, seed) -> summary; writes out/{train,val,test}.json
    bench_variants: Callable[..., Any]  # (cfg) -> {variant name: config overrides}
    bench_metrics: tuple[str, ...]  # metric keys that bench reports; the first one ranks the variants
    demo_size: int = 1000  # images the demo and the bench synthesise
    extra_baselines: Callable[..., Any] | None = field(default=None)  # (train_json, test_json) -> {name: metrics}
    # (seed's config, folder) -> overrides: parts that every bench variant of one seed shares, trained once there
    bench_shared: Callable[..., dict[str, Any]] | None = None
    search: SearchSpace | None = None  # the hyperparameter search space of `finescale hpo <name>`
    # (config read from a checkpoint) -> that config brought up to date: a field added since the checkpoint was
    # written takes the value that reproduces how the model was trained, not today's default
    upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINE_NAMES:
        raise FinescaleError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINE_NAMES)}")
    return importlib.import_module(f"finescale.pipelines.{name}.pipeline").PIPELINE
