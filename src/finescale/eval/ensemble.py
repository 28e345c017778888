"""Combining several models' (members') multi-label probabilities, and aggregating test-time augmentations.

``combine(probs, kind)`` takes the members' probabilities (M, N, L) and returns the ensemble's (N, L) probabilities
and a per-sample, per-label uncertainty (N, L), always a standard deviation in probability units:

* ``mean``: the plain average; uncertainty = the spread of the members (std over M, ddof=0).
* ``adaptive``: a weighted average whose weights differ per member, sample and label. By default a member's weight is
  its confidence ``|2p - 1|`` (distance from the 0.5 decision boundary; + 1e-3 so that members all at 0.5 share
  equally), the seed's "confidence-weighted" ensemble. Confidence rewards overconfident members, so when each member's
  validation AUROC per label (M, L) is given, the weight is its skill above chance ``max(AUROC - 0.5, 0) + 1e-3``
  instead, one weight per member and label (use it when validation scores exist). Uncertainty = the weighted std.
* ``bayesian``: MC-dropout samples of every member pooled into one predictive distribution. Either ``probs`` holds
  the samples themselves, (M, S, N, L) (S dropout passes per member, from :func:`finescale.eval.uncertainty.
  mc_dropout`), or (M, N, L) members' means with ``stds`` (M, N, L) their MC std (ddof=0, S equal across members),
  which gives the same pooled moments by the law of total variance. Result: the pooled mean and the pooled std.
  :func:`predictive_entropy` and :func:`mutual_information` turn them into entropy-based uncertainties.

``tta_aggregate(probs (T, N, L), kind)``: ``mean`` averages probabilities; ``logit_mean`` averages logits (the
geometric mean of the odds), so a single augmented view at 0.999 does not drag the average as far as in probability
space and the result stays on the logit scale that calibration is fitted on.

Everything works on torch tensors on their own device (numpy arrays are converted) and returns float tensors.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

EnsembleKind = Literal["mean", "adaptive", "bayesian"]
TtaKind = Literal["mean", "logit_mean"]
ENSEMBLE_KINDS: tuple[str, ...] = ("mean", "adaptive", "bayesian")
TTA_KINDS: tuple[str, ...] = ("mean", "logit_mean")

WEIGHT_FLOOR = 1e-3  # keeps every weight positive: no division by zero, no member silenced completely
PROB_EPS = 1e-6  # clip before a logit or a log: float32 resolves 1 - 1e-6 but not 1 - 1e-8


def _as_float(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.float()


def _weighted_mean_std(probs: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (ddof=0) over dim 0 with non-negative ``weights`` broadcastable to ``probs``."""
    weights = weights / weights.sum(dim=0, keepdim=True)
    mean = (weights * probs).sum(dim=0)
    var = (weights * (probs - mean) ** 2).sum(dim=0)
    return mean, var.clamp_min(0).sqrt()


def confidence_weights(probs: torch.Tensor) -> torch.Tensor:
    """Per member, sample and label (M, N, L): confidence ``|2p - 1| + 1e-3`` (not normalised)."""
    return (2 * probs - 1).abs() + WEIGHT_FLOOR


def skill_weights(member_auroc: Any) -> torch.Tensor:
    """Per member and label (M, 1, L), from validation AUROCs (M, L): ``max(AUROC - 0.5, 0) + 1e-3``; NaN (a label
    with one class in validation) counts as chance."""
    auroc = _as_float(member_auroc)
    skill = torch.nan_to_num(auroc - 0.5, nan=0.0).clamp_min(0) + WEIGHT_FLOOR
    return skill[:, None, :]


def _pooled_mc(probs: torch.Tensor, stds: Any | None) -> tuple[torch.Tensor, torch.Tensor]:
    if probs.ndim == 4:  # (M, S, N, L) raw samples
        if stds is not None:
            raise ValueError("bayesian: pass either MC samples (M, S, N, L) or member means (M, N, L) with stds")
        samples = probs.flatten(0, 1)
        return samples.mean(dim=0), samples.std(dim=0, correction=0)
    if stds is None:
        raise ValueError("bayesian needs MC-dropout samples (M, S, N, L) or member means (M, N, L) with their stds")
    stds = _as_float(stds).to(probs)
    if stds.shape != probs.shape:
        raise ValueError(f"stds {tuple(stds.shape)} must match probs {tuple(probs.shape)}")
    mean = probs.mean(dim=0)
    # Law of total variance over the mixture of members: E[var_m] + Var[mean_m].
    var = (stds**2).mean(dim=0) + probs.var(dim=0, correction=0)
    return mean, var.sqrt()


def combine(
    probs: Any,
    kind: EnsembleKind = "mean",
    *,
    stds: Any | None = None,
    member_auroc: Any | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble members' probabilities (M, N, L) (or MC samples (M, S, N, L) for ``bayesian``) into
    (probabilities (N, L), uncertainty (N, L)); see the module docstring for each ``kind``.

    ``stds`` (M, N, L): members' MC-dropout stds, ``bayesian`` only. ``member_auroc`` (M, L): members' validation
    AUROC per label, ``adaptive`` only (weights by skill instead of confidence).
    """
    if kind not in ENSEMBLE_KINDS:
        raise ValueError(f"unknown ensemble {kind!r}; choose from {ENSEMBLE_KINDS}")
    if stds is not None and kind != "bayesian":
        raise ValueError("stds are only used by the bayesian ensemble")
    if member_auroc is not None and kind != "adaptive":
        raise ValueError("member_auroc is only used by the adaptive ensemble")
    p = _as_float(probs)
    if kind == "bayesian":
        return _pooled_mc(p, stds)
    if p.ndim != 3:
        raise ValueError(f"{kind} ensemble needs probabilities (M, N, L), got shape {tuple(p.shape)}")
    if kind == "mean":
        return p.mean(dim=0), p.std(dim=0, correction=0)
    if member_auroc is None:
        return _weighted_mean_std(p, confidence_weights(p))
    weights = skill_weights(member_auroc).to(p)
    if weights.shape != (p.shape[0], 1, p.shape[2]):
        raise ValueError(f"member_auroc must be (M, L) = {(p.shape[0], p.shape[2])}, got {tuple(weights.shape[::2])}")
    return _weighted_mean_std(p, weights)


def tta_aggregate(probs: Any, kind: TtaKind = "mean") -> torch.Tensor:
    """Aggregate T test-time-augmented views' probabilities (T, N, L) into (N, L): ``mean`` of the probabilities or
    ``sigmoid(mean of the logits)`` for ``logit_mean`` (probabilities clipped to [1e-6, 1 - 1e-6] first)."""
    p = _as_float(probs)
    if kind == "mean":
        return p.mean(dim=0)
    if kind == "logit_mean":
        return torch.sigmoid(torch.logit(p, eps=PROB_EPS).mean(dim=0))
    raise ValueError(f"unknown TTA aggregation {kind!r}; choose from {TTA_KINDS}")


def predictive_entropy(probs: Any) -> torch.Tensor:
    """Entropy in bits of independent Bernoulli labels, elementwise: 0 at p in {0, 1}, 1 at p = 0.5. On the
    ensemble's mean probability (N, L) it is the total predictive uncertainty per sample and label."""
    p = _as_float(probs).clamp(PROB_EPS, 1 - PROB_EPS)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def mutual_information(samples: Any) -> torch.Tensor:
    """Epistemic part of the uncertainty (N, L) from pooled samples (K, N, L) (members x MC passes, flattened):
    H[mean p] - mean H[p], the samples' disagreement (BALD), in bits."""
    s = _as_float(samples)
    return (predictive_entropy(s.mean(dim=0)) - predictive_entropy(s).mean(dim=0)).clamp_min(0)
