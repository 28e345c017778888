"""Soft Teacher: pseudo-label filtering, box jitter and reliability, soft background weights, statistics, and the
data flow of the unsupervised step through a fake detector (boxes into the strong frame, proposals back into the
weak frame for the teacher, each threshold on its own loss)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from finescale.pipelines.defects.config import SemiConfig
from finescale.pipelines.defects.soft_teacher import (
    box_reliability,
    filter_pseudo_labels,
    jitter_boxes,
    pseudo_label_stats,
    soft_background_weights,
    unsupervised_losses,
)

# ------------------------------------------------------------------ pure parts


def test_filter_keeps_scores_at_or_above_the_threshold():
    det = {
        "boxes": torch.arange(16.0).reshape(4, 4),
        "labels": torch.tensor([1, 2, 3, 4]),
        "scores": torch.tensor([0.9, 0.4, 0.39, 0.1]),
    }
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    kept, none = filter_pseudo_labels([det, empty], 0.4)
    assert kept["labels"].tolist() == [1, 2]
    assert torch.equal(kept["boxes"], det["boxes"][:2]) and torch.equal(kept["scores"], det["scores"][:2])
    assert none["boxes"].shape == (0, 4)


def test_jitter_offsets_scale_with_the_box_sides():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 40.0], [0.0, 0.0, 10.0, 200.0]])  # 100 x 20 and 10 x 200
    g = torch.Generator().manual_seed(0)
    jittered = jitter_boxes(boxes, 4000, 0.06, g)
    assert jittered.shape == (8000, 4)
    offsets = (jittered.reshape(2, 4000, 4) - boxes[:, None, :]).std(dim=1)
    expected = 0.06 * torch.tensor([[100.0, 20.0, 100.0, 20.0], [10.0, 200.0, 10.0, 200.0]])
    torch.testing.assert_close(offsets, expected, rtol=0.05, atol=0)
    # box-major rows and the same numbers twice from the same seed
    assert (jittered[:4000, 0] - 10).abs().max() < 30 and (jittered[4000:, 0]).abs().max() < 5
    assert torch.equal(jittered, jitter_boxes(boxes, 4000, 0.06, torch.Generator().manual_seed(0)))


def random_boxes(k: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * 100
    wh = 8 + torch.rand(k, 2, generator=g) * 60
    return torch.cat([xy, xy + wh], dim=1)


def test_identity_refine_measures_the_jitter_and_drops_every_box():
    boxes = random_boxes(200, 1)
    labels = torch.randint(1, 6, (200,), generator=torch.Generator().manual_seed(2))
    keep, rel_std = box_reliability(
        boxes, labels, lambda b, lab: b, n=10, scale=0.06, max_std=0.02, generator=torch.Generator().manual_seed(3)
    )
    assert rel_std.shape == (200,) and keep.dtype == torch.bool
    # the sample std of 10 normal draws averages c4(10) ~ 0.973 of sigma
    assert rel_std.mean().item() == pytest.approx(0.06 * 0.973, rel=0.05)
    assert not keep.any()


def test_snapping_refine_keeps_every_box_and_sees_the_labels():
    boxes = random_boxes(30, 4)
    labels = torch.randint(1, 6, (30,), generator=torch.Generator().manual_seed(5))
    seen = {}

    def snap(jittered: Tensor, lab: Tensor) -> Tensor:
        seen["labels"] = lab
        return boxes.repeat_interleave(10, dim=0)  # every jitter back onto its box

    keep, rel_std = box_reliability(boxes, labels, snap, n=10, generator=torch.Generator().manual_seed(6))
    assert keep.all() and torch.equal(rel_std, torch.zeros(30))
    assert torch.equal(seen["labels"], labels.repeat_interleave(10))


def test_reliability_is_per_box():
    boxes = random_boxes(6, 7)

    def half(jittered: Tensor, lab: Tensor) -> Tensor:  # the first 3 boxes snap back, the last 3 keep their jitter
        snapped = boxes.repeat_interleave(5, dim=0)
        return torch.where(torch.arange(30)[:, None] < 15, snapped, jittered)

    keep, _ = box_reliability(boxes, torch.ones(6, dtype=torch.long), half, n=5, generator=torch.Generator())
    assert keep.tolist() == [True] * 3 + [False] * 3
    empty_keep, empty_std = box_reliability(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), half)
    assert empty_keep.shape == (0,) and empty_std.shape == (0,)


def test_soft_background_weights_normalise_to_the_background_count():
    scores = torch.tensor([0.9, 0.1, 0.3, 0.2, 0.05])
    is_bg = torch.tensor([False, True, True, True, False])
    weights = soft_background_weights(scores, is_bg)
    # background: 0.1, 0.3, 0.2 scaled by 3 / 0.6 = 5
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.5, 1.5, 1.0, 1.0]))
    assert weights[is_bg].sum().item() == pytest.approx(3.0)
    # all foreground, or no background score at all: plain weights
    assert torch.equal(soft_background_weights(scores, torch.zeros(5, dtype=torch.bool)), torch.ones(5))
    assert torch.equal(soft_background_weights(torch.zeros(5), is_bg), torch.ones(5))


def test_pseudo_label_stats():
    def det(labels: list[int], scores: list[float]) -> dict[str, Tensor]:
        return {"boxes": torch.zeros(len(labels), 4), "labels": torch.tensor(labels), "scores": torch.tensor(scores)}

    detections = [det([1, 2, 2, 5], [0.9, 0.5, 0.2, 0.1]), det([3], [0.3]), det([], [])]
    pseudo = filter_pseudo_labels(detections, 0.4)
    stats = pseudo_label_stats(detections, pseudo, num_classes=5)
    assert stats["teacher_detections"] == pytest.approx(5 / 3)
    assert stats["pseudo_boxes"] == pytest.approx(2 / 3)
    assert stats["kept_ratio"] == pytest.approx(2 / 5)
    assert [stats[f"pseudo_class_{c}"] for c in range(1, 6)] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert pseudo_label_stats([det([], [])], [det([], [])])["kept_ratio"] == 0.0


# ------------------------------------------------------------------ the unsupervised step through a fake detector

H, W = 64, 48
FLIP_DOWN = torch.tensor([[-1.0, 0.0, W], [0.0, 1.0, 3.0], [0.0, 0.0, 1.0]])  # weak -> strong: mirror, 3 px down


@dataclass
class View:
    image: Tensor
    boxes: Tensor
    keep: Tensor
    matrix: Tensor


def fake_strong_view(image: Tensor, boxes: Tensor, *, colour: str, generator: torch.Generator) -> View:
    """Mirror and shift 3 px down; boxes leaving the image are flagged (all K boxes returned, with ``keep``)."""
    assert colour == "seed"
    shifted = torch.zeros_like(image)
    shifted[:, 3:] = image.flip(-1)[:, :-3]
    mapped = torch.stack([W - boxes[:, 2], boxes[:, 1] + 3, W - boxes[:, 0], boxes[:, 3] + 3], dim=1)
    return View(shifted + 0.5, mapped, mapped[:, 3] <= H, FLIP_DOWN.clone())


def det(rows: list[tuple[list[float], float, int]]) -> dict[str, Tensor]:
    return {
        "boxes": torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor([r[1] for r in rows]),
        "labels": torch.tensor([r[2] for r in rows], dtype=torch.long),
    }


A, B, C, D, F = [4.0, 4, 20, 20], [24.0, 30, 40, 50], [5.0, 40, 15, 60], [30.0, 5, 44, 20], [0.0, 58, 10, 63]
E = [10.0, 10, 30, 30]
TEACHER_DETECTIONS = [  # the two present views (0 and 2)
    det([(A, 0.95, 1), (B, 0.7, 2), (C, 0.45, 1), (D, 0.2, 3), (F, 0.8, 1)]),
    det([(E, 0.5, 2)]),
]
STRONG_PROPOSALS = [
    torch.tensor([[28.0, 7, 44, 23], [0, 0, 8, 8], [0, 0, 10, 2]]),  # A mirrored (foreground), bg, bg off the weak view
    torch.tensor([[5.0, 5, 25, 25]]),
]


def strong(box: list[float]) -> list[float]:
    return [W - box[2], box[1] + 3, W - box[0], box[3] + 3]


class FakeDetector(nn.Module):
    """The detector interface with recorded calls; every loss is a multiple of the feature mean (one parameter)."""

    num_classes = 5

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.calls: dict[str, list] = {}

    def record(self, name: str, **values: object) -> None:
        self.calls.setdefault(name, []).append({**values, "training": self.training, "grad": torch.is_grad_enabled()})

    def features(self, images: Tensor, view_mask: Tensor) -> OrderedDict[str, Tensor]:
        self.record("features", images=images.clone())
        return OrderedDict(p2=images.flatten(0, 1) * self.scale)

    def detect(self, features: OrderedDict[str, Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        self.record("detect", n=features["p2"].shape[0], size=image_size)
        return [{k: v.clone() for k, v in d.items()} for d in TEACHER_DETECTIONS]

    def refine(self, features, boxes: list[Tensor], labels: list[Tensor], image_size) -> list[Tensor]:
        """Label 1: snapped onto the nearest teacher box (reliable); any other label: unchanged (unreliable)."""
        self.record("refine", n=[len(b) for b in boxes])
        out = []
        for b, lab, d in zip(boxes, labels, TEACHER_DETECTIONS, strict=True):
            nearest = d["boxes"][box_iou(b, d["boxes"]).argmax(dim=1)] if len(b) else b
            out.append(torch.where((lab == 1)[:, None], nearest, b))
        return out

    def rpn(self, features, image_size, targets=None):
        self.record("rpn", targets=targets)
        mean = features["p2"].mean()
        return [p.clone() for p in STRONG_PROPOSALS], {"rpn_cls": mean, "rpn_reg": 2 * mean}

    def class_scores(self, features, boxes: list[Tensor], image_size):
        self.record("class_scores", boxes=[b.clone() for b in boxes])
        bg = [0.1 * torch.arange(1, len(b) + 1, dtype=torch.float32) for b in boxes]
        return [torch.zeros(len(b), 5) for b in boxes], bg

    def roi_losses(self, features, proposals, image_size, targets, *, background_weights=None, regression_targets=None):
        """The proposals stand for the sampled boxes, labelled as the real head does (IoU >= 0.5 -> the box's label)."""
        labels = []
        for p, t in zip(proposals, targets, strict=True):
            iou = box_iou(p, t["boxes"]) if len(t["boxes"]) else torch.zeros(len(p), 1)
            best, index = iou.max(dim=1)
            matched = t["labels"][index] if len(t["boxes"]) else torch.zeros(len(p), dtype=torch.long)
            labels.append(torch.where(best >= 0.5, matched, torch.zeros_like(matched)))
        weights = background_weights(proposals, labels) if background_weights is not None else None
        self.record("roi", targets=targets, weights=weights, reg=regression_targets, labels=labels)
        mean = features["p2"].mean()
        return {"roi_cls": 3 * mean, "roi_reg": 4 * mean}


def weak_batch() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 3, H, W, generator=g)
    images[0, 1] = 0  # a missing view
    return {"images": images, "view_mask": torch.tensor([[True, False, True]])}


SEMI = SemiConfig(pseudo_score_thr=0.4, rpn_pseudo_thr=0.9, cls_pseudo_thr=0.6, jitter_max_std=0.02)


def run_fake(semi: SemiConfig = SEMI) -> tuple[FakeDetector, FakeDetector, dict, dict, dict]:
    student, teacher = FakeDetector(), FakeDetector().requires_grad_(False)
    teacher.train()  # the step must put it into eval mode itself, and give the mode back
    batch = weak_batch()
    losses, stats = unsupervised_losses(
        student,
        teacher,
        batch,
        semi=semi,
        colour="seed",
        generator=torch.Generator().manual_seed(1),
        augment=fake_strong_view,
    )
    return student, teacher, batch, losses, stats


def boxes_of(targets: list[dict[str, Tensor]]) -> list[list[list[float]]]:
    return [t["boxes"].tolist() for t in targets]


def test_the_teacher_sees_weak_views_in_eval_mode_without_grad():
    student, teacher, batch, _, _ = run_fake()
    assert torch.equal(teacher.calls["features"][0]["images"], batch["images"])
    assert teacher.calls["detect"][0]["n"] == 2 and teacher.calls["detect"][0]["size"] == (H, W)  # present views
    assert all(not c["training"] and not c["grad"] for calls in teacher.calls.values() for c in calls)
    assert teacher.training  # mode given back
    # one refine call for all images: 4 pseudo boxes of view 0 and 1 of view 2, 10 jitters each
    assert [c["n"] for c in teacher.calls["refine"]] == [[40, 10]]


def test_the_student_sees_strong_views_and_missing_views_stay_empty():
    student, _, batch, _, _ = run_fake()
    seen = student.calls["features"][0]["images"][0]
    weak = batch["images"][0]
    for v in (0, 2):
        expected = fake_strong_view(weak[v], torch.zeros(0, 4), colour="seed", generator=None).image
        assert torch.equal(seen[v], expected)
    assert torch.equal(seen[1], torch.zeros(3, H, W))
    assert all(c["training"] and c["grad"] for c in student.calls["features"])


def test_each_threshold_reaches_its_own_loss_in_the_strong_frame():
    student, _, _, _, _ = run_fake()
    rpn = student.calls["rpn"][0]["targets"]
    roi = student.calls["roi"][0]
    assert len(rpn) == len(roi["targets"]) == len(roi["reg"]) == 2  # present views only
    # RPN: score >= 0.9 -> A only
    assert boxes_of(rpn) == [[strong(A)], []]
    assert rpn[0]["labels"].tolist() == [1]
    # classification: score >= 0.6 -> A, B (F, 0.8, left the strong view; D is below the pseudo threshold)
    assert boxes_of(roi["targets"]) == [[strong(A), strong(B)], []]
    assert roi["targets"][0]["labels"].tolist() == [1, 2]
    # regression: every pseudo box (score >= 0.4) the teacher is sure of: label 1 here -> A and C; E (label 2) is not
    assert boxes_of(roi["reg"]) == [[strong(A), strong(C)], []]


def test_the_teacher_scores_the_proposals_back_in_the_weak_frame():
    student, teacher, _, _, _ = run_fake()
    weak = teacher.calls["class_scores"][0]["boxes"]
    torch.testing.assert_close(weak[0], torch.tensor([A, [40.0, 0, 48, 5], [38.0, 0, 48, 0]]))
    torch.testing.assert_close(weak[1], torch.tensor([[23.0, 2, 43, 22]]))
    weights = student.calls["roi"][0]["weights"]
    # view 0: the proposal on A is foreground (1); background scores 0.2 and 1 (off the weak view), normalised to sum 2
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.2 * 2 / 1.2, 1.0 * 2 / 1.2]))
    torch.testing.assert_close(weights[1], torch.tensor([1.0]))  # the only proposal, background


def test_losses_and_stats():
    student, teacher, _, losses, stats = run_fake()
    assert set(losses) == {"unsup_rpn_cls", "unsup_rpn_reg", "unsup_roi_cls", "unsup_roi_reg"}
    sum(losses.values()).backward()
    assert student.scale.grad is not None and teacher.scale.grad is None
    assert stats["teacher_detections"] == 3.0 and stats["pseudo_boxes"] == 2.5
    assert stats["kept_ratio"] == pytest.approx(5 / 6)
    assert stats["reliable_share"] == pytest.approx(3 / 5)  # A, C, F of A, B, C, F, E
    assert (stats["rpn_targets"], stats["cls_targets"], stats["reg_targets"]) == (0.5, 1.0, 1.0)
    assert stats["pseudo_class_1"] == 3.0 and stats["pseudo_class_2"] == 2.0 and stats["pseudo_class_3"] == 0.0


def test_hard_background_and_no_views():
    student, teacher, _, _, _ = run_fake(SEMI.model_copy(update={"soft_background": False}))
    assert student.calls["roi"][0]["weights"] is None and "class_scores" not in teacher.calls
    batch = weak_batch()
    batch["view_mask"][:] = False
    student, teacher = FakeDetector(), FakeDetector()
    losses, stats = unsupervised_losses(student, teacher, batch, semi=SEMI, colour="seed", augment=fake_strong_view)
    assert stats == {} and all(v.item() == 0 for v in losses.values()) and "detect" not in teacher.calls


# ------------------------------------------------------------------ with the real detector and strong views

RH, RW = 128, 64


def real_pair() -> tuple[nn.Module, nn.Module]:
    """A tiny DefectDetector student and a teacher copy whose classifier is confident (bias 1: scores ~0.73)."""
    import copy

    from finescale.nn.detector import DefectDetector
    from finescale.pipelines.defects.config import DefectsModelConfig

    torch.manual_seed(0)
    config = DefectsModelConfig(
        backbone="test_resnet",
        fpn_channels=16,
        multiview=False,
        rpn_batch_per_image=64,
        roi_batch_per_image=32,
        rpn_post_nms_train=100,
        rpn_post_nms_test=50,
        detections_per_image=20,
    )
    student = DefectDetector.from_config(config, 5, views=2)
    teacher = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():
        teacher.box_head.cls_score.bias.fill_(1.0)
    return student, teacher


def real_batch() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.full((1, 2, 3, RH, RW), 0.5)
    images[0, 0, :, 30:50, 10:50] = torch.rand(3, 20, 40, generator=g)  # a band across the tool
    images[0, 1] = 0  # missing
    return {"images": images, "view_mask": torch.tensor([[True, False]])}


def real_step(semi: SemiConfig) -> tuple[nn.Module, nn.Module, dict, dict, dict]:
    student, teacher = real_pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(1)
    losses, stats = unsupervised_losses(
        student, teacher, real_batch(), semi=semi, colour="seed", generator=torch.Generator().manual_seed(2)
    )
    return student, teacher, before, losses, stats


def test_real_detector_losses_are_finite_and_train_only_the_student():
    student, teacher, before, losses, stats = real_step(SemiConfig())
    assert set(losses) == {"unsup_rpn_cls", "unsup_rpn_reg", "unsup_roi_cls", "unsup_roi_reg"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert stats["pseudo_boxes"] > 0 and stats["cls_targets"] > 0 and 0 < stats["kept_ratio"] <= 1
    assert 0 <= stats["reliable_share"] <= 1
    sum(losses.values()).backward()
    assert student.box_head.cls_score.weight.grad is not None and student.box_head.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # eval mode: not even batch-norm statistics move


def test_real_detector_thresholds_of_one_leave_pure_background():
    semi = SemiConfig(pseudo_score_thr=1.0, rpn_pseudo_thr=1.0, cls_pseudo_thr=1.0)
    _, _, _, losses, stats = real_step(semi)
    assert stats["pseudo_boxes"] == 0 and stats["kept_ratio"] == 0 and stats["teacher_detections"] > 0
    assert losses["unsup_rpn_reg"].item() == 0 and losses["unsup_roi_reg"].item() == 0
    assert losses["unsup_rpn_cls"].item() > 0 and losses["unsup_roi_cls"].item() > 0
    assert all(torch.isfinite(v) for v in losses.values())
