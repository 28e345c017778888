"""``finescale dims classify|train|eval|predict``.

``classify`` and ``train`` show only the flags of their stage; both build the one :class:`DimsConfig`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from finescale.cli_options import config_flags
from finescale.cli_pipeline import Checkpoint, ConfigFile, Out, Preset, Resume, expand_inputs
from finescale.config import build_config
from finescale.pipelines.dims.config import ClassifyOptions, DimsConfig, RegressOptions
from finescale.serialize import to_jsonable

SUMMARY = "Implant length and diameter from a radiograph, helped by company and model embeddings (attention fusion)."

app = typer.Typer(help=SUMMARY, no_args_is_help=True)


def _config(preset: str, config: Path | None, overrides: dict[str, Any] | None, stage: str) -> DimsConfig:
    return build_config(DimsConfig, preset=preset, config_file=config, overrides={**(overrides or {}), "stage": stage})


@app.command("classify")
@config_flags(ClassifyOptions)
def classify(
    out: Out,
    preset: Preset = "quick",
    config: ConfigFile = None,
    resume: Resume = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train a company or model classifier (--target); its embedding feeds `dims train`."""
    from finescale.pipelines.dims.workflow import classify as run

    typer.echo(json.dumps(to_jsonable(run(_config(preset, config, overrides, "classify"), out, resume=resume))))


@app.command("train")
@config_flags(RegressOptions)
def train(
    out: Out,
    preset: Preset = "quick",
    config: ConfigFile = None,
    resume: Resume = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train the length/diameter regressor on --company-checkpoint and --model-checkpoint (trained first into
    RUN/company and RUN/model when not given)."""
    from finescale.pipelines.dims.workflow import train as run

    typer.echo(json.dumps(to_jsonable(run(_config(preset, config, overrides, "regress"), out, resume=resume))))


@app.command("eval")
def evaluate(
    checkpoint: Checkpoint,
    json_path: Annotated[Path, typer.Option("--json", help="manifest to evaluate on")],
    out: Annotated[Path | None, typer.Option("--out", help="metrics file (default: RUN/metrics.json)")] = None,
    train_json: Annotated[
        Path | None, typer.Option("--train-json", help="training manifest for the unseen-combination metrics")
    ] = None,
) -> None:
    """Metrics of a regressor or classifier checkpoint on a manifest, with plots and the HTML report."""
    from finescale.pipelines.dims.workflow import evaluate as run

    typer.echo(json.dumps(to_jsonable(run(checkpoint, json_path, out=out, train_json=train_json))))


@app.command("predict")
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="image files or folders of images")],
    checkpoint: Checkpoint,
    mc_samples: Annotated[
        int | None, typer.Option("--mc-samples", help="MC-dropout passes for the uncertainty (default: the run's)")
    ] = None,
) -> None:
    """One JSON line per image: length, diameter, company, model, probabilities, uncertainty."""
    from finescale.engine.checkpoints import load_task
    from finescale.pipelines.dims.predict import DimsPredictor

    predictor = DimsPredictor(load_task(checkpoint), mc_samples=mc_samples)
    for path in expand_inputs(inputs):
        typer.echo(json.dumps(to_jsonable(predictor.predict(path))))
