"""Multi-label scores as the VLM3D challenge (Task 2, multi-abnormality classification on CT-RATE) reports them.

The challenge scores each of the 18 abnormality labels on its own, then macro-averages (plain mean over labels):

* binarisation at a **fixed** threshold: a label is predicted present iff its probability is ``> 0.5`` (equivalently
  logit ``> 0``, the convention of scikit-learn's ``predict`` and torchmetrics' ``threshold=0.5``). No per-label
  threshold is tuned: calibration (:mod:`finescale.eval.calibration`) is what makes 0.5 a good operating point.
* per label, from the counts TP, FP, FN, TN over the N volumes, with scikit-learn's ``zero_division=0``:

  - precision = TP / (TP + FP), **0** when nothing is predicted positive;
  - recall = TP / (TP + FN), **0** when the label has no positive volume;
  - F1 = 2 TP / (2 TP + FP + FN) (the harmonic mean of the two above), **0** when TP + FP + FN = 0;
  - accuracy = (TP + TN) / N, the per-label accuracy. Note that scikit-learn's ``accuracy_score`` on a 2-D array is
    the *subset* accuracy (all 18 labels right at once); VLM3D's accuracy is the per-label one, macro-averaged;
  - AUROC from the probabilities (threshold-free), the Mann-Whitney statistic with tied scores counted half, equal to
    ``roc_auc_score``. It is undefined (NaN) when only one class is present; such labels are left out of the macro
    AUROC and counted in ``<prefix>n_auroc_undefined``.

* macro = unweighted mean of the per-label values (all L labels for precision, recall, F1 and accuracy, where the
  zero_division rule gives every label a value; defined labels only for AUROC; NaN when none is defined).

Keys are flat and JSON-safe: ``{prefix}macro_{metric}``, ``{prefix}{metric}_{label slug}`` (slug = lower-case label
name with every run of other characters turned into ``_``: ``ct_auroc_lung_nodule``,
``ct_f1_coronary_artery_wall_calcification``), ``{prefix}positives_{slug}`` (positive volumes of the label),
``{prefix}n`` (volumes) and ``{prefix}n_auroc_undefined``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from finescale.errors import FinescaleError

THRESHOLD = 0.5
METRICS = ("auroc", "f1", "precision", "recall", "accuracy")


def label_slug(name: str) -> str:
    """Key-safe form of a label name: ``"Lung nodule"`` -> ``"lung_nodule"``, ``"Mosaic attenuation pattern"`` ->
    ``"mosaic_attenuation_pattern"``."""
    slug = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    if not slug:
        raise ValueError(f"label name {name!r} has no letter or digit to build a key from")
    return slug


def label_slugs(names: Sequence[str]) -> list[str]:
    """Slugs of all labels; two names that collapse to the same slug would overwrite each other's keys, so raise."""
    slugs = [label_slug(n) for n in names]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"label names give duplicate keys: {slugs}")
    return slugs


def as_numpy(array: Any) -> np.ndarray:
    """A numpy float64 copy of a numpy array, torch tensor (any device/dtype) or nested list."""
    if hasattr(array, "detach"):  # torch.Tensor without importing torch here
        array = array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def _check_inputs(probs: np.ndarray, labels: np.ndarray, n_names: int) -> None:
    if probs.ndim != 2 or labels.shape != probs.shape:
        raise FinescaleError(
            f"scores need probabilities and labels of the same shape (N, L); got {probs.shape} and {labels.shape}"
        )
    if probs.shape[1] != n_names:
        raise FinescaleError(f"{probs.shape[1]} label columns but {n_names} label names")
    if probs.shape[0] == 0:
        raise FinescaleError("nothing to score: no volume")
    if not np.isfinite(probs).all() or probs.min() < 0.0 or probs.max() > 1.0:
        raise FinescaleError("probabilities must be finite numbers in [0, 1] (logits? apply a sigmoid first)")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise FinescaleError("labels must be 0 or 1")


def binary_auroc(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-column AUROC of ``probs`` (N, L) against 0/1 ``labels`` (N, L) -> (L,), NaN where a column has one class.

    Mann-Whitney U / (n_pos * n_neg) with average ranks, so ties count one half, exactly like ``roc_auc_score``.
    """
    ranks = rankdata(probs, axis=0)  # (N, L), average ranks for ties
    n_pos = labels.sum(axis=0)
    n_neg = labels.shape[0] - n_pos
    u = (ranks * labels).sum(axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_label_scores(probs: Any, labels: Any) -> dict[str, np.ndarray]:
    """VLM3D's per-label scores: ``{"auroc", "f1", "precision", "recall", "accuracy"}`` -> (L,) arrays, plus
    ``"positives"`` (L,). ``probs`` and ``labels`` are (N, L); see the module docstring for the definitions."""
    probs, labels = as_numpy(probs), as_numpy(labels)
    _check_inputs(probs, labels, probs.shape[1] if probs.ndim == 2 else -1)
    predicted = probs > THRESHOLD
    positive = labels == 1.0
    tp = (predicted & positive).sum(axis=0).astype(np.float64)
    fp = (predicted & ~positive).sum(axis=0).astype(np.float64)
    fn = (~predicted & positive).sum(axis=0).astype(np.float64)
    n = probs.shape[0]
    return {
        "auroc": binary_auroc(probs, labels),
        "f1": _safe_ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _safe_ratio(tp, tp + fp),
        "recall": _safe_ratio(tp, tp + fn),
        "accuracy": (n - fp - fn) / n,
        "positives": positive.sum(axis=0),
    }


def vlm3d_scores(probs: Any, labels: Any, names: Sequence[str], *, prefix: str = "ct_") -> dict[str, float]:
    """Score probabilities (N, L) against 0/1 labels (N, L) the way VLM3D does; ``names`` gives the L label names.

    Returns flat keys: ``{prefix}macro_{auroc,f1,precision,recall,accuracy}``, the same per label as
    ``{prefix}{metric}_{slug}``, ``{prefix}positives_{slug}``, ``{prefix}n`` and ``{prefix}n_auroc_undefined``.
    Undefined per-label AUROCs are NaN (written as ``null`` by :func:`finescale.serialize.write_json`). Raises
    :class:`FinescaleError` on mismatched shapes, probabilities outside [0, 1] or labels other than 0/1.
    """
    probs, labels = as_numpy(probs), as_numpy(labels)
    _check_inputs(probs, labels, len(names))
    slugs = label_slugs(names)
    scores = per_label_scores(probs, labels)
    auroc_defined = np.isfinite(scores["auroc"])

    out: dict[str, float] = {}
    for metric in METRICS:
        values = scores[metric][auroc_defined] if metric == "auroc" else scores[metric]
        out[f"{prefix}macro_{metric}"] = float(values.mean()) if values.size else float("nan")
    for metric in METRICS:
        for slug, value in zip(slugs, scores[metric], strict=True):
            out[f"{prefix}{metric}_{slug}"] = float(value)
    for slug, count in zip(slugs, scores["positives"], strict=True):
        out[f"{prefix}positives_{slug}"] = int(count)
    out[f"{prefix}n"] = int(probs.shape[0])
    out[f"{prefix}n_auroc_undefined"] = int((~auroc_defined).sum())
    return out


def roc_curve(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of one label: scores (N,) and 0/1 labels (N,) -> (fpr, tpr), each (K,) from (0, 0) to (1, 1),
    one point per distinct score (ties move diagonally). Needs both classes present."""
    scores, truth = as_numpy(probs).ravel(), as_numpy(labels).ravel()
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(truth)[last_of_each_score]
    fps = (last_of_each_score + 1) - tps
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("a ROC curve needs both positive and negative samples")
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
