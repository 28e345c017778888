"""Reading checkpoints safely (``weights_only=True``) and rebuilding a pipeline's task or predictor from one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from finescale.engine.trainer import BEST, LAST
from finescale.errors import FinescaleError


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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or a foreign pickle that weights_only refuses
        raise FinescaleError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None


def checkpoint_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    try:
        return ckpt["hyper_parameters"]["config"]
    except KeyError:
        raise FinescaleError("checkpoint holds no finescale config (was it written by finescale?)") from None


def load_task(path: str | Path, *, pipeline: str | None = None) -> Any:
    """Rebuild the pipeline's LightningModule from a checkpoint, in eval mode on the CPU. The model is built without
    its pretrained or ``--weights`` files (the checkpoint holds every weight), so a run predicts without them.
    ``pipeline``: the pipeline the caller expects; a checkpoint of another one is refused in one line."""
    from finescale.pipelines import get_pipeline

    ckpt = read_checkpoint(path)
    config = checkpoint_config(ckpt)
    name = config.get("pipeline")
    if pipeline is not None and name != pipeline:
        raise FinescaleError(f"{resolve_checkpoint(path)} is a {name} checkpoint, not a {pipeline} one")
    entry = get_pipeline(name)
    if entry.upgrade_config is not None:
        config = entry.upgrade_config(config)
    task = entry.task_class(config, load_weights=False)
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()


def load_predictor(path: str | Path, *, pipeline: str | None = None, **options: Any) -> Any:
    """The predictor of the run at ``path`` (``Pipeline.predictor_class(task, **options)``)."""
    from finescale.pipelines import get_pipeline

    task = load_task(path, pipeline=pipeline)
    return get_pipeline(task.cfg.pipeline).predictor_class(task, **options)
