"""``finescale``: one entry point for every pipeline (``finescale <pipeline> <verb>``) plus synth, bench and demo."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from finescale.errors import FinescaleError
from finescale.pipelines import PIPELINE_NAMES
from finescale.serialize import to_jsonable

app = typer.Typer(
    help="finescale: PyTorch pipelines for vision problems where the answer hides in fine detail.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
synth_app = typer.Typer(help="Write procedural datasets (images + JSON manifests).", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


@synth_app.command("implants")
def synth_implants(
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    n: Annotated[int, typer.Option("--n", help="number of radiographs")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    size: Annotated[int, typer.Option("--size", help="image side in pixels")] = 384,
) -> None:
    """Implant radiographs for the length and dims pipelines."""
    from finescale.synth.implants import generate_implants

    typer.echo(json.dumps(to_jsonable(generate_implants(out, n=n, seed=seed, size=size))))


@app.command("bench")
def bench(
    pipeline: Annotated[str, typer.Argument(help=f"one of: {', '.join(PIPELINE_NAMES)}")],
    out: Annotated[Path, typer.Option("--out", help="bench folder (bench.json, bench.md, runs/, data/)")],
    preset: Annotated[str, typer.Option("--preset")] = "quick",
    seeds: Annotated[str, typer.Option("--seeds", help="comma-separated seeds")] = "0,1",
    variants: Annotated[str | None, typer.Option("--variants", help="comma-separated subset of variants")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="folder with train/val/test.json (default: synth)")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="images to synthesise when --data is not given")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="override the preset's epochs")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML merged over the preset for every run")] = None,
) -> None:
    """Train every variant (baseline, each technique, the recipe) with the same budget and seeds."""
    from finescale.eval.bench import run_bench
    from finescale.pipelines import get_pipeline

    run_bench(
        get_pipeline(pipeline),
        out,
        preset=preset,
        seeds=[int(s) for s in seeds.split(",")],
        variants=variants.split(",") if variants else None,
        data_dir=data,
        n=n,
        overrides={"epochs": epochs} if epochs else None,
        config_file=config,
    )
    typer.echo((out / "bench.md").read_text())


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out")] = Path("runs/demo"),
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated pipelines")] = ",".join(PIPELINE_NAMES),
    n: Annotated[
        int | None, typer.Option("--n", help="images per pipeline (default: the pipeline's demo size)")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="override the quick preset's epochs")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML merged over the quick preset")] = None,
) -> None:
    """Synthesise data, train each pipeline with the quick preset, evaluate, write out/report.html."""
    from finescale.demo import run_demo

    summary = run_demo(out, tasks=tasks.split(","), n=n, epochs=epochs, config_file=config)
    typer.echo(json.dumps(to_jsonable(summary), indent=1))


def _add_pipeline_apps() -> None:
    for name in PIPELINE_NAMES:
        module = importlib.import_module(f"finescale.pipelines.{name}.cli")
        app.add_typer(module.app, name=name)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=Console(stderr=True), show_path=False)]
    )
    try:
        _add_pipeline_apps()
        app()
    except FinescaleError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
