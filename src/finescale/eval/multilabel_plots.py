"""Report figures for multi-label probabilities: ROC curves per label (small multiples + the macro view) and a
reliability (calibration) diagram, pooled or per label, before and after calibration.

Same conventions as :mod:`finescale.eval.plots`: Agg figures (no pyplot state), one PNG per call, path returned.
Panels are sized for 18 labels (5 columns) with fonts of at least 8 pt, so the PNG reads at default zoom.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from finescale.eval.calibration import expected_calibration_error, reliability_curve
from finescale.eval.multilabel import as_numpy, binary_auroc, roc_curve
from finescale.eval.plots import _grid, _new_figure, _save

PANEL_COLUMNS = 5
PANEL_SIZE = (2.9, 2.7)  # inches per small multiple: 5 columns -> 14.5 in wide, 4 rows for 18 labels + macro
FONT = 8
TITLE_WIDTH = 28  # characters per title line: "Coronary artery wall calcification" breaks in two
FPR_GRID = np.linspace(0.0, 1.0, 201)
BEFORE, AFTER = "tab:gray", "tab:blue"


def _panel_grid(n_panels: int, title: str) -> tuple[Figure, list[Axes]]:
    nrows, ncols = _grid(n_panels, PANEL_COLUMNS)
    fig = _new_figure(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + 0.5)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return fig, axes[:n_panels]


def _unit_square(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)


def _title(name: str, detail: str) -> str:
    return textwrap.fill(name, TITLE_WIDTH) + "\n" + detail


def _macro_roc(probs: np.ndarray, labels: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Mean TPR over the labels with both classes, on a common FPR grid (the macro-averaged ROC curve)."""
    tprs = [np.interp(FPR_GRID, *roc_curve(probs[:, j], labels[:, j])) for j in np.flatnonzero(defined)]
    return np.mean(tprs, axis=0)


def plot_roc_curves(
    probs: Any, labels: Any, names: Sequence[str], out_path: str | Path, *, title: str = "ROC curves"
) -> Path:
    """One ROC panel per label (AUROC and positives in its title) and a first panel with the macro-averaged curve
    over every label's faint curve; probs and 0/1 labels (N, L), numpy or torch. Labels with one class say so."""
    p, y = as_numpy(probs), as_numpy(labels)
    auroc = binary_auroc(p, y)
    defined = np.isfinite(auroc)
    fig, axes = _panel_grid(len(names) + 1, title)

    macro_ax, label_axes = axes[0], axes[1:]
    for j in np.flatnonzero(defined):
        macro_ax.plot(*roc_curve(p[:, j], y[:, j]), color="0.75", lw=0.6)
    if defined.any():
        macro_ax.plot(FPR_GRID, _macro_roc(p, y, defined), color=AFTER, lw=1.8)
        macro_detail = f"macro AUROC {np.mean(auroc[defined]):.3f} ({int(defined.sum())} labels)"
    else:
        macro_detail = "no label has both classes"
    macro_ax.set_title(_title("macro average", macro_detail), fontsize=FONT + 1, fontweight="bold")
    _unit_square(macro_ax, "false positive rate", "true positive rate")

    for j, (ax, name) in enumerate(zip(label_axes, names, strict=True)):
        n_pos = int(y[:, j].sum())
        if defined[j]:
            ax.plot(*roc_curve(p[:, j], y[:, j]), color=AFTER, lw=1.4)
            detail = f"AUROC {auroc[j]:.3f}  ({n_pos}+ / {len(y)})"
        else:
            detail = f"AUROC undefined ({n_pos}+ / {len(y)})"
        ax.set_title(_title(name, detail), fontsize=FONT + 1)
        _unit_square(ax, "FPR", "TPR")
    fig.tight_layout()
    return _save(fig, out_path)


def _reliability_panel(
    ax: Axes, labels: np.ndarray, curves: dict[str, tuple[np.ndarray, str]], bins: int
) -> list[float]:
    """Reliability curves of each ``name -> (probs, colour)`` against ``labels``; returns each curve's ECE."""
    eces = []
    for name, (probs, colour) in curves.items():
        mean_prob, frac_pos, counts = reliability_curve(probs, labels, bins=bins)
        filled = counts > 0
        eces.append(expected_calibration_error(probs, labels, bins=bins))
        ax.plot(mean_prob[filled], frac_pos[filled], marker="o", ms=3, lw=1.4, color=colour, label=name)
    _unit_square(ax, "mean predicted probability", "fraction positive")
    ax.axvline(0.5, color="tab:red", lw=0.8, ls=":", label="threshold 0.5")  # VLM3D's fixed threshold
    return eces


def _ece_text(eces: list[float]) -> str:
    return "ECE " + " \u2192 ".join(f"{e:.3f}" for e in eces)  # before -> after


def _count_histogram(ax: Axes, curves: dict[str, tuple[np.ndarray, str]], bins: int) -> None:
    """Samples per probability bin of each curve (log scale: most probabilities sit near 0 on rare labels)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, (probs, colour) in curves.items():
        ax.hist(probs.ravel(), bins=edges, histtype="step", lw=1.4, color=colour, label=name)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted probability", fontsize=FONT)
    ax.set_ylabel("count", fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)


def plot_reliability(
    probs: Any,
    labels: Any,
    out_path: str | Path,
    *,
    calibrated: Any | None = None,
    names: Sequence[str] | None = None,
    bins: int = 10,
    title: str = "reliability",
) -> Path:
    """Reliability diagram of probs (N, L) against 0/1 labels (N, L): pooled over every label when ``names`` is None,
    else one panel per label. With ``calibrated`` (N, L) both curves are drawn ("before" grey, "after" blue)."""
    y = as_numpy(labels)
    raw = as_numpy(probs)
    curves_of = {"before": raw} if calibrated is not None else {"model": raw}
    if calibrated is not None:
        curves_of["after"] = as_numpy(calibrated)
    colours = {"before": BEFORE, "after": AFTER, "model": AFTER}

    if names is None:
        fig = _new_figure(5.0, 6.6)
        ax, hist_ax = fig.subplots(2, 1, height_ratios=[3.2, 1])
        curves = {k: (v, colours[k]) for k, v in curves_of.items()}
        eces = _reliability_panel(ax, y, curves, bins)
        ax.legend(fontsize=FONT, loc="upper left")
        _count_histogram(hist_ax, curves, bins)
        ax.set_title(f"{title}\npooled over {y.shape[1]} labels (n={y.size}), {_ece_text(eces)}", fontsize=FONT + 2)
        fig.tight_layout()
    else:
        fig, axes = _panel_grid(len(names), title)
        for j, (ax, name) in enumerate(zip(axes, names, strict=True)):
            curves = {k: (v[:, j], colours[k]) for k, v in curves_of.items()}
            eces = _reliability_panel(ax, y[:, j], curves, bins)
            ax.set_title(_title(name, f"{int(y[:, j].sum())}+ / {len(y)}, {_ece_text(eces)}"), fontsize=FONT + 1)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", fontsize=FONT + 1, ncols=len(curves) + 1)
    return _save(fig, out_path)
