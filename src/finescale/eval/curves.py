"""Training curves of a run (the CSV log Lightning writes): losses of training and validation together per epoch,
validation metrics, learning rate. Each function writes PNGs through the helpers of ``eval/plots.py``."""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from finescale.eval.plots import _grid, _new_figure, _save

LOSS_PNG = "curves_losses.png"
VAL_PNG = "curves_val_metrics.png"
LR_PNG = "curves_lr.png"

# Metric-name tokens that mark a loss term even when the name does not contain "loss" (e.g. ``train/reg_aux``).
LOSS_TOKENS = frozenset({"loss", "cls", "reg", "aux", "ce", "bce", "nll", "dice", "focal", "kl", "kld", "l1", "mse"})


class CsvLog(dict[str, list[tuple[float, float]]]):
    """Metric name -> ``(step, value)`` pairs in file order, plus the epoch of each point in :attr:`epochs`."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: dict[str, list[float | None]] = {}
        self._step_epoch: list[tuple[float, float]] = []

    def epoch_at(self, step: float) -> float | None:
        """Epoch of the latest row at or before ``step`` that had its epoch cell filled."""
        if not self._step_epoch:
            return None
        i = bisect_right(self._step_epoch, (step, math.inf))
        return self._step_epoch[max(i - 1, 0)][1]

    def by_epoch(self, key: str) -> list[tuple[float, float]]:
        """``(epoch, value)`` pairs of ``key``; the epoch comes from the same row, else from the step."""
        out = []
        for (step, value), epoch in zip(self[key], self.epochs[key], strict=True):
            if epoch is None:
                epoch = self.epoch_at(step)
            if epoch is not None:
                out.append((epoch, value))
        return out

    @property
    def has_epochs(self) -> bool:
        return bool(self._step_epoch)


def _to_float(cell: str | None) -> float | None:
    if cell is None or not cell.strip():
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_csv_log(path: str | Path) -> CsvLog:
    """Parse a Lightning ``CSVLogger`` ``metrics.csv`` (wide, sparse rows); empty or non-numeric cells are skipped.

    Rows without a ``step`` use their row index as step. The result maps each metric column to its ``(step, value)``
    pairs; ``result.by_epoch(key)`` gives ``(epoch, value)`` pairs instead.
    """
    log = CsvLog()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        keys = [k for k in (reader.fieldnames or []) if k and k not in ("epoch", "step")]
        for i, row in enumerate(reader):
            step = _to_float(row.get("step"))
            step = float(i) if step is None else step
            epoch = _to_float(row.get("epoch"))
            if epoch is not None:
                log._step_epoch.append((step, epoch))
            for key in keys:
                value = _to_float(row.get(key))
                if value is None:
                    continue
                log.setdefault(key, []).append((step, value))
                log.epochs.setdefault(key, []).append(epoch)
    log._step_epoch.sort()
    return log


def _is_loss(key: str) -> bool:
    name = key.split("/", 1)[-1].lower()
    for suffix in ("_step", "_epoch"):
        name = name.removesuffix(suffix)
    return "loss" in name or any(token in LOSS_TOKENS for token in name.replace("-", "_").split("_"))


def _is_loss_of(log: CsvLog, key: str) -> bool:
    """Whether ``key`` is a training or validation loss: its name looks like one, or training logged it (a task's
    training step logs its losses only, whatever they are called: the puzzle's ``pos``, ``box``, ``rot``)."""
    split = key.split("/", 1)[0]
    if split not in ("train", "val"):
        return False
    name = _loss_name(key)
    trained = any(k in log for k in (f"train/{name}", f"train/{name}_step", f"train/{name}_epoch"))
    return _is_loss(key) or trained


def _loss_name(key: str) -> str:
    """``train/cls_epoch`` -> ``cls``: the loss a logged key measures, whatever split and reduction."""
    name = key.split("/", 1)[-1]
    for suffix in ("_step", "_epoch"):
        name = name.removesuffix(suffix)
    return name


def epoch_axis(log: CsvLog) -> Callable[[Sequence[float]], np.ndarray] | None:
    """Steps -> epochs trained, fractional: the last step of epoch ``e`` maps to ``e + 1``, the steps within an epoch
    linearly in between (Lightning logs epoch-end values at that last step). None when the log has no epochs."""
    ends: dict[float, float] = {}
    for step, epoch in log._step_epoch:
        ends[epoch] = max(ends.get(epoch, step), step)
    knots = [(-1.0, 0.0)]
    for epoch in sorted(ends):
        if ends[epoch] > knots[-1][0]:
            knots.append((ends[epoch], epoch + 1.0))
    if len(knots) < 2:
        return None
    steps, epochs = (np.asarray(v, dtype=float) for v in zip(*knots, strict=True))
    return lambda xs: np.interp(np.asarray(xs, dtype=float), steps, epochs)


@dataclass
class Curve:
    """One line of the loss figure: ``panel`` (``loss`` or ``loss terms``), the loss ``name``, its ``split``
    (train/val), ``kind`` (``step``: logged every few steps, ``epoch``: one value per epoch) and the points, x in
    epochs trained (or steps when the log has no epochs)."""

    panel: str
    name: str
    split: str
    kind: str
    xs: np.ndarray
    ys: np.ndarray


def loss_curves(log: CsvLog) -> list[Curve]:
    """Training and validation losses of a CSV log on one x axis (epochs trained): per loss name, the training
    loss per step (``train/<name>_step``, or ``train/<name>`` of older logs) and per epoch (``train/<name>_epoch``)
    and the validation loss per epoch (``val/<name>``)."""
    to_epoch = epoch_axis(log)
    names = list(dict.fromkeys(_loss_name(k) for k in log if _is_loss_of(log, k)))
    names.sort(key=lambda name: name != "loss")  # the total first: its panel leads
    curves = []
    for name in names:
        panel = "loss" if name == "loss" or "loss" not in names else "loss terms"
        sources = [
            ("train", "step", f"train/{name}_step"),
            ("train", "step", f"train/{name}"),
            ("train", "epoch", f"train/{name}_epoch"),
            ("val", "epoch", f"val/{name}"),
        ]
        for split, kind, key in sources:
            if key not in log:
                continue
            if to_epoch is None:
                xs, ys = (np.asarray(v, dtype=float) for v in zip(*log[key], strict=True))
            elif kind == "epoch":
                xs, ys = (np.asarray(v, dtype=float) for v in zip(*log.by_epoch(key), strict=True))
                xs = xs + 1.0  # the value of epoch e is known once e + 1 epochs are trained
            else:
                steps, ys = (np.asarray(v, dtype=float) for v in zip(*log[key], strict=True))
                xs = to_epoch(steps)
                if f"train/{name}_epoch" in log and len(ys) <= len(log[f"train/{name}_epoch"]):
                    continue  # no more points than the epoch means: those say it all
            curves.append(Curve(panel, name, split, kind, xs, ys))
    return curves


SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange"}


def epoch_limits(ax: Any, last: float, *, pad_left: bool) -> None:
    """x from 0 (or half an epoch before the first) to just past the last epoch, whole epochs as ticks: one epoch
    is a readable axis too (not -0.045 .. 0.045 around a single point)."""
    last = max(1.0, float(last))
    ax.set_xlim(0.5 if pad_left else 0.0, last + max(0.25 if pad_left else 0.15, 0.03 * last))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def _plot_losses(curves: list[Curve], out_path: Path, *, by_epoch: bool) -> Path:
    panels = list(dict.fromkeys(c.panel for c in curves))
    fig = _new_figure(5.4 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        mine = [c for c in curves if c.panel == panel]
        names = list(dict.fromkeys(c.name for c in mine))
        colours = dict(zip(names, [f"C{i}" for i in range(len(names))], strict=True))
        for c in mine:
            colour = SPLIT_COLOURS[c.split] if panel == "loss" else colours[c.name]
            label = c.split if panel == "loss" else f"{c.split} {c.name}"
            dashed = "--" if panel != "loss" and c.split == "val" else "-"
            if c.kind == "step":  # faint; named in the legend of the total only, to keep the terms' legend short
                step_label = f"{label} (per step)" if panel == "loss" else "_nolegend_"
                ax.plot(c.xs, c.ys, lw=0.9, alpha=0.35, color=colour, label=step_label)
            else:
                many = len(c.ys) > 40
                marker = None if many else ("o" if c.split == "train" else "s")
                ax.plot(c.xs, c.ys, lw=1.8, ls=dashed, marker=marker, ms=5, color=colour, label=label)
        if by_epoch:
            epoch_limits(ax, max(float(c.xs.max()) for c in mine), pad_left=False)
        else:
            ax.set_xlabel("step")
        ax.set_title("training and validation loss" if panel == "loss" else "loss terms", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9 if panel == "loss" else 8, ncols=1 if panel == "loss" else 2)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_training_curves(csv_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Plot losses (train and validation together, per epoch), validation metrics and learning rates from a
    CSVLogger file; returns the PNGs."""
    log = read_csv_log(csv_path)
    out_dir = Path(out_dir)
    paths: list[Path] = []

    curves = loss_curves(log)
    if curves:
        paths.append(_plot_losses(curves, out_dir / LOSS_PNG, by_epoch=epoch_axis(log) is not None))

    val_keys = [k for k in log if k.startswith("val/") and not _is_loss_of(log, k)]
    if val_keys:
        nrows, ncols = _grid(len(val_keys))
        fig = _new_figure(3.6 * ncols, 3.0 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, key in zip(axes, val_keys, strict=False):
            per_epoch = log.by_epoch(key)
            xs, ys = zip(*(per_epoch or log[key]), strict=True)
            if per_epoch:
                xs = [x + 1 for x in xs]  # epochs trained, as on the loss figure
            ax.plot(xs, ys, lw=1.6, marker="o" if len(ys) <= 50 else None, ms=5, color="tab:orange")
            ax.set_title(key.split("/", 1)[1], fontsize=10)
            if per_epoch:
                epoch_limits(ax, max(xs), pad_left=True)
            else:
                ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            best = min(ys) if any(t in key for t in ("mae", "rmse", "err", "mse")) else None
            if best is not None:
                ax.axhline(best, color="0.5", lw=0.8, ls="--")
                ax.text(0.99, 0.97, f"best {best:.4g}", transform=ax.transAxes, ha="right", va="top", fontsize=9)
        for ax in axes[len(val_keys) :]:
            ax.set_visible(False)
        fig.suptitle("validation metrics", fontsize=11)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / VAL_PNG))

    lr_keys = [k for k in log if k.lower().startswith("lr")]
    if lr_keys:
        fig = _new_figure(5.2, 3.4)
        ax = fig.subplots()
        values = []
        for key in lr_keys:
            xs, ys = zip(*log[key], strict=True)
            values.extend(ys)
            ax.plot(xs, ys, lw=1.4, marker="o" if len(ys) <= 20 else None, ms=4, label=key)
        if len({x for key in lr_keys for x, _ in log[key]}) == 1:  # one step: a readable axis around it
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if min(values) > 0 and max(values) / min(values) > 50:
            ax.set_yscale("log")
        ax.set_title("learning rate")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / LR_PNG))
    return paths
