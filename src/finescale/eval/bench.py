"""``finescale bench``: every variant of a pipeline trained on the same data, epochs and seeds; mean ± std.

Each (variant, seed) run lives in ``out/runs/<variant>/seed<k>``; a run whose test metrics exist is reused, so a
bench that was interrupted continues where it stopped when the same command runs again. A bench of a few variants
into a folder that holds a table already updates those rows and keeps the others (the table is the folder's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from finescale.config import build_config, save_config
from finescale.engine.rundir import run_config
from finescale.errors import FinescaleError
from finescale.eval import plots
from finescale.pipelines import Pipeline, prefix_metrics
from finescale.serialize import read_json, write_json

log = logging.getLogger("finescale")
TEST_METRICS = "test_metrics.json"
BENCH_REQUEST = "bench_request.yaml"  # the config a bench run was asked to train, compared before it is reused
RUN_COLUMNS = ("train_seconds", "peak_memory_mb")  # of the training, beside the test metrics of every row


def ensure_data(pipeline: Pipeline, data_dir: Path, *, n: int, seed: int = 0) -> Path:
    """Synthesise the pipeline's data into ``data_dir`` unless it is already there."""
    if not (data_dir / "test.json").exists():
        pipeline.synth(data_dir, n=n, seed=seed)
    return data_dir


def run_variant(
    pipeline: Pipeline,
    run_dir: Path,
    *,
    preset: str,
    overrides: Mapping[str, Any],
    test_json: Path,
    config_file: Path | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train and test one configuration in ``run_dir``; reuses a finished run and resumes a crashed one.
    ``callbacks`` are extra Lightning callbacks for the training (e.g. an HPO pruner)."""
    done = run_dir / TEST_METRICS
    cfg = build_config(pipeline.config_class, preset=preset, config_file=config_file, overrides=overrides)
    requested = cfg.model_dump(mode="json")
    if done.exists():
        asked = run_dir / BENCH_REQUEST  # what the bench asked for, before training filled anything in
        saved = yaml.safe_load(asked.read_text()) if asked.exists() else run_config(run_dir) or {}
        changed = config_differences(saved, requested, filled_in=not asked.exists())
        if changed:  # e.g. a preset's defaults changed since: its old numbers would pass for the new config's
            raise FinescaleError(
                f"{run_dir} was trained with another config ({', '.join(changed[:4])}): "
                "delete that folder or bench into another --out"
            )
        # keys written before every metric carried the pipeline's name are read under today's
        return prefix_metrics(pipeline.name, read_json(done))
    resume = (run_dir / "last.ckpt").exists()
    save_config(cfg, run_dir / BENCH_REQUEST)
    start = time.perf_counter()
    summary = pipeline.train(cfg, run_dir, resume=resume, callbacks=callbacks)
    seconds = time.perf_counter() - start
    # also kept in the run's metrics.json and report; with the pipeline's extra evaluations of the data folder
    options = pipeline.bench_eval_options(Path(test_json).parent) if pipeline.bench_eval_options else {}
    metrics = pipeline.evaluate(run_dir / "best.ckpt", test_json, **options)
    metrics = {
        **metrics,
        "train_seconds": summary.get("train_seconds", seconds),
        "peak_memory_mb": summary.get("peak_memory_mb"),
    }
    write_json(done, metrics)
    return metrics


def config_differences(
    saved: Mapping[str, Any], requested: Mapping[str, Any], prefix: str = "", *, filled_in: bool = False
) -> list[str]:
    """Dotted keys whose value differs between a finished run's config and the config the bench would train now.
    Not compared: keys one side lacks (a field added or removed since) and two paths to the same file. With
    ``filled_in`` (``saved`` is the run's config.yaml, written after training filled in what was left unset, e.g.
    ct's store path or dims' company list: runs benched before :data:`BENCH_REQUEST` existed) requested values that
    are None or empty are not compared either."""
    changed = []
    for key in saved.keys() & requested.keys():
        old, new = saved[key], requested[key]
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changed += config_differences(old, new, f"{prefix}{key}.", filled_in=filled_in)
        elif filled_in and new in (None, [], {}):
            continue
        elif old != new and not _same_path(old, new):
            changed.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return sorted(changed)


def _same_path(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve()


def summarise(name: str, seeds: Sequence[int], results: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict:
    row: dict[str, Any] = {"variant": name, "seeds": list(seeds)}
    for key in (*metrics, *RUN_COLUMNS):
        values = np.array([r[key] for r in results if r.get(key) is not None], dtype=float)
        row[f"{key}_mean"] = float(values.mean()) if values.size else None
        row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return row


def run_bench(
    pipeline: Pipeline,
    out: Path,
    *,
    preset: str = "quick",
    seeds: Sequence[int] = (0, 1),
    variants: Sequence[str] | None = None,
    data_dir: Path | None = None,
    n: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
) -> dict[str, Any]:
    # absolute: the paths a run records are compared when it is reused, maybe from another working directory
    out = Path(out).resolve()
    data_dir = ensure_data(pipeline, Path(data_dir or out / "data").resolve(), n=n or pipeline.demo_size)
    base_cfg = build_config(pipeline.config_class, preset=preset, config_file=config_file, overrides=overrides or {})
    table = pipeline.bench_variants(base_cfg)
    chosen = list(variants) if variants else list(table)
    unknown = [v for v in chosen if v not in table]
    if unknown:
        raise FinescaleError(f"unknown bench variant(s) {', '.join(unknown)}; choose from: {', '.join(table)}")
    earlier = earlier_rows(out, pipeline.name, preset)
    shared = {seed: _shared_parts(pipeline, out, seed, data_dir, preset, overrides, config_file) for seed in seeds}
    rows = []
    run_dirs: dict[str, list[Path]] = {}
    for name in chosen:
        results = []
        for seed in seeds:
            log.info("bench %s: %s, seed %d", pipeline.name, name, seed)
            run_overrides = {**_seed_overrides(pipeline, overrides, seed, data_dir), **shared[seed], **table[name]}
            run_dir = out / "runs" / name.replace("+", "plus_") / f"seed{seed}"
            run_dirs.setdefault(name, []).append(run_dir)
            results.append(
                run_variant(
                    pipeline,
                    run_dir,
                    preset=preset,
                    overrides=run_overrides,
                    test_json=data_dir / "test.json",
                    config_file=config_file,
                )
            )
        rows.append(summarise(name, seeds, results, pipeline.bench_metrics))
        write_bench(out, pipeline, preset, merge_rows(earlier, rows))  # after every variant: survives a crash
    if pipeline.bench_combined is not None:
        for name, results in pipeline.bench_combined(run_dirs, data_dir, out / "combined").items():
            per_seed = len(results) == len(seeds) > 1
            rows.append(summarise(name, list(seeds) if per_seed else [], results, pipeline.bench_metrics))
            write_bench(out, pipeline, preset, merge_rows(earlier, rows))
    if pipeline.extra_baselines is not None:
        extra = pipeline.extra_baselines(data_dir / "train.json", data_dir / "test.json", base_cfg)
        for name, metrics in extra.items():
            rows.append(summarise(name, [], [metrics], pipeline.bench_metrics))
    return write_bench(out, pipeline, preset, merge_rows(earlier, rows))


def earlier_rows(out: Path, pipeline_name: str, preset: str) -> list[dict[str, Any]]:
    """The rows of the table already in ``out`` (none if there is none, or it is another pipeline's or preset's)."""
    path = out / "bench.json"
    if not path.exists():
        return []
    table = read_json(path)
    return table["rows"] if (table.get("pipeline"), table.get("preset")) == (pipeline_name, preset) else []


def merge_rows(earlier: Sequence[Mapping[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``earlier`` with each row of the same variant replaced by the one measured now, in place; new variants last."""
    fresh = {row["variant"]: row for row in new}
    kept = [fresh.pop(row["variant"], row) for row in earlier]
    return kept + list(fresh.values())


def data_overrides(pipeline: Pipeline, data_dir: Path) -> dict[str, Any]:
    """The manifests of a data folder as config overrides: train/val, and what else the pipeline reads from it."""
    extra = pipeline.data_overrides(data_dir) if pipeline.data_overrides is not None else {}
    return {"train_json": str(data_dir / "train.json"), "val_json": str(data_dir / "val.json"), **extra}


def _seed_overrides(
    pipeline: Pipeline, overrides: Mapping[str, Any] | None, seed: int, data_dir: Path
) -> dict[str, Any]:
    return {
        **(overrides or {}),
        "seed": seed,
        "progress": False,
        **data_overrides(pipeline, data_dir),
    }


def _shared_parts(
    pipeline: Pipeline,
    out: Path,
    seed: int,
    data_dir: Path,
    preset: str,
    overrides: Mapping[str, Any] | None,
    config_file: Path | None,
) -> dict[str, Any]:
    """Overrides pointing at what every variant of ``seed`` shares (see ``Pipeline.bench_shared``); {} if nothing."""
    if pipeline.bench_shared is None:
        return {}
    cfg = build_config(
        pipeline.config_class,
        preset=preset,
        config_file=config_file,
        overrides=_seed_overrides(pipeline, overrides, seed, data_dir),
    )
    return pipeline.bench_shared(cfg, out / "shared" / f"seed{seed}")


def write_bench(out: Path, pipeline: Pipeline, preset: str, rows: list[dict]) -> dict[str, Any]:
    result = {"pipeline": pipeline.name, "preset": preset, "rows": rows}
    write_json(out / "bench.json", result)
    (out / "bench.md").write_text(bench_markdown(result, pipeline.bench_metrics))
    main = pipeline.bench_metrics[0]
    done = [r for r in rows if r.get(f"{main}_mean") is not None]
    if done:
        plots.plot_bar_with_errors(
            [r["variant"] for r in done],
            [r[f"{main}_mean"] for r in done],
            [r[f"{main}_std"] for r in done],
            out / "bench.png",
            title=f"{pipeline.name} bench ({preset})",
            ylabel=main,
        )
    return result


def bench_markdown(result: Mapping[str, Any], metrics: Sequence[str]) -> str:
    header = ["variant", "seeds", *metrics, "train s", "peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["variant"], str(len(row["seeds"])) if row["seeds"] else "-"]
        for key in (*metrics, *RUN_COLUMNS):
            mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
            cells.append("-" if mean is None else f"{mean:.3f} ± {std:.3f}" if row["seeds"] else f"{mean:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    title = f"Bench of `{result['pipeline']}`, preset `{result['preset']}` (mean ± std over seeds)\n\n"
    return title + "\n".join(lines) + "\n"
