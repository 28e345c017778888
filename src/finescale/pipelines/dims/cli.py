"""``finescale dims classify|train|eval|predict``: the shared verbs (``train`` hides the classifier's flags) plus
``classify``, which trains a company or model classifier (the ``regress`` flags hidden). Both build the one
:class:`DimsConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from finescale.cli_options import config_flags
from finescale.cli_pipeline import ConfigFile, Out, Preset, Resume, echo_json, pipeline_app, train_config
from finescale.pipelines.dims.config import DimsConfig

SUMMARY = "Implant length and diameter from a radiograph, helped by company and model embeddings (attention fusion)."

app = pipeline_app(
    "dims",
    DimsConfig,
    SUMMARY,
    hidden_sections=("classify",),
    eval_options={
        "train_json": Annotated[
            Path | None,
            typer.Option(
                "--train-json", help="training manifest for the unseen-combination metrics (default: the run's)"
            ),
        ]
    },
    predictor_options={
        "mc_samples": Annotated[
            int | None,
            typer.Option("--mc-samples", min=0, help="MC-dropout passes for the uncertainty (default: the run's)"),
        ]
    },
)


@app.command("classify")
@config_flags(DimsConfig, hidden=("regress",))
def classify(
    out: Out,
    preset: Preset = None,
    config: ConfigFile = None,
    resume: Resume = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train a company or model classifier (--target); its embedding feeds `dims train`."""
    cfg = train_config(DimsConfig, out, preset=preset, config=config, resume=resume, overrides=overrides)
    from finescale.pipelines.dims.workflow import classify as run

    echo_json(run(cfg, out, resume=resume))
