"""Snapping regressed sizes to catalogue sizes: hand-computed cases of the MAP rule."""

from __future__ import annotations

import numpy as np

from finescale.pipelines.dims.catalogue import read_catalogue, snap_to_catalogue

CATALOGUE = {
    "A": {"lengths": [8.0, 10.0, 12.0], "diameters": [3.5, 4.0]},
    "B": {"lengths": [9.0, 11.0], "diameters": [4.5, 5.0]},
}


def test_catalogue_reads_sizes_per_model_and_skips_unnamed():
    records = [
        {"model": "A", "length_mm": 10.0, "diameter_mm": 4.0},
        {"model": "A", "length_mm": 8.0000001, "diameter_mm": 4.0},
        {"model": "", "length_mm": 99.0, "diameter_mm": 9.0},
        {"model": "B", "length_mm": 11.0, "diameter_mm": 5.0},
    ]
    assert read_catalogue(records) == {
        "A": {"lengths": [8.0, 10.0], "diameters": [4.0]},
        "B": {"lengths": [11.0], "diameters": [5.0]},
    }


def test_confident_model_snaps_to_its_nearest_sizes():
    length, diameter = snap_to_catalogue(
        np.array([10.8]), np.array([4.3]), np.array([[0.99, 0.01]]), ["A", "B"], CATALOGUE
    )
    # A wins despite B's 11.0 being nearer in length: -2 log 0.01 = 9.2 outweighs the size costs
    assert length.tolist() == [10.0] and diameter.tolist() == [4.0]


def test_unsure_classifier_lets_the_sizes_decide():
    # cost A: ((10.9-10)/0.5)^2 + ((4.9-4)/0.2)^2 = 3.24 + 20.25 (+1.39); cost B: 0.04 + 0.25 (+1.39)
    length, diameter = snap_to_catalogue(
        np.array([10.9]), np.array([4.9]), np.array([[0.5, 0.5]]), ["A", "B"], CATALOGUE
    )
    assert length.tolist() == [11.0] and diameter.tolist() == [5.0]


def test_unseen_pair_of_seen_sizes_is_reachable_and_unknown_models_pass_through():
    length, diameter = snap_to_catalogue(
        np.array([12.1, 7.3]), np.array([3.4, 2.0]), np.array([[1.0, 0.0], [0.0, 1.0]]), ["A", "C"], CATALOGUE
    )
    assert length[0] == 12.0 and diameter[0] == 3.5  # (12, 3.5) need not have been seen as a pair
    assert length[1] == 7.3 and diameter[1] == 2.0  # model C has no catalogue: unchanged
