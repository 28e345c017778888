"""``finescale``: one entry point for every pipeline (``finescale <pipeline> <verb>``) plus synth, bench and demo."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import rich
import typer
from rich.logging import RichHandler

from finescale.console import stderr_console, stderr_options
from finescale.errors import FinescaleError, Interrupted
from finescale.pipelines import DEMO_TASKS, PIPELINE_NAMES
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


@synth_app.command("puzzles")
def synth_puzzles(
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    n: Annotated[int, typer.Option("--n", help="number of piece records (piece photo + box + rotation)")] = 600,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    images: Annotated[
        Path | None, typer.Option("--images", help="folder of source photos (default: scikit-image's photos)")
    ] = None,
    full_size_fraction: Annotated[
        float, typer.Option("--full-size-fraction", help="share of puzzles at full size (~3000x2000)")
    ] = 0.1,
) -> None:
    """Jigsaw puzzles and photographed pieces for the puzzle pipeline, split by source photo."""
    from finescale.synth.puzzles import generate_puzzles

    summary = generate_puzzles(out, n=n, seed=seed, images=images, full_size_fraction=full_size_fraction)
    typer.echo(json.dumps(to_jsonable(summary)))


@synth_app.command("ct")
def synth_ct(
    out: Annotated[Path, typer.Option("--out", help="output folder (CT-RATE's layout + train/val/test/external.json)")],
    n: Annotated[int | None, typer.Option("--n", min=1, help="volumes (default: the demo's size)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    strength: Annotated[
        float, typer.Option("--strength", help="scales every finding's size and contrast (> 0): the difficulty knob")
    ] = 1.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="processes rendering volumes")] = 2,
) -> None:
    """Chest CT phantoms for the ct pipeline, in CT-RATE's files; a larger --strength makes findings easier to see."""
    from finescale.pipelines import get_pipeline
    from finescale.synth.ct import generate_ct

    if not strength > 0:
        raise typer.BadParameter(f"must be above 0, got {strength}", param_hint="--strength")
    n = n or get_pipeline("ct").demo_size
    typer.echo(json.dumps(to_jsonable(generate_ct(out, n=n, seed=seed, strength=strength, workers=workers))))


def _synth_command(name: str) -> Callable[..., None]:
    def command(
        out: Annotated[Path, typer.Option("--out", help="output folder (train/val/test.json and the data)")],
        n: Annotated[int | None, typer.Option("--n", min=1, help="records (default: the demo's size)")] = None,
        seed: Annotated[int, typer.Option("--seed")] = 0,
    ) -> None:
        from finescale.pipelines import get_pipeline

        pipeline = get_pipeline(name)
        typer.echo(json.dumps(to_jsonable(pipeline.synth(out, n=n or pipeline.demo_size, seed=seed))))

    command.__doc__ = f"The {name} pipeline's synthetic data (its Pipeline entry's synth), default size."
    return command


def _add_synth_commands() -> None:
    # `synth <pipeline>` for every pipeline (the contract); `implants`, `puzzles` and `ct` keep their extra options
    explicit = {command.name for command in synth_app.registered_commands}
    for name in PIPELINE_NAMES:
        if name not in explicit:
            synth_app.command(name)(_synth_command(name))


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
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated pipelines")] = ",".join(DEMO_TASKS),
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


hpo_app = typer.Typer(
    help="Hyperparameter search with Optuna: `hpo <pipeline>` runs or resumes a study, `hpo analyze` reads one.",
    no_args_is_help=True,
)
app.add_typer(hpo_app, name="hpo")


@hpo_app.command("analyze")
def hpo_analyze(
    storage: Annotated[str, typer.Option("--storage", help="study database, e.g. sqlite:///runs/hpo/study.db")],
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="needed when the database holds several")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="folder for trials.csv, best_params.json, analysis.json, optimization_history.png, "
            "param_importances.png",
        ),
    ] = None,
) -> None:
    """Best trial, every trial and parameter importances of a stored study (SQLite file or PostgreSQL URL)."""
    from finescale.eval.hpo_report import analyze, markdown, write_analysis

    summary = analyze(storage, study_name)
    if out is not None:
        write_analysis(summary, out)
    typer.echo(markdown(summary))


def _hpo_command(name: str) -> Callable[..., None]:
    def command(
        out: Annotated[Path, typer.Option("--out", help="study folder (study.db, trials/, hpo.json, data/)")],
        n_trials: Annotated[
            int, typer.Option("--n-trials", "--trials", help="finished trials the study should hold")
        ] = 20,
        storage: Annotated[
            str | None, typer.Option("--storage", help="database URL (default: sqlite:///OUT/study.db)")
        ] = None,
        study_name: Annotated[str | None, typer.Option("--study-name", help="default: <pipeline>-<preset>")] = None,
        parallel: Annotated[int, typer.Option("--parallel", help="trial processes running at once")] = 1,
        preset: Annotated[str, typer.Option("--preset")] = "quick",
        data: Annotated[Path | None, typer.Option("--data", help="folder with train/val.json (default: synth)")] = None,
        n: Annotated[int | None, typer.Option("--n", help="images to synthesise when --data is not given")] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="override the preset's epochs")] = None,
        config: Annotated[
            Path | None, typer.Option("--config", help="YAML merged over the preset for every trial")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="sampler seed")] = 0,
    ) -> None:
        """Run (or resume) an Optuna study over the pipeline's search space, scored on the validation split."""
        from finescale.eval.hpo import run_hpo
        from finescale.eval.hpo_report import markdown
        from finescale.pipelines import get_pipeline

        summary = run_hpo(
            get_pipeline(name),
            out,
            n_trials=n_trials,
            storage=storage,
            study_name=study_name,
            parallel=parallel,
            preset=preset,
            data_dir=data,
            n=n,
            overrides={"epochs": epochs} if epochs else None,
            config_file=config,
            seed=seed,
        )
        typer.echo(markdown(summary))

    command.__doc__ = f"Hyperparameter search for the {name} pipeline (the search space of its Pipeline entry)."
    return command


def _add_hpo_commands() -> None:
    # every pipeline gets the verb; one without a search space says so in one line when run
    for name in PIPELINE_NAMES:
        hpo_app.command(name)(_hpo_command(name))


def _add_pipeline_apps() -> None:
    for name in PIPELINE_NAMES:
        module = importlib.import_module(f"finescale.pipelines.{name}.cli")
        app.add_typer(module.app, name=name)


def main() -> None:
    """The console entry point. The streams' rule, for every verb: stdout carries only the result (JSON lines, or
    the markdown table of bench and hpo), everything else (logs, progress bars, Lightning's model table, warnings)
    goes to stderr, so ``finescale ... | jq`` works. Exit status: 0 done; 1 some inputs of ``predict`` gave no
    answer (each named on stderr, the others answered); 2 a user error (one line ``error: ...``); 130 / 143
    training stopped by Ctrl-C / SIGTERM (last.ckpt kept for ``--resume``)."""
    rich.reconfigure(**stderr_options())  # rich's global console: progress bars of data preparation, the model table
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=stderr_console(), show_path=False)]
    )
    try:
        _add_pipeline_apps()
        _add_synth_commands()
        _add_hpo_commands()
        app()
    except FinescaleError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        print(f"error: {stop}", file=sys.stderr)
        sys.exit(stop.exit_status)


if __name__ == "__main__":
    main()
