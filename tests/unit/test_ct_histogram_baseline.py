"""The ``ct`` bench's simple baseline: HU-histogram features and per-label logistic regressions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from finescale.pipelines.ct.histogram_baseline import HU_EDGES, Z_SLABS, fit_label_models, histogram_features


def test_features_count_each_slab_and_side_in_its_hu_bin():
    hu = np.full((8, 4, 6), -1000.0, dtype=np.float32)  # air everywhere
    hu[:2, :, 3:] = 40.0  # the first slab's right half is soft tissue (the [30, 60) bin)
    features = histogram_features(hu)
    bins = len(HU_EDGES) - 1
    assert features.shape == (Z_SLABS * 2 * bins,)
    counts = np.expm1(features).round().reshape(Z_SLABS, 2, bins)
    soft = HU_EDGES.index(30)
    assert counts[0, 1, soft] == 2 * 4 * 3 and counts[0, 1].sum() == 2 * 4 * 3
    assert counts[0, 0, 0] == 2 * 4 * 3  # the left half of that slab stays air
    assert counts[1:, :, 0].sum() == 6 * 4 * 6 and counts[1:, :, 1:].sum() == 0


def test_per_label_models_separate_what_the_features_separate_and_keep_a_constant_labels_rate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = np.stack([(x[:, 0] > 0), np.zeros(200, bool), (x[:, 1] + 0.5 * rng.normal(size=200) > 0)], axis=1)
    predict = fit_label_models(x, y.astype(np.float32), c=1.0)
    x_new = rng.normal(size=(100, 5))
    probs = predict(x_new)
    assert probs.shape == (100, 3)
    assert roc_auc_score(x_new[:, 0] > 0, probs[:, 0]) > 0.99
    assert np.all(probs[:, 1] == 0.0)  # never positive in training: its rate, no model
    assert roc_auc_score(x_new[:, 1] > 0, probs[:, 2]) > 0.9
