"""The run directory's names and the checks on it that need no torch: which checkpoint a path means, whether a
training may start or resume in a folder, which pipeline wrote a run. The CLI calls these before its heavy imports,
so that a mistake in a path is reported in about a second; the engine uses the same functions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from finescale.errors import FinescaleError

BEST = "best.ckpt"
LAST = "last.ckpt"
CONFIG = "config.yaml"
METRICS = "metrics.json"
log = logging.getLogger("finescale")

# What a training writes before its first checkpoint (Lightning's loggers, under the names engine/trainer.py gives
# them): the leftovers of an attempt that failed or was killed before that, removed when the next one starts afresh.
# Only these names are touched, never other files of a folder given as --out.
_LOG_LEFTOVERS = (("logs/tb", "events.out.tfevents.*"), ("logs/tb", "hparams.yaml"), ("logs/csv", "*"))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its best.ckpt, else its last.ckpt)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).exists():
                return path / name
        raise FinescaleError(f"run directory {path} holds no {BEST} or {LAST}")
    if not path.exists():
        raise FinescaleError(f"checkpoint {path} does not exist")
    return path


def holds_checkpoint(run_dir: Path) -> bool:
    return (run_dir / LAST).exists() or (run_dir / BEST).exists()


def check_run_dir(run_dir: Path, *, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to overwrite a finished or crashed run. A
    folder that holds no checkpoint (an attempt that failed or was killed before its first one) is reused: the log
    files that attempt left are removed, so the new run's logs are its own."""
    run_dir = Path(run_dir)
    last = run_dir / LAST
    if resume:
        if not last.exists():
            raise FinescaleError(f"--resume given but {last} does not exist")
        return last
    if holds_checkpoint(run_dir):
        raise FinescaleError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if not first_process():  # the other processes of a DDP run start while the first one writes its logs
        return None
    stale = [p for folder, pattern in _LOG_LEFTOVERS for p in (run_dir / folder).glob(pattern) if p.is_file()]
    if stale:
        log.info(
            "%s holds no checkpoint: starting afresh there (removing %d log files of an earlier attempt)",
            run_dir,
            len(stale),
        )
        for p in stale:
            p.unlink()
    return None


def first_process() -> bool:
    """Whether this is the first process of a (possibly distributed) run, read from the variables that launchers
    set (Lightning's own, torchrun, SLURM), as Lightning reads its rank, without importing it."""
    for key in ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "0").strip() not in ("", "0"):
            return False
    return True


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.yaml as a dict, or None when there is none (or it is not a mapping)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_pipeline(checkpoint: str | Path) -> str | None:
    """The pipeline that wrote ``checkpoint`` (a file or a run directory) according to the config.yaml beside it,
    or None when there is none; the checkpoint itself (``checkpoints.load_task``) has the last word."""
    config = run_config(resolve_checkpoint(checkpoint).parent)
    name = config.get("pipeline") if config else None
    return name if isinstance(name, str) else None


def require_pipeline(checkpoint: str | Path, pipeline: str, *, flag: str = "") -> None:
    """Refuse in one line, before anything heavy is imported, a checkpoint that the run's config.yaml says another
    pipeline wrote. ``flag``: how the message names the option (``--company-checkpoint``)."""
    found = checkpoint_pipeline(checkpoint)
    if found is not None and found != pipeline:
        raise FinescaleError(wrong_pipeline(resolve_checkpoint(checkpoint), found, pipeline, flag=flag))


def wrong_pipeline(path: Path, found: str, expected: str, *, flag: str = "") -> str:
    where = f"{flag} {path}" if flag else str(path)
    return f"{where} is a {found} checkpoint, not a {expected} one: give a checkpoint of a {expected} run"
