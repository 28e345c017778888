"""The table of pipelines and the contract every pipeline follows.

Each pipeline lives in ``pipelines/<name>/`` and holds a ``PIPELINE`` object (a :class:`Pipeline`) in its
``pipeline.py``, imported only when asked for, so that ``finescale --help`` stays fast and one pipeline's needs never
slow another. Adding a sixth pipeline means writing these pieces and adding its name to :data:`PIPELINE_NAMES`; the
parametrised contract test (``tests/contract/``) then checks it like the others.

The contract:

* **Config**: a :class:`finescale.config.RunConfig` subclass whose field defaults are the ``quick`` preset, and two
  preset files ``configs/<name>_quick.yaml`` and ``configs/<name>_full.yaml`` (a missing one is an error).
* **CLI**: ``pipelines/<name>/cli.py`` builds its app with :func:`finescale.cli_pipeline.pipeline_app` (the shared
  ``train``, ``eval`` and ``predict`` verbs; options of its own go in through ``eval_options``,
  ``predictor_options`` and ``predict_options``) and may add verbs of its own to that app. It imports no torch.
* **Task**: ``task_class(config_dict, load_weights=...)`` returns the LightningModule (``engine.task.TaskModule``);
  ``load_weights=False`` builds the architecture without reading pretrained or ``--weights`` files, which is how a
  checkpoint is loaded.
* **train** ``(cfg, run_dir, *, resume=False, callbacks=()) -> summary dict``: the run directory contract.
* **evaluate** ``(checkpoint, manifest, out=None, **options) -> metrics dict``: metrics of a checkpoint on a
  manifest, merged into ``out`` (default: the run's ``metrics.json``), plots and report beside it. The formulas live
  in the pipeline's ``metrics.py``.
* **Predictor**: ``predictor_class(task, **options)`` returns an object with ``predict(inputs, **options) ->
  list[dict]``, one plain-JSON dict per input (the CLI prints each as one line); ``finescale.load(run, **options)``
  returns the same object. Image inputs go through a DataLoader in batches (``engine/predictor.py``).
* **Metric keys** start with the pipeline's name (``dims_avg_mae_mm``); only the shared run bookkeeping written by
  ``engine/run.py`` (:func:`is_run_key`) does not. :func:`prefix_metrics` applies the rule and also migrates the
  keys of files written before it (``avg_mae_mm`` -> ``dims_avg_mae_mm``).
* **synth** ``(out, n=, seed=)`` writes ``out/{train,val,test}.json``; ``smoke`` holds the config overrides of the
  smallest run that exercises every verb and ``example_inputs`` what ``predict`` takes for a manifest's records (the
  contract test uses both).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from finescale.errors import FinescaleError

PIPELINE_NAMES: tuple[str, ...] = ("length", "dims", "puzzle", "ct", "defects")
# Pipelines that `finescale demo` runs by default (all of them; `--tasks` picks a subset).
DEMO_TASKS: tuple[str, ...] = ("length", "dims", "puzzle", "ct", "defects")

# Keys every run writes the same way whatever the pipeline (engine/run.py): training time, steps and peak memory,
# the best validation score, and the manifest's record counts per split.
_RUN_KEY = re.compile(
    r"^(train_seconds|epochs_trained|global_step|peak_memory_mb|best_.+|(train|val|unlabeled)_(n_total|n_valid|skipped_.+))$"
)


class Predictor(Protocol):
    """What ``finescale.load(run)`` returns and ``finescale <pipeline> predict`` calls."""

    def predict(self, inputs: Any, **options: Any) -> list[dict[str, Any]]:
        """One input (an image path or array) or a sequence of them -> one plain-JSON dict per input, in order.
        An input that cannot be read gives ``{"input": ..., "error": "..."}`` instead of stopping the rest."""
        ...


@dataclass(frozen=True)
class SearchSpace:
    """What ``finescale hpo <pipeline>`` searches: ``suggest(trial, cfg)`` returns config overrides for one Optuna
    trial (ranges may depend on the preset's ``cfg``); ``objective`` is a validation metric key."""

    suggest: Callable[..., dict[str, Any]]  # (optuna.Trial, config) -> {config field: value}
    objective: str
    direction: str = "minimize"


@dataclass(frozen=True)
class Pipeline:
    """What the shared CLI, bench, demo, HPO, tests and checkpoint loader need to know about one pipeline."""

    name: str
    config_class: type
    task_class: Callable[..., Any]  # (config dict, *, load_weights) -> TaskModule
    predictor_class: Callable[..., Predictor]  # (task, **options) -> Predictor
    train: Callable[..., Any]  # (cfg, run_dir, *, resume, callbacks) -> run summary dict
    evaluate: Callable[..., Any]  # (checkpoint, manifest, out=None, **options) -> metrics dict
    synth: Callable[..., Any]  # (out, n, seed) -> summary; writes out/{train,val,test}.json
    bench_variants: Callable[..., Any]  # (cfg) -> {variant name: config overrides}
    bench_metrics: tuple[str, ...]  # metric keys that bench reports; the first one ranks the variants
    smoke: Mapping[str, Any]  # config overrides of the smallest run that goes through every verb
    # (manifest, n) -> (inputs, predict options): what `predict` takes for the first n records of a manifest
    example_inputs: Callable[..., tuple[list[Any], dict[str, Any]]]
    smoke_n: int = 40  # records `synth` writes for that run
    demo_size: int = 1000  # images the demo and the bench synthesise
    # config overrides of the `finescale demo` run, where the quick preset alone would not fit the demo's 20 minutes
    # for all pipelines (defects' shorter schedule); the demo's report says so
    demo_overrides: Mapping[str, Any] = field(default_factory=dict)
    # (train_json, test_json, the bench's base config) -> {name: metrics}: rows trained outside the shared trainer
    extra_baselines: Callable[..., Any] | None = field(default=None)
    # (seed's config, folder) -> overrides: parts that every bench variant of one seed shares, trained once there
    bench_shared: Callable[..., dict[str, Any]] | None = None
    search: SearchSpace | None = None  # the hyperparameter search space of `finescale hpo <name>`
    # (data folder) -> config overrides that every bench, demo and contract run on that folder needs beyond its
    # train/val manifests (defects' unlabeled_json)
    data_overrides: Callable[[Path], dict[str, Any]] | None = None
    # (data folder) -> extra `evaluate` options of every bench and demo run (e.g. ct's external split)
    bench_eval_options: Callable[[Path], dict[str, Any]] | None = None
    # ({variant: [its run folder per seed]}, data folder, output folder) -> {row: [metrics, ...]}: bench rows made
    # from finished runs without training (ct's ensembles of the recipe's seeds, test-time augmentation); one metrics
    # dict per seed gives mean ± std, a single one (an ensemble of all seeds) a plain value
    bench_combined: Callable[..., dict[str, list[dict[str, Any]]]] | None = None
    # (config read from a checkpoint) -> that config brought up to date: a field added since the checkpoint was
    # written takes the value that reproduces how the model was trained, not today's default
    upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINE_NAMES:
        raise FinescaleError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINE_NAMES)}")
    return importlib.import_module(f"finescale.pipelines.{name}.pipeline").PIPELINE


def manifest_images(manifest: str | Path, n: int = 3, key: str = "image") -> tuple[list[Path], dict[str, Any]]:
    """``example_inputs`` of a pipeline that predicts from one image: the first ``n`` records' ``key`` files."""
    records = json.loads(Path(manifest).read_text())[:n]
    return [Path(manifest).parent / r[key] for r in records], {}


def is_run_key(key: str) -> bool:
    """Whether ``key`` is shared run bookkeeping (``train_seconds``, ``val_skipped_missing_file`` ...)."""
    return bool(_RUN_KEY.match(key))


def prefix_metrics(name: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with every key that is not run bookkeeping starting with ``<name>_``: the rule for what a
    pipeline writes, and the migration of files written before it (``n`` -> ``dims_n``)."""
    return {k if k.startswith(f"{name}_") or is_run_key(k) else f"{name}_{k}": v for k, v in metrics.items()}
