"""Matplotlib figures for run reports: regression scatter, histograms, confusion matrices, grids (training curves
live in ``eval/curves.py``).

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas, so nothing here touches
``pyplot``'s global state or the user's interactive backend. Every plotting function writes one PNG and returns its
path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


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


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(max_cols, max(n, 1))
    return math.ceil(n / ncols), ncols


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
