"""Matplotlib figures for run reports: training curves, regression scatter, histograms, confusion matrices, grids.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas, so nothing here touches
``pyplot``'s global state or the user's interactive backend. Every plotting function writes one PNG and returns its
path.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110

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


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    fig.clear()
    return out


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


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(max_cols, max(n, 1))
    return math.ceil(n / ncols), ncols


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


def _finite(*arrays: Any) -> list[np.ndarray]:
    arrs = [np.asarray(a, dtype=float).ravel() for a in arrays]
    mask = np.ones(arrs[0].shape, dtype=bool)
    for a in arrs:
        mask &= np.isfinite(a)
    return [a[mask] for a in arrs]


def plot_pred_vs_true(
    y_true: Sequence[float] | np.ndarray,
    y_pred: Sequence[float] | np.ndarray,
    out_path: str | Path,
    *,
    title: str,
    unit: str = "mm",
) -> Path:
    """Scatter of predictions against targets with the identity line; the MAE goes in the title."""
    t, p = _finite(y_true, y_pred)
    fig = _new_figure(5.0, 5.0)
    ax = fig.subplots()
    if t.size:
        mae = float(np.mean(np.abs(p - t)))
        ax.scatter(t, p, s=10 if t.size > 200 else 18, alpha=0.35 if t.size > 500 else 0.7, edgecolors="none")
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo) or 1.0
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"{title}\nMAE {mae:.4g} {unit}  (n={t.size})", fontsize=10)
    else:
        ax.set_title(f"{title}\n(no data)", fontsize=10)
    ax.set_xlabel(f"true [{unit}]")
    ax.set_ylabel(f"predicted [{unit}]")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_error_histogram(
    errors: Sequence[float] | np.ndarray, out_path: str | Path, *, title: str, unit: str = "mm"
) -> Path:
    """Histogram of (signed) errors with lines at zero and at the mean."""
    (e,) = _finite(errors)
    fig = _new_figure(5.2, 3.6)
    ax = fig.subplots()
    if e.size:
        bins = min(60, max(5, len(np.histogram_bin_edges(e, bins="auto")) - 1))
        ax.hist(e, bins=bins, color="tab:blue", alpha=0.8, edgecolor="white", linewidth=0.4)
        ax.axvline(0.0, color="0.3", lw=1)
        ax.axvline(float(e.mean()), color="tab:red", lw=1.2, ls="--", label=f"mean {e.mean():.3g}")
        ax.legend(fontsize=8)
        ax.set_title(
            f"{title}\nmean {e.mean():.3g} ± {e.std():.3g} {unit}, |e| {np.abs(e).mean():.3g}  (n={e.size})",
            fontsize=10,
        )
    else:
        ax.set_title(f"{title}\n(no data)", fontsize=10)
    ax.set_xlabel(f"error [{unit}]")
    ax.set_ylabel("count")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, out_path)


def plot_confusion_matrix(
    cm: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str],
    out_path: str | Path,
    *,
    title: str,
    normalize: bool = True,
) -> Path:
    """Confusion matrix (rows = true class); row-normalised colours if ``normalize``; counts shown up to 12 classes."""
    counts = np.asarray(cm, dtype=float)
    n = counts.shape[0]
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    labels = [str(x) for x in labels] if len(labels) == n else [str(i) for i in range(n)]
    if normalize:
        sums = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    else:
        shown = counts
    # cells of 0.3 in hold an 8-pt label (12 px at the report's DPI): labels stay readable up to about 23 classes at
    # the report's full width (10.8 in)
    size = max(4.5, 0.3 * n + 2.8)
    fig = _new_figure(size + 1.0, size)
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(float(shown.max()), 1.0)
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    fontsize = 9 if n <= 12 else 8
    turned = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if n > 4 else {}
    ax.set_xticks(range(n), labels, fontsize=fontsize, **turned)
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                text = f"{int(counts[i, j])}" if counts[i, j] == int(counts[i, j]) else f"{counts[i, j]:.3g}"
                if normalize:
                    text = f"{shown[i, j]:.0%}\n{text}"
                color = "white" if shown[i, j] > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    total = counts.sum()
    acc = float(np.trace(counts) / total) if total > 0 else float("nan")
    ax.set_title(f"{title}\naccuracy {acc:.2%}  (n={int(total)})", fontsize=11)
    ax.set_xlabel("predicted", fontsize=10)
    ax.set_ylabel("true", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_bar_with_errors(
    names: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float | None] | None,
    out_path: str | Path,
    *,
    title: str,
    ylabel: str,
) -> Path:
    """Horizontal bars (first name on top) with ± std error bars; ``ylabel`` labels the value axis."""
    names = [str(x) for x in names]
    m = np.asarray(means, dtype=float)
    s = np.asarray([0.0 if v is None else v for v in (stds if stds is not None else [0.0] * len(m))], dtype=float)
    s = np.where(np.isfinite(s), s, 0.0)
    fig = _new_figure(6.4, max(2.4, 0.42 * len(names) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, m, xerr=s, color="tab:blue", alpha=0.8, capsize=3, error_kw={"lw": 1, "ecolor": "0.25"})
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()
    for yi, mi, si in zip(y, m, s, strict=True):
        if np.isfinite(mi):
            label = f"{mi:.4g}" + (f" ± {si:.2g}" if si > 0 else "")
            ax.text(mi + si, yi, f"  {label}", va="center", fontsize=8)
    ax.margins(x=0.25)
    ax.set_xlabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, out_path)


def _displayable(image: np.ndarray) -> tuple[np.ndarray, bool]:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)  # CHW -> HWC
        if img.shape[-1] == 1:
            img = img[..., 0]
    gray = img.ndim == 2
    if not gray and (img.dtype.kind == "f" or img.dtype.kind in "iu" and img.dtype != np.uint8):
        img = img.astype(float)
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
        if lo < 0.0 or hi > 1.0:
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, gray


def plot_image_grid(
    images: Sequence[np.ndarray], titles: Sequence[str], out_path: str | Path, *, ncols: int = 4
) -> Path:
    """Grid of grayscale (HxW) or RGB (HxWx3, or CxHxW) images with a title each."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = _new_figure(3.0 * ncols, 3.1 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        img, gray = _displayable(images[i])
        ax.imshow(img, cmap="gray" if gray else None, interpolation="nearest")
        if i < len(titles):
            ax.set_title(str(titles[i]), fontsize=8)
    if n == 0:
        axes[0].text(0.5, 0.5, "no images", ha="center", va="center")
    fig.tight_layout()
    return _save(fig, out_path)
