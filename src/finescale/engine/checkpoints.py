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


def load_task(path: str | Path) -> Any:
    """Rebuild the pipeline's LightningModule from a checkpoint, in eval mode on the CPU."""
    from finescale.pipelines import get_pipeline

    ckpt = read_checkpoint(path)
    config = checkpoint_config(ckpt)
    pipeline = get_pipeline(config["pipeline"])
    if pipeline.upgrade_config is not None:
        config = pipeline.upgrade_config(config)
    task = pipeline.task_class(config)
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()


def load_predictor(path: str | Path) -> Any:
    from finescale.pipelines import get_pipeline

    task = load_task(path)
    return get_pipeline(task.cfg.pipeline).predictor_class(task)
