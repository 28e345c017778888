"""Iterative stratification: exact split sizes, every split gets its share of each label's positives."""

from __future__ import annotations

import numpy as np
import pytest

from finescale.data.stratify import iterative_stratification

SIZES = {"train": 60, "val": 15, "test": 25}


def correlated_labels(n: int, seed: int) -> np.ndarray:
    """Rare, correlated multi-labels as findings are: one shared factor and per-label thresholds."""
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((n, 1))
    latent = 0.7 * factor + 0.7 * rng.standard_normal((n, 12))
    return latent > np.linspace(0.6, 1.8, 12)  # prevalence from about 30 % down to 4 %


def shares(labels: np.ndarray, splits: list[str]) -> np.ndarray:
    """(splits, labels): each split's share of each label's positives."""
    names = np.array(splits)
    return np.stack([labels[names == s].sum(0) for s in SIZES]) / labels.sum(0)


def test_split_sizes_are_exact_and_each_split_gets_its_share_of_every_label():
    labels = correlated_labels(100, seed=0)
    splits = iterative_stratification(labels, SIZES, np.random.default_rng(0))
    assert {s: splits.count(s) for s in SIZES} == SIZES
    positives = np.stack([labels[np.array(splits) == s].sum(0) for s in SIZES])
    expected = np.array(list(SIZES.values()))[:, None] / 100 * labels.sum(0)
    assert (positives[expected >= 1] > 0).all()  # a split due at least one positive of a label gets one
    assert (np.abs(positives - expected) < 1).all()


def test_label_shares_follow_split_sizes_closer_than_a_random_split():
    wanted = np.array(list(SIZES.values()))[:, None] / 100
    stratified, random = [], []
    for seed in range(5):
        labels = correlated_labels(100, seed)
        rng = np.random.default_rng(seed)
        stratified.append(np.abs(shares(labels, iterative_stratification(labels, SIZES, rng)) - wanted).mean())
        shuffled = [s for s, n in SIZES.items() for _ in range(n)]
        random.append(np.abs(shares(labels, [shuffled[i] for i in rng.permutation(100)]) - wanted).mean())
    assert np.mean(stratified) < 0.5 * np.mean(random)


def test_same_rng_same_split_and_hand_case():
    labels = correlated_labels(100, seed=1)
    first = iterative_stratification(labels, SIZES, np.random.default_rng(3))
    assert first == iterative_stratification(labels, SIZES, np.random.default_rng(3))
    # two positives of the only label, two equal splits: one positive each, whatever the tie-breaks
    hand = np.array([[1], [1], [0], [0]])
    for seed in range(4):
        splits = np.array(iterative_stratification(hand, {"a": 2, "b": 2}, np.random.default_rng(seed)))
        assert sorted(splits[:2]) == ["a", "b"]


def test_sizes_that_do_not_sum_to_the_groups_are_an_error():
    with pytest.raises(ValueError, match="do not sum"):
        iterative_stratification(np.zeros((3, 2)), {"a": 1, "b": 1}, np.random.default_rng(0))
