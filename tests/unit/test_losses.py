import math

import pytest
import torch
import torch.nn.functional as F

from finescale.losses import gaussian_smooth_labels, nearest_bin, soft_cross_entropy

CENTERS = torch.arange(6.0, 16.01, 0.5)


def test_smooth_labels_sum_to_one_and_peak_at_the_true_bin():
    values = torch.tensor([6.0, 9.3, 11.5, 16.0])
    labels = gaussian_smooth_labels(values, CENTERS, sigma=0.5)
    assert labels.shape == (4, 21)
    torch.testing.assert_close(labels.sum(dim=1), torch.ones(4))
    assert labels.argmax(dim=1).tolist() == nearest_bin(values, CENTERS).tolist()


def test_smooth_labels_match_the_seed_formula_by_hand():
    # value 10.25 sits halfway between bins 10.0 and 10.5: exp(-((c - v) / sigma)^2), normalised.
    labels = gaussian_smooth_labels(torch.tensor([10.25]), CENTERS, sigma=0.5)[0]
    raw = [math.exp(-(((c - 10.25) / 0.5) ** 2)) for c in CENTERS.tolist()]
    expected = torch.tensor(raw) / sum(raw)
    torch.testing.assert_close(labels, expected)
    assert labels[8] == pytest.approx(labels[9])  # 10.0 and 10.5 share the mass equally
    assert labels[8] == pytest.approx(math.exp(-0.25) / sum(raw))


def test_sigma_zero_gives_one_hot_labels():
    values = torch.tensor([6.1, 12.74, 15.9])
    labels = gaussian_smooth_labels(values, CENTERS, sigma=0.0)
    expected = F.one_hot(torch.tensor([0, 13, 20]), num_classes=21).float()
    torch.testing.assert_close(labels, expected)


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, 21)
    targets = torch.randint(0, 21, (5,))
    ours = soft_cross_entropy(logits, F.one_hot(targets, 21).float())
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets))


def test_soft_cross_entropy_matches_torch_probability_targets():
    torch.manual_seed(1)
    logits = torch.randn(3, 21)
    probs = gaussian_smooth_labels(torch.tensor([7.2, 8.8, 14.1]), CENTERS, sigma=0.5)
    torch.testing.assert_close(soft_cross_entropy(logits, probs), F.cross_entropy(logits, probs))
