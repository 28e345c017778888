"""The one builder of a pipeline's CLI: the shared verbs ``train``, ``eval`` and ``predict``, built from the
pipeline's config class and the options it declares. A pipeline's ``cli.py`` calls :func:`pipeline_app` and may add
verbs of its own to the returned app (``dims classify``). Nothing here imports torch: the pipeline itself is
imported only when a verb runs, so ``--help`` and argument errors stay fast.
"""

import json
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from finescale.cli_options import config_flags, merged, option_flags
from finescale.config import build_config
from finescale.errors import FinescaleError
from finescale.serialize import to_jsonable

Out = Annotated[Path, typer.Option("--out", help="run directory (config, checkpoints, logs, metrics, report)")]
Preset = Annotated[str, typer.Option("--preset", help="quick (CPU, minutes) or full (the seed's GPU settings)")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file merged over the preset")]
Resume = Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last.ckpt")]
Checkpoint = Annotated[
    list[Path] | None,
    typer.Option("--checkpoint", help="checkpoint file or run directory (repeat it for an ensemble where supported)"),
]
Device = Annotated[str, typer.Option("--device", help="where the model runs: auto (CUDA when present), cpu, cuda:0")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="inputs per model call")]
Workers = Annotated[int, typer.Option("--num-workers", min=0, help="DataLoader processes reading the inputs")]
EvalOut = Annotated[Path | None, typer.Option("--out", help="metrics file (default: RUN/metrics.json)")]


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value)))


def pipeline_app(
    name: str,
    config_class: type,
    summary: str,
    *,
    hidden_sections: Collection[str] = (),
    checkpoint_required: bool = True,
    ensembles: bool = False,
    inputs_help: str = "image files or folders of images",
    eval_options: Mapping[str, Any] | None = None,
    predictor_options: Mapping[str, Any] | None = None,
    predict_options: Mapping[str, Any] | None = None,
) -> typer.Typer:
    """The Typer app of pipeline ``name`` with its ``train``, ``eval`` and ``predict`` verbs.

    * ``train`` has one flag per field of ``config_class`` (except the ``hidden_sections``).
    * ``eval --checkpoint --json [--out] [--device]`` plus ``eval_options``, passed to ``Pipeline.evaluate``.
    * ``predict --checkpoint INPUT... [--batch-size] [--num-workers] [--device]`` plus ``predictor_options``
      (passed to ``Pipeline.predictor_class``) and ``predict_options`` (passed to each ``predict`` call); one JSON
      line per input on stdout, unreadable inputs reported on stderr (exit status 1 after the rest).
    * ``checkpoint_required=False``: a pipeline that also predicts without training (puzzle's classical matcher)
      gets ``task=None`` when no ``--checkpoint`` is given.
    * ``ensembles=True``: ``--checkpoint`` may repeat; ``evaluate`` gets the list, the predictor is loaded from the
      first with ``members=`` the others. Otherwise a second ``--checkpoint`` is refused.
    Options given as None (left out) are not passed on, so the pipeline's own defaults apply.
    """
    app = typer.Typer(help=summary, no_args_is_help=True)

    def need(checkpoints: list[Path] | None) -> list[Path]:
        checkpoints = list(checkpoints or [])
        if not checkpoints and checkpoint_required:
            raise FinescaleError("give --checkpoint (a run directory or a .ckpt file)")
        if len(checkpoints) > 1 and not ensembles:
            raise FinescaleError(f"the {name} pipeline takes one --checkpoint, got {len(checkpoints)}")
        return checkpoints

    @app.command("train")
    @config_flags(config_class, hidden=hidden_sections)
    def train(
        out: Out,
        preset: Preset = "quick",
        config: ConfigFile = None,
        resume: Resume = False,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """Train on --train-json, pick the best epoch on --val-json; writes everything into --out."""
        cfg = build_config(config_class, preset=preset, config_file=config, overrides=overrides)
        if cfg.train_json is None or cfg.val_json is None:
            raise FinescaleError("give --train-json and --val-json (or set them in --config)")
        from finescale.pipelines import get_pipeline

        echo_json(get_pipeline(name).train(cfg, out, resume=resume))

    @app.command("eval")
    @option_flags(into="options", **(eval_options or {}))
    def evaluate(
        json_path: Annotated[Path, typer.Option("--json", help="manifest to evaluate on")],
        checkpoint: Checkpoint = None,
        out: EvalOut = None,
        device: Device = "auto",
        options: dict[str, Any] | None = None,
    ) -> None:
        """Metrics of a checkpoint on a manifest, with plots and the HTML report."""
        given = need(checkpoint)
        from finescale.pipelines import get_pipeline

        target = given if ensembles else (given[0] if given else None)
        echo_json(get_pipeline(name).evaluate(target, json_path, out, device=device, **(options or {})))

    @app.command("predict")
    @option_flags(into="options", **merged(predictor_options, predict_options))
    def predict(
        inputs: Annotated[list[Path], typer.Argument(help=inputs_help)],
        checkpoint: Checkpoint = None,
        batch_size: BatchSize = 32,
        num_workers: Workers = 0,
        device: Device = "auto",
        options: dict[str, Any] | None = None,
    ) -> None:
        """One JSON line per input on stdout."""
        given = need(checkpoint)
        from finescale.engine.checkpoints import load_predictor
        from finescale.pipelines import get_pipeline

        options = options or {}
        build = {k: v for k, v in options.items() if k in (predictor_options or {})}
        build.update(batch_size=batch_size, num_workers=num_workers, device=device)
        call = {k: v for k, v in options.items() if k not in build}
        if given:
            if len(given) > 1:
                build["members"] = given[1:]
            predictor = load_predictor(given[0], pipeline=name, **build)
        else:
            predictor = get_pipeline(name).predictor_class(None, **build)
        answers = predictor.predict(inputs, progress=True, **call)
        failed = [a for a in answers if "error" in a]
        for answer in answers:
            if "error" in answer:
                print(f"error: {answer['error']}", file=sys.stderr)
            else:
                echo_json(answer)
        if failed:
            print(f"error: {len(failed)} of {len(answers)} inputs could not be read", file=sys.stderr)
            raise typer.Exit(1)

    return app
