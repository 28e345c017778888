"""``finescale ct train|eval|predict|pack|inspect|score``: the shared verbs (``--checkpoint`` repeats for an ensemble)
plus the volume store (``pack``), a look at one volume as the loader sees it (``inspect``) and VLM3D's scoring of
any predictions file (``score``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finescale.cli_pipeline import echo_json, pipeline_app
from finescale.pipelines.ct.config import CTConfig

SUMMARY = "18 chest-CT abnormalities per volume (CT-RATE format): packed volume store, slices + attention, ensembles."

ENSEMBLE = {
    "ensemble": Annotated[
        str | None,
        typer.Option(
            "--ensemble",
            help="how several --checkpoint members combine: mean, adaptive (confidence-weighted) or bayesian"
            " (MC dropout pooled, per-label uncertainty) [mean]",
        ),
    ],
    "tta": Annotated[
        int | None,
        typer.Option("--tta", min=1, help="test-time views per member, averaged in probability (1 = none) [1]"),
    ],
}

app = pipeline_app(
    "ct",
    CTConfig,
    SUMMARY,
    ensembles=True,
    inputs_help="CT volumes (.nii.gz, .nii, .mha) or folders of them",
    eval_options={
        **ENSEMBLE,
        "external_json": Annotated[
            Path | None, typer.Option("--external-json", help="also score this split (VLM3D's external test set)")
        ],
        "robustness": Annotated[
            bool | None,
            typer.Option("--robustness/--no-robustness", help="also score a corrupted copy (noise, motion, window)"),
        ],
    },
    predictor_options={
        **ENSEMBLE,
        "metadata_csv": Annotated[
            Path | None, typer.Option("--metadata", help="CT-RATE metadata CSV (RescaleSlope/Intercept, spacing)")
        ],
    },
    predict_options={
        "csv": Annotated[Path | None, typer.Option("--csv", help="also write a CT-RATE-shaped predictions CSV")],
    },
)


@app.command("pack")
def pack(
    source: Annotated[str, typer.Option("--source", help="manifest JSON, folder or fsspec URL (hf://, memory://)")],
    out: Annotated[Path, typer.Option("--out", help="store folder")],
    preset: Annotated[str, typer.Option("--preset", help="the grid of this preset (quick|full)")] = "quick",
    max_storage_gb: Annotated[float | None, typer.Option("--max-storage-gb", min=0, help="stop at this size")] = None,
    codec: Annotated[str | None, typer.Option("--codec", help="compression codec [the measured best]")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="volumes packed in parallel")] = 2,
    metadata: Annotated[Path | None, typer.Option("--metadata", help="CT-RATE metadata CSV")] = None,
) -> None:
    """Preprocess volumes once (HU, resampling, crop/pad) into a lossless compressed store; resumable."""
    from finescale.config import build_config
    from finescale.data.volume_pack import pack as run

    cfg = build_config(CTConfig, preset=preset)
    options = {"codec": codec} if codec else {}
    stats = run(
        source,
        out,
        spacing=tuple(cfg.data.spacing),
        shape=tuple(cfg.data.shape),
        max_storage_gb=max_storage_gb,
        workers=workers,
        metadata_csv=metadata,
        **options,
    )
    echo_json(stats)


@app.command("inspect")
def inspect(
    volume: Annotated[Path, typer.Argument(help="a .nii.gz, .nii or .mha volume")],
    metadata: Annotated[Path | None, typer.Option("--metadata", help="CT-RATE metadata CSV")] = None,
) -> None:
    """One JSON line with what the loader sees: shape, spacing, HU range and percentiles, the scaling used."""
    from finescale.data.ct_io import inspect_volume

    typer.echo(json.dumps(inspect_volume(volume, metadata_csv=metadata)))


@app.command("score")
def score(
    labels: Annotated[Path, typer.Option("--labels", help="labels CSV (VolumeName + the 18 label columns)")],
    predictions: Annotated[Path, typer.Option("--predictions", help="predictions CSV or JSON (ours or anyone's)")],
) -> None:
    """VLM3D's scores (fixed 0.5; macro precision, recall, F1, accuracy, AUROC) of any predictions file."""
    from finescale.data.ct_io import LABELS
    from finescale.eval.prediction_files import score_files

    echo_json(score_files(labels, predictions, LABELS))
