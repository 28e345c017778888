"""Snapping predictions to catalogue sizes: implants come in a few lengths and diameters per model, so a regressed
size can be moved to the nearest size that the likely models are sold in.

The catalogue is read from the training manifest (per model: the lengths and the diameters seen) and stored in the
config, so a checkpoint carries it. Lengths and diameters are snapped separately, so a (length, diameter) pair that
training never showed for a model stays reachable as long as each size was seen for it.

Choice of model: a maximum a posteriori rule. With the regressor's error taken as Gaussian (``sigma`` per target)
and the model classifier's probabilities as the prior, each candidate model m scores
``((L - L_m) / sL)^2 + ((D - D_m) / sD)^2 - 2 log p_m`` where ``L_m``, ``D_m`` are m's catalogue sizes nearest to
the regressed ``L``, ``D``; the lowest score wins. A confident classifier picks the model; an unsure one lets the
regressed sizes decide between similar models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# model name -> {"lengths": [...], "diameters": [...], "company": its maker, where the records name one}
Catalogue = dict[str, dict[str, Any]]


def read_catalogue(records: Sequence[Mapping]) -> Catalogue:
    """Per model, the sorted distinct lengths and diameters (mm, 0.01 mm precision) of ``records``, and the company
    its records name most often (absent when none does)."""
    sizes: dict[str, tuple[set[float], set[float]]] = {}
    makers: dict[str, Counter[str]] = {}
    for record in records:
        model = record.get("model")
        if not model:
            continue
        lengths, diameters = sizes.setdefault(str(model), (set(), set()))
        lengths.add(round(float(record["length_mm"]), 2))
        diameters.add(round(float(record["diameter_mm"]), 2))
        if record.get("company"):
            makers.setdefault(str(model), Counter())[str(record["company"])] += 1
    catalogue: Catalogue = {}
    for m, (ls, ds) in sorted(sizes.items()):
        catalogue[m] = {"lengths": sorted(ls), "diameters": sorted(ds)}
        if m in makers:
            catalogue[m]["company"] = makers[m].most_common(1)[0][0]
    return catalogue


def maker_of(model: str, catalogue: Mapping[str, Mapping[str, Any]], companies: Sequence[str]) -> str | None:
    """The company (one of ``companies``) that makes ``model``: the one the training manifest names for it, else
    the company whose name the model's name starts with (``Kalyx Straight KS`` -> ``Kalyx``, as in ``finescale synth
    implants``); None when neither tells."""
    named = (catalogue.get(model) or {}).get("company")
    if named in companies:
        return named
    prefixes = [c for c in companies if model == c or model.startswith(f"{c} ")]
    return max(prefixes, key=len) if prefixes else None


def _nearest(values: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """For each value, the nearest entry of ``grid`` (a sorted list)."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.size == 1:
        return np.full(values.shape, grid[0])
    right = np.clip(np.searchsorted(grid, values), 1, grid.size - 1)
    left = right - 1
    take_left = np.abs(values - grid[left]) <= np.abs(values - grid[right])
    return np.where(take_left, grid[left], grid[right])


def snap_to_catalogue(
    length: np.ndarray,
    diameter: np.ndarray,
    model_probs: np.ndarray,
    models: Sequence[str],
    catalogue: Catalogue,
    sigma: Sequence[float] = (0.5, 0.2),
) -> tuple[np.ndarray, np.ndarray]:
    """Snapped (length, diameter), each (N,), for regressed sizes (N,) and model probabilities (N, K) over
    ``models``; a model absent from the catalogue stands for "keep the regressed sizes"."""
    length, diameter = np.asarray(length, np.float64), np.asarray(diameter, np.float64)
    best_score = np.full(length.shape, np.inf)
    out_length, out_diameter = length.copy(), diameter.copy()
    log_prior = np.log(np.clip(np.asarray(model_probs, np.float64), 1e-12, None))
    for k, name in enumerate(models):
        sizes = catalogue.get(name)
        if sizes and sizes["lengths"] and sizes["diameters"]:
            snapped_length = _nearest(length, sizes["lengths"])
            snapped_diameter = _nearest(diameter, sizes["diameters"])
        else:  # a model without a catalogue keeps the regressed sizes (no size cost), weighed by its probability
            snapped_length, snapped_diameter = length, diameter
        score = (
            ((length - snapped_length) / sigma[0]) ** 2
            + ((diameter - snapped_diameter) / sigma[1]) ** 2
            - 2 * log_prior[:, k]
        )
        better = score < best_score
        best_score = np.where(better, score, best_score)
        out_length = np.where(better, snapped_length, out_length)
        out_diameter = np.where(better, snapped_diameter, out_diameter)
    return out_length, out_diameter
