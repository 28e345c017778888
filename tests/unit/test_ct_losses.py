"""Multi-label losses of the ct pipeline: focal loss, label smoothing, mixed targets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from finescale.losses import mix_targets, multilabel_focal_loss, smoothed_targets


def test_focal_loss_by_hand_on_two_labels():
    # logit 0.5 positive and logit 2.0 negative: alpha_t (1 - p_t)^gamma (-log p_t), averaged
    p1, p2 = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-2.0))
    positive = 0.25 * (1 - p1) ** 2 * -math.log(p1)
    negative = 0.75 * p2**2 * -math.log(1 - p2)
    loss = multilabel_focal_loss(torch.tensor([[0.5, 2.0]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx((positive + negative) / 2, rel=1e-6)


def test_focal_loss_is_torchvisions_mean_also_on_soft_targets():
    torch.manual_seed(0)
    logits, soft = torch.randn(4, 18), torch.rand(4, 18)
    expected = sigmoid_focal_loss(logits, soft, alpha=0.4, gamma=1.5, reduction="mean")
    torch.testing.assert_close(multilabel_focal_loss(logits, soft, gamma=1.5, alpha=0.4), expected)
    # gamma 0 and no class weighting is plain BCE
    torch.testing.assert_close(
        multilabel_focal_loss(logits, soft, gamma=0.0, alpha=-1), F.binary_cross_entropy_with_logits(logits, soft)
    )


def test_focal_loss_takes_integer_targets():
    logits, targets = torch.zeros(2, 3), torch.tensor([[1, 0, 1], [0, 0, 1]])
    expected = multilabel_focal_loss(logits, targets.float())
    torch.testing.assert_close(multilabel_focal_loss(logits, targets), expected)


def test_smoothed_targets_move_each_label_towards_one_half():
    smoothed = smoothed_targets(torch.tensor([[0.0, 1.0, 0.5]]), 0.1)
    torch.testing.assert_close(smoothed, torch.tensor([[0.05, 0.95, 0.5]]))
    torch.testing.assert_close(smoothed_targets(torch.tensor([[0.0, 1.0]]), 0.0), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError):
        smoothed_targets(torch.zeros(1, 2), 1.0)


def test_mix_targets_interpolates_with_a_scalar_or_per_sample_lambda():
    t1, t2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(mix_targets(t1, t2, 0.7), torch.tensor([[0.7, 0.0], [0.7, 1.0]]))
    torch.testing.assert_close(mix_targets(t1, t2, torch.tensor([0.2, 0.9])), torch.tensor([[0.2, 0.0], [0.9, 1.0]]))
    integer = mix_targets(t1.long(), t2.long(), 0.7)  # 0/1 integer labels give soft float targets, not truncated
    torch.testing.assert_close(integer, torch.tensor([[0.7, 0.0], [0.7, 1.0]]))


def test_bce_on_mixed_targets_is_the_mixup_loss():
    torch.manual_seed(0)
    logits, t1, t2, lam = torch.randn(5, 18), torch.randint(0, 2, (5, 18)).float(), torch.rand(5, 18), 0.35
    mixed = F.binary_cross_entropy_with_logits(logits, mix_targets(t1, t2, lam))
    separate = lam * F.binary_cross_entropy_with_logits(logits, t1) + (1 - lam) * F.binary_cross_entropy_with_logits(
        logits, t2
    )
    torch.testing.assert_close(mixed, separate)
