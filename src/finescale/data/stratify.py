"""Multi-label iterative stratification (Sechidis, Tsoumakas & Vlahavas, 2011): split groups (patients) so that each
split receives its share of every label's positives, rarest label first.

A random split of a few dozen patients with correlated findings easily leaves a label with no positive in a small
split (a validation split where 5 of 18 labels never occur cannot pick an epoch or fit a calibration on them);
spreading the rare labels first prevents that while keeping the split sizes exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def iterative_stratification(labels: np.ndarray, sizes: Mapping[str, int], rng: np.random.Generator) -> list[str]:
    """The split name of each row of ``labels`` ((N, L) 0/1, one row per group), with exactly ``sizes[name]`` rows
    per split (the sizes sum to N). Ties (equal remaining demand) break towards the split that needs more rows, then
    at random, so the result depends on ``rng`` only through ties and the order of the groups."""
    labels = np.asarray(labels, dtype=bool)
    n = labels.shape[0]
    names = list(sizes)
    rows_left = np.array([sizes[s] for s in names], dtype=float)
    if rows_left.sum() != n or (rows_left < 0).any():
        raise ValueError(f"split sizes {dict(sizes)} do not sum to the {n} groups")
    shares = rows_left / max(n, 1)
    label_left = shares[:, None] * labels.sum(0)[None, :]  # (splits, labels): positives each split still wants
    order = rng.permutation(n)
    assigned: list[str | None] = [None] * n
    unassigned = np.ones(n, dtype=bool)

    def give(row: int, wants: np.ndarray) -> None:
        open_ = rows_left > 0
        best = np.flatnonzero(open_ & (wants == wants[open_].max()))
        best = best[rows_left[best] == rows_left[best].max()]
        split = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
        assigned[row] = names[split]
        unassigned[row] = False
        rows_left[split] -= 1
        label_left[split] -= labels[row]

    while unassigned.any():
        counts = labels[unassigned].sum(0)
        if not counts.any():  # only groups without any positive remain: fill the splits to their sizes
            for row in order[unassigned[order]]:
                give(int(row), rows_left)
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for row in order[(unassigned & labels[:, label])[order]]:
            give(int(row), label_left[:, label])
    return [str(s) for s in assigned]
