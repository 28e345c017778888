import math

import pytest
import torch
import torch.nn.functional as F

from finescale.losses import gaussian_smooth_labels, nearest_bin

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


def test_cross_entropy_on_smooth_labels_equals_the_hand_formula():
    # The length and puzzle losses call F.cross_entropy with probability targets: mean of -sum_k p_k log softmax(z)_k.
    torch.manual_seed(1)
    logits = torch.randn(3, 21)
    values = torch.tensor([7.2, 8.8, 14.1])
    probs = gaussian_smooth_labels(values, CENTERS, sigma=0.5)
    rows = zip(probs.tolist(), logits.softmax(1).tolist(), strict=True)
    by_hand = sum(-sum(p * math.log(q) for p, q in zip(target, soft, strict=True)) for target, soft in rows) / 3
    torch.testing.assert_close(F.cross_entropy(logits, probs), torch.tensor(by_hand))
    # sigma = 0 (one-hot labels) is the class-index cross-entropy
    hard = gaussian_smooth_labels(values, CENTERS, sigma=0.0)
    torch.testing.assert_close(F.cross_entropy(logits, hard), F.cross_entropy(logits, nearest_bin(values, CENTERS)))
