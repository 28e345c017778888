"""Trainer factory: one place that turns a config and a run directory into a Lightning Trainer."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from finescale.config import TrainerConfig
from finescale.engine.callbacks import SaveLastOnException
from finescale.engine.rundir import BEST, LAST

__all__ = ["BEST", "LAST", "build_trainer", "quiet_lightning", "seed_everything"]


def quiet_lightning() -> None:
    """Silence Lightning's hints that are noise for small CPU runs (worker counts, TPU/IPU availability)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")  # our run directory holds config.yaml first
    # frozen parts (defects' EMA teacher, dims' frozen classifiers) are in eval mode on purpose
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")
    # Lightning gives its package logger a handler of its own ("INFO: ..."); where the application has configured
    # the root logger (the CLI has), every Lightning line then came out twice. One handler: the application's.
    if logging.getLogger().handlers:
        for handler in list(logging.getLogger("lightning").handlers):
            logging.getLogger("lightning").removeHandler(handler)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    L.seed_everything(seed, workers=True, verbose=False)
    if deterministic:
        # warn_only: a few CUDA kernels have no deterministic version; CPU runs are exactly reproducible.
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ... but without its debugging aid of filling every new tensor with NaN before a kernel overwrites it: that
        # cost 5-10 % of a CPU training step (puzzle quick preset) and changes no result
        torch.utils.deterministic.fill_uninitialized_memory = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def build_trainer(
    cfg: TrainerConfig,
    run_dir: Path,
    *,
    monitor: str,
    mode: str,
    callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """A Trainer that writes best.ckpt (by ``monitor``), last.ckpt (every epoch, every N steps and on a crash),
    TensorBoard and CSV logs into ``run_dir``."""
    quiet_lightning()
    run_dir.mkdir(parents=True, exist_ok=True)
    best = ModelCheckpoint(
        dirpath=run_dir,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=run_dir,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
        enable_version_counter=False,
    )
    all_callbacks: list[Callback] = [
        best,
        last,
        SaveLastOnException(run_dir / LAST),
        LearningRateMonitor(logging_interval="step"),
        *callbacks,
    ]
    if cfg.progress:
        # stderr: stdout carries only the command's result. The bar reconfigures rich's global console with these
        # arguments, which is also where Lightning's model table goes.
        all_callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,  # iteration-based training (defects): whichever limit comes first
        # every N steps, counted across epochs (None: Lightning's once per epoch)
        val_check_interval=cfg.val_every_n_steps or None,
        check_val_every_n_epoch=None if cfg.val_every_n_steps else 1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,  # Lightning parses "auto", "2", "0,1", "-1"
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        deterministic="warn" if cfg.deterministic else False,
        gradient_clip_val=cfg.grad_clip or None,
        log_every_n_steps=cfg.log_every_n_steps,
        limit_train_batches=cfg.limit_train_batches,  # an int counts batches, a float is a fraction (config.py)
        limit_val_batches=cfg.limit_val_batches,
        logger=[
            TensorBoardLogger(save_dir=run_dir, name="logs", version="tb", default_hp_metric=False),
            CSVLogger(save_dir=run_dir, name="logs", version="csv"),
        ],
        callbacks=all_callbacks,
        enable_progress_bar=cfg.progress,
        enable_model_summary=cfg.progress,
    )
