"""Per-label probability calibration, fitted on the validation split, for VLM3D's fixed 0.5 threshold: temperature
scaling (one scale per label, Guo et al. 2017), Platt scaling (``a z + b`` per label, a > 0; Platt 1999), both on the
model's logits, or ``threshold``: the logit shift that puts each label's validation-F1-best threshold at 0.5. A
temperature cannot move a decision at 0.5 (``z / T >= 0`` exactly when ``z >= 0``): it calibrates the probabilities
only. None of the three changes a label's ranking (AUROC).

Both fits minimise the binary cross-entropy on the validation logits with L-BFGS (strong-Wolfe line search; the L
labels are independent, so one joint problem is L small ones). The targets are Platt's smoothed ones,
``(n_pos + 1) / (n_pos + 2)`` for positives and ``1 / (n_neg + 2)`` for negatives: on a label the model separates
perfectly the plain BCE optimum is an infinite scale, which saturates float32 sigmoids to ties at 0 and 1 and so
destroys the ranking (AUROC). A label with a single class in the validation split gives no information about its
scale and keeps the identity (temperature 1, a = 1, b = 0).

Parameters are plain float32 CPU tensors, (L,) for temperatures and thresholds, (L, 2) for Platt's (a, b): they go
into a Lightning checkpoint as they are and load with ``torch.load(..., weights_only=True)``. :func:`apply_calibration`
also accepts them as nested lists (e.g. read back from JSON).

Also here: the reliability curve and the expected calibration error (ECE) that the report and bench show.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from finescale.eval.multilabel import as_numpy

CalibrationKind = Literal["none", "temperature", "platt", "threshold"]
KINDS: tuple[str, ...] = ("none", "temperature", "platt", "threshold")

# Beyond these, a temperature only reflects a degenerate split; the clamp keeps sigmoids away from float32 saturation.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def _as_fit_inputs(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) logits and 0/1 labels as float64 CPU tensors: the fit is tiny, and float64 makes it exact."""
    z = torch.as_tensor(as_numpy(logits))
    y = torch.as_tensor(as_numpy(labels))
    if z.ndim != 2 or y.shape != z.shape:
        raise ValueError(f"calibration needs logits and labels of the same shape (N, L); got {z.shape}, {y.shape}")
    return z, y


def platt_targets(labels: torch.Tensor) -> torch.Tensor:
    """Platt's smoothed targets per label (N, L): positives ``(n_pos+1)/(n_pos+2)``, negatives ``1/(n_neg+2)``."""
    n_pos = labels.sum(dim=0)
    n_neg = labels.shape[0] - n_pos
    return torch.where(labels > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def _has_both_classes(labels: torch.Tensor) -> torch.Tensor:
    n_pos = labels.sum(dim=0)
    return (n_pos > 0) & (n_pos < labels.shape[0])


def _minimise_bce(params: torch.Tensor, logits_fn: Any, targets: torch.Tensor, max_iter: int) -> None:
    """Fit ``params`` in place so that ``sigmoid(logits_fn(params))`` minimises the per-label-mean BCE, summed."""
    optimizer = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits_fn(params), targets, reduction="none").mean(dim=0).sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_temperature(logits: Any, labels: Any, *, max_iter: int = 200) -> torch.Tensor:
    """Per-label temperatures T (L,) minimising the BCE of ``sigmoid(logits / T)`` on (N, L) validation logits and 0/1
    labels. T > 1 softens an overconfident label. Clamped to [0.05, 20]; 1 for a label with a single class."""
    z, y = _as_fit_inputs(logits, labels)
    log_t = torch.zeros(z.shape[1], dtype=z.dtype, requires_grad=True)  # log T keeps T positive, unconstrained
    _minimise_bce(log_t, lambda p: z * torch.exp(-p), platt_targets(y), max_iter)
    t = log_t.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)
    return torch.where(_has_both_classes(y), t, torch.ones_like(t)).float()


def fit_platt(logits: Any, labels: Any, *, max_iter: int = 200) -> torch.Tensor:
    """Per-label Platt parameters (L, 2), columns (a, b), minimising the BCE of ``sigmoid(a * logits + b)`` on (N, L)
    validation logits and 0/1 labels; (1, 0) for a label with a single class. The slope is kept positive (fitted as
    log a): a calibration must not reverse a label's ranking, which an unconstrained fit does on a small validation
    split where the model happens to rank a label backwards (measured: ``ct`` bench, README)."""
    z, y = _as_fit_inputs(logits, labels)
    log_a_b = torch.zeros(z.shape[1], 2, dtype=z.dtype, requires_grad=True)  # the identity: a = 1, b = 0
    _minimise_bce(log_a_b, lambda p: p[:, 0].exp() * z + p[:, 1], platt_targets(y), max_iter)
    fitted = log_a_b.detach()
    ab = torch.stack([fitted[:, 0].exp().clamp(1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE), fitted[:, 1]], dim=1)
    identity = torch.tensor([1.0, 0.0], dtype=z.dtype).expand_as(ab)
    return torch.where(_has_both_classes(y)[:, None], ab, identity).float()


def fit_f1_threshold(logits: Any, labels: Any) -> torch.Tensor:
    """Per-label logit thresholds t (L,) maximising F1 of ``logits >= t`` on (N, L) validation logits and 0/1 labels;
    0 for a label with a single class. Calibrating with ``z - t`` puts that threshold at VLM3D's fixed 0.5 without
    changing any ranking; the probabilities are then shifted, no longer calibrated. t lies midway between the lowest
    logit called positive and the next one below it (ties in F1: the threshold nearest 0, the model's own)."""
    z, y = _as_fit_inputs(logits, labels)
    thresholds = torch.zeros(z.shape[1], dtype=torch.float64)
    for k in torch.nonzero(_has_both_classes(y)).flatten().tolist():
        order = torch.argsort(z[:, k], descending=True, stable=True)
        scores, hits = z[order, k], y[order, k]
        tp = torch.cumsum(hits, 0)  # calling the top i+1 positive
        f1 = 2 * tp / (torch.arange(1, len(scores) + 1, dtype=tp.dtype) + hits.sum())
        distinct = torch.cat([scores[1:] < scores[:-1], torch.tensor([True])])  # a cut must not split ties
        below = torch.cat([scores[1:], scores[-1:] - 1.0])
        cuts = (scores + below) / 2
        best = f1[distinct].max()
        candidates = torch.nonzero(distinct & (f1 >= best - 1e-12)).flatten()
        thresholds[k] = cuts[candidates[torch.argmin(cuts[candidates].abs())]]
    return thresholds.float()


def fit_calibration(logits: Any, labels: Any, kind: CalibrationKind) -> torch.Tensor | None:
    """The parameters of ``kind`` fitted on (N, L) logits and labels; None for ``"none"``."""
    if kind == "temperature":
        return fit_temperature(logits, labels)
    if kind == "platt":
        return fit_platt(logits, labels)
    if kind == "threshold":
        return fit_f1_threshold(logits, labels)
    if kind == "none":
        return None
    raise ValueError(f"unknown calibration {kind!r}; choose from {KINDS}")


def calibrate_logits(logits: Any, params: Any, kind: CalibrationKind) -> torch.Tensor:
    """Calibrated logits (N, L) (or any (..., L)): ``z / T`` for temperature, ``a z + b`` for Platt, ``z`` for none.

    ``logits`` a tensor (or numpy array); ``params`` as returned by the fits, or the same as nested lists; moved to
    ``logits``' device and dtype.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}; choose from {KINDS}")
    logits = torch.as_tensor(logits)
    if kind == "none":
        return logits
    if params is None:
        raise ValueError(f"{kind} calibration needs its fitted parameters")
    p = torch.as_tensor(params, dtype=logits.dtype, device=logits.device)
    if kind == "threshold":
        return logits - p
    return logits / p if kind == "temperature" else p[..., 0] * logits + p[..., 1]


def apply_calibration(logits: Any, params: Any, kind: CalibrationKind) -> torch.Tensor:
    """Calibrated probabilities ``sigmoid(calibrate_logits(logits, params, kind))``, same shape as ``logits``."""
    return torch.sigmoid(calibrate_logits(logits, params, kind))


def reliability_curve(probs: Any, labels: Any, *, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled reliability curve over equal-width probability bins: probs and 0/1 labels of any (same) shape ->
    (mean predicted probability, fraction of positives, count), each (bins,); NaN where a bin is empty."""
    p, y = as_numpy(probs).ravel(), as_numpy(labels).ravel()
    index = np.clip((p * bins).astype(int), 0, bins - 1)  # p = 1 goes in the last bin
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=p, minlength=bins) / counts
        frac_pos = np.bincount(index, weights=y, minlength=bins) / counts
    return mean_prob, frac_pos, counts


def expected_calibration_error(probs: Any, labels: Any, *, bins: int = 15) -> float:
    """ECE: count-weighted mean |fraction of positives - mean probability| over equal-width bins, pooled over every
    label and sample (0 = perfectly calibrated)."""
    mean_prob, frac_pos, counts = reliability_curve(probs, labels, bins=bins)
    filled = counts > 0
    return float((counts[filled] * np.abs(frac_pos[filled] - mean_prob[filled])).sum() / counts.sum())
