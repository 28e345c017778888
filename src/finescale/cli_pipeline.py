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
from finescale.config import RunConfig, build_config, leaf_fields
from finescale.data.manifest import check_manifest_file
from finescale.engine.rundir import CONFIG, check_run_dir, require_pipeline, resolve_checkpoint
from finescale.errors import FinescaleError
from finescale.serialize import to_jsonable

Out = Annotated[Path, typer.Option("--out", help="run directory (config, checkpoints, logs, metrics, report)")]
Preset = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="quick (CPU, minutes; the default) or full (the seed's GPU settings); with --resume: the run's",
        show_default=False,
    ),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file merged over the preset")]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="continue the run in --out from its last.ckpt, configured by its config.yaml (--config and flags on top)",
    ),
]
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


def train_config(
    config_class: type[RunConfig],
    out: Path,
    *,
    preset: str | None,
    config: Path | None,
    resume: bool,
    overrides: dict[str, Any] | None,
) -> Any:
    """The config of a training verb, with every check that needs no model done before anything heavy is imported
    (so a mistake is reported in about a second): the config's values, the run directory (``--resume`` needs its
    last.ckpt; a fresh run refuses a folder holding a checkpoint) and the manifests (they exist; JSON ones parse).
    With ``--resume`` the run's own config.yaml is the base: the run continues as it was configured, ``--config``
    and the flags given on top of it."""
    check_run_dir(out, resume=resume)
    base = out / CONFIG if resume and (out / CONFIG).is_file() else None
    cfg = build_config(config_class, preset=preset, config_file=config, overrides=overrides, base=base)
    if cfg.train_json is None or cfg.val_json is None:
        raise FinescaleError("give --train-json and --val-json (or set them in --config)")
    for manifest in (cfg.train_json, cfg.val_json):
        check_manifest_file(manifest)
    # checkpoints a training starts from (dims' --company-checkpoint): of this pipeline
    for path, _, _ in leaf_fields(config_class):
        value = cfg
        for part in path:
            value = getattr(value, part)
        if path[-1].endswith("_checkpoint") and value is not None:
            require_pipeline(value, cfg.pipeline, flag="--" + path[-1].replace("_", "-"))
    return cfg


def announce(checkpoints: list[Path], pipeline: str) -> None:
    """Before the heavy imports: each checkpoint exists, and the run's config.yaml does not name another pipeline
    (refused in one line); then one line on stderr saying what is being loaded, which can take a while."""
    for checkpoint in checkpoints:
        require_pipeline(checkpoint, pipeline)
    for checkpoint in checkpoints:  # a plain line, as the error lines are: a log line would wrap a long path
        print(f"loading {resolve_checkpoint(checkpoint)} ({pipeline})...", file=sys.stderr)


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
        announce(checkpoints, name)
        return checkpoints

    @app.command("train")
    @config_flags(config_class, hidden=hidden_sections)
    def train(
        out: Out,
        preset: Preset = None,
        config: ConfigFile = None,
        resume: Resume = False,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """Train on --train-json, pick the best epoch on --val-json; writes everything into --out."""
        cfg = train_config(config_class, out, preset=preset, config=config, resume=resume, overrides=overrides)
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
        check_manifest_file(json_path)
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
            if len(answers) > 1:  # one input: its own error line says it all
                print(f"error: {len(failed)} of {len(answers)} inputs gave no answer", file=sys.stderr)
            raise typer.Exit(1)

    return app
