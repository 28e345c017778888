"""``finescale demo``: for each pipeline, synthesise a small dataset, train the quick preset, evaluate on the test
split; then one index report over all of them. Finished parts are reused and a crashed run resumes, so running
the demo again after an interruption continues instead of starting over."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from finescale.eval.bench import data_overrides, ensure_data, run_variant
from finescale.eval.report import write_index
from finescale.pipelines import PIPELINE_NAMES, get_pipeline
from finescale.serialize import write_json


def _section_file(config_file: Path | None, pipeline: str, folder: Path) -> Path | None:
    """The YAML to merge over ``pipeline``'s quick preset. A demo config may hold one section per pipeline
    (``length: {...}``, ``dims: {...}``); then that section is written to ``folder/<pipeline>.yaml``."""
    if config_file is None:
        return None
    content = yaml.safe_load(Path(config_file).read_text()) or {}
    if not (isinstance(content, dict) and content and set(content) <= set(PIPELINE_NAMES)):
        return config_file  # a plain config: the same for every pipeline
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pipeline}.yaml"
    path.write_text(yaml.safe_dump(content.get(pipeline) or {}, sort_keys=False))
    return path


def run_demo(
    out: Path,
    *,
    tasks: Sequence[str],
    n: int | None = None,
    epochs: int | None = None,
    config_file: Path | None = None,
) -> dict[str, Any]:
    out = Path(out)
    start = time.perf_counter()
    summary: dict[str, Any] = {}
    runs: dict[str, Path] = {}
    per_task: dict[str, dict] = {}
    for name in tasks:
        pipeline = get_pipeline(name.strip())
        data_dir = ensure_data(pipeline, out / "data" / pipeline.name, n=n or pipeline.demo_size)
        overrides: dict[str, Any] = {
            **pipeline.demo_overrides,
            **data_overrides(pipeline, data_dir),
            **({"epochs": epochs} if epochs else {}),
        }
        run_dir = out / pipeline.name
        metrics = run_variant(
            pipeline,
            run_dir,
            preset="quick",
            overrides=overrides,
            test_json=data_dir / "test.json",
            config_file=_section_file(config_file, pipeline.name, out / "configs"),
        )
        runs[pipeline.name] = run_dir
        per_task[pipeline.name] = {k: metrics[k] for k in (*pipeline.bench_metrics, "train_seconds") if k in metrics}
        summary.update({k: metrics.get(k) for k in pipeline.bench_metrics})  # pipeline metrics carry its name
        summary[f"{pipeline.name}_n_test"] = metrics.get(f"{pipeline.name}_n")
        summary[f"{pipeline.name}_train_seconds"] = metrics.get("train_seconds")
    summary["demo_seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "metrics.json", summary)
    write_index(out, title="finescale demo", runs=runs, summary=per_task)
    return summary
