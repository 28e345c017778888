"""DetectionClassLoss: the defects detector's RPN objectness and RoI classification loss (focal or CE)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from finescale.losses import DetectionClassLoss

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_binary_focal_matches_torchvision_on_random_inputs():
    torch.manual_seed(0)
    logits, targets = torch.randn(300) * 3, (torch.rand(300) < 0.3).long()
    loss = DetectionClassLoss("focal", gamma=2.5, alpha=0.75)(logits, targets)
    expected = sigmoid_focal_loss(logits, targets.float(), alpha=0.75, gamma=2.5, reduction="mean")
    torch.testing.assert_close(loss, expected)


def test_class_focal_matches_torchvision_with_background_as_all_zero_one_hot():
    torch.manual_seed(1)
    logits, labels = torch.randn(64, 5) * 2, torch.randint(0, 6, (64,))  # 0 = background
    loss = DetectionClassLoss("focal", gamma=3.5, alpha=0.75)(logits, labels)
    one_hot = torch.zeros(64, 5)
    fg = labels > 0
    one_hot[fg.nonzero()[:, 0], labels[fg] - 1] = 1.0
    # summed over the classes, averaged over the 64 sampled examples (mmdetection's avg_factor = number of samples)
    expected = sigmoid_focal_loss(logits, one_hot, alpha=0.75, gamma=3.5, reduction="sum") / 64
    torch.testing.assert_close(loss, expected)


def test_binary_focal_by_hand_on_two_samples():
    # sample 1: logit 0 -> p = 0.5, target 1: ce = ln 2, (1 - p_t)^2 = 1/4, alpha_t = 0.25 -> ln2 / 16
    # sample 2: logit ln 3 -> p = 0.75, target 0: ce = ln 4, (1 - p_t)^2 = 9/16, alpha_t = 0.75 -> 27/64 ln 4
    loss = DetectionClassLoss("focal", gamma=2.0, alpha=0.25, weight=3.0)(
        torch.tensor([0.0, LN3]), torch.tensor([1, 0])
    )
    by_hand = 3.0 * (LN2 / 16 + 27 / 64 * 2 * LN2) / 2
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_class_focal_by_hand_on_two_samples():
    # C = 2; sample 1 is class 2, logits (0, ln 3); sample 2 is background, logits (ln 3, 0); alpha 0.25, gamma 2
    logits = torch.tensor([[0.0, LN3], [LN3, 0.0]])
    loss = DetectionClassLoss("focal", gamma=2.0, alpha=0.25)(logits, torch.tensor([2, 0]))
    sample1 = 0.75 * 0.25 * LN2 + 0.25 * (0.25**2) * math.log(4 / 3)  # class 1 negative at p=.5, class 2 positive p=.75
    sample2 = 0.75 * (0.75**2) * math.log(4.0) + 0.75 * 0.25 * LN2  # class 1 negative at p=.75, class 2 at p=.5
    assert loss.item() == pytest.approx((sample1 + sample2) / 2, rel=1e-6)


def test_ce_matches_torch_cross_entropy_and_bce():
    torch.manual_seed(2)
    logits, labels = torch.randn(50, 6), torch.randint(0, 6, (50,))
    torch.testing.assert_close(
        DetectionClassLoss("ce", weight=2.5)(logits, labels), 2.5 * F.cross_entropy(logits, labels)
    )
    binary, targets = torch.randn(40), (torch.rand(40) < 0.5).long()
    expected = F.binary_cross_entropy_with_logits(binary, targets.float())
    torch.testing.assert_close(DetectionClassLoss("ce")(binary, targets), expected)


def test_focal_without_modulation_and_weighting_is_bce():
    torch.manual_seed(3)
    logits, targets = torch.randn(30), (torch.rand(30) < 0.5).long()
    loss = DetectionClassLoss("focal", gamma=0.0, alpha=-1)(logits, targets)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets.float()))


@pytest.mark.parametrize("kind", ["focal", "ce"])
def test_sample_weights_normalise_by_their_sum(kind):
    torch.manual_seed(4)
    width = 4 if kind == "focal" else 5
    logits, labels = torch.randn(20, width), torch.randint(0, 5, (20,))
    loss_fn = DetectionClassLoss(kind, gamma=2.0, alpha=0.75)
    per_sample = loss_fn.per_sample(logits, labels)
    weights = torch.rand(20)
    expected = (per_sample * weights).sum() / weights.sum().clamp_min(1.0)
    torch.testing.assert_close(loss_fn(logits, labels, weights), expected)
    # zero weights drop samples: the loss is then the mean over the others
    keep = labels > 0
    torch.testing.assert_close(loss_fn(logits, labels, keep.float()), loss_fn(logits[keep], labels[keep]))
    # an explicit avg_factor replaces the default normaliser
    torch.testing.assert_close(loss_fn(logits, labels, avg_factor=5.0), per_sample.sum() / 5.0)


def test_no_samples_give_zero_with_a_graph():
    logits = torch.zeros(0, 5, requires_grad=True)
    loss = DetectionClassLoss("focal")(logits, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="focal"):
        DetectionClassLoss("bce")
