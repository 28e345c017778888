"""The verbs every pipeline shares (``train``, ``eval``, ``predict``), built from its :class:`Pipeline` entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from finescale.cli_options import config_flags
from finescale.config import build_config
from finescale.errors import FinescaleError
from finescale.pipelines import get_pipeline
from finescale.serialize import to_jsonable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}

Out = Annotated[Path, typer.Option("--out", help="run directory (config, checkpoints, logs, metrics, report)")]
Preset = Annotated[str, typer.Option("--preset", help="quick (CPU, minutes) or full (the seed's GPU settings)")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file merged over the preset")]
Resume = Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last.ckpt")]
Checkpoint = Annotated[Path, typer.Option("--checkpoint", help="checkpoint file or run directory")]


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Image files as given, folders expanded to the images they hold (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(item)
    if not paths:
        raise FinescaleError("no input images given")
    return paths


def pipeline_app(
    name: str, config_class: type, summary: str, verbs: tuple[str, ...] = ("train", "eval", "predict")
) -> typer.Typer:
    """Typer app with the shared ``verbs`` (a pipeline whose eval or predict takes other inputs adds its own); the
    pipeline itself (torch and all) is imported only when a verb runs."""
    app = typer.Typer(help=summary, no_args_is_help=True)

    @config_flags(config_class)
    def train(
        out: Out,
        preset: Preset = "quick",
        config: ConfigFile = None,
        resume: Resume = False,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """Train on --train-json, pick the best epoch on --val-json; writes everything into --out."""
        pipeline = get_pipeline(name)
        cfg = build_config(config_class, preset=preset, config_file=config, overrides=overrides)
        if cfg.train_json is None or cfg.val_json is None:
            raise FinescaleError("give --train-json and --val-json (or set them in --config)")
        summary = pipeline.train(cfg, out, resume=resume)
        typer.echo(json.dumps(to_jsonable(summary)))

    def evaluate(
        checkpoint: Checkpoint,
        json_path: Annotated[Path, typer.Option("--json", help="manifest to evaluate on")],
        out: Annotated[Path | None, typer.Option("--out", help="metrics file (default: RUN/metrics.json)")] = None,
    ) -> None:
        """Metrics of a checkpoint on a manifest, with plots and the HTML report."""
        metrics = get_pipeline(name).evaluate(checkpoint, json_path, out=out)
        typer.echo(json.dumps(to_jsonable(metrics)))

    def predict(
        inputs: Annotated[list[Path], typer.Argument(help="image files or folders of images")],
        checkpoint: Checkpoint,
    ) -> None:
        """One JSON line per image on stdout."""
        from finescale.engine.checkpoints import load_predictor

        predictor = load_predictor(checkpoint)
        for path in expand_inputs(inputs):
            typer.echo(json.dumps(to_jsonable(predictor.predict(path))))

    for verb, command in (("train", train), ("eval", evaluate), ("predict", predict)):
        if verb in verbs:
            app.command(verb)(command)
    return app
