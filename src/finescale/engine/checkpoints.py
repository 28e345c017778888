"""Reading checkpoints safely (``weights_only=True``) and rebuilding a pipeline's task or predictor from one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from finescale.engine.rundir import resolve_checkpoint, wrong_pipeline
from finescale.engine.trainer import quiet_lightning
from finescale.errors import FinescaleError

__all__ = ["checkpoint_config", "load_predictor", "load_task", "read_checkpoint", "resolve_checkpoint"]


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
        raise FinescaleError(wrong_pipeline(resolve_checkpoint(path), name, pipeline))
    quiet_lightning()  # the task modules import Lightning: its log lines go through the application's handler
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
