"""DefectDetector: Faster R-CNN (FPN P2..P5) from torchvision's parts, on groups of views (tiny backbone, CPU)."""

import math
import sys
import types

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou, sigmoid_focal_loss

from finescale.nn.detector import DefectDetector
from finescale.nn.fpn import FeaturePyramid
from finescale.pipelines.defects.config import SEED_ANCHOR_RATIOS, DefectsModelConfig

H, W, C = 128, 64, 3
BOXES = torch.tensor([[8.0, 16, 40, 32], [20, 70, 50, 110]])  # 32 x 16 (ratio 0.5) and 30 x 40
LABELS = torch.tensor([1, 3])


def small_config(**changes) -> DefectsModelConfig:
    fields = dict(
        backbone="test_resnet",
        fpn_channels=16,
        multiview=False,
        rpn_batch_per_image=64,
        roi_batch_per_image=32,
        rpn_post_nms_train=100,
        rpn_post_nms_test=50,
    )
    return DefectsModelConfig(**{**fields, **changes})


def build(seed: int = 0, views: int = 2, **changes) -> DefectDetector:
    torch.manual_seed(seed)
    return DefectDetector.from_config(small_config(**changes), C, views=views)


def no_boxes() -> dict:
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def drawn_view() -> torch.Tensor:
    """(3, H, W): grey, a red patch under box 1 and a dark-green-free patch under box 2."""
    image = torch.full((3, H, W), 0.5)
    image[0, 16:32, 8:40] = 1.0
    image[1, 70:110, 20:50] = 0.0
    return image


def batch_of(images: torch.Tensor, view_mask: torch.Tensor, targets: list[dict]) -> dict:
    return {"images": images, "view_mask": view_mask, "targets": targets}


def two_view_batch() -> dict:
    """One tool, two views: view 0 holds the two boxes, view 1 is an image without defects."""
    torch.manual_seed(5)
    images = torch.stack([drawn_view(), torch.rand(3, H, W)])[None]
    return batch_of(images, torch.ones(1, 2, dtype=torch.bool), [{"boxes": BOXES, "labels": LABELS}, no_boxes()])


def test_pyramid_strides_keyword_gives_p2_to_p5_and_keeps_the_default():
    torch.manual_seed(0)
    default = FeaturePyramid(name="test_resnet", out_channels=8)
    assert default.strides == (8, 16, 32) and default.level_names == ["p3", "p4", "p5"]
    fine = FeaturePyramid(name="test_resnet", out_channels=8, strides=(4, 8, 16, 32)).eval()
    assert fine.level_names == ["p2", "p3", "p4", "p5"]
    levels = fine(torch.rand(2, 3, 100, 60))
    assert [tuple(x.shape) for x in levels] == [(2, 8, math.ceil(100 / s), math.ceil(60 / s)) for s in (4, 8, 16, 32)]


def test_shapes_of_the_pieces():
    model = build().eval()
    batch = two_view_batch()
    features = model.features(batch["images"], batch["view_mask"])
    assert list(features) == ["p2", "p3", "p4", "p5"]
    for name, stride in zip(features, (4, 8, 16, 32), strict=True):
        assert features[name].shape == (2, 16, H // stride, W // stride)
    proposals, losses = model.rpn(features, (H, W))
    assert losses == {} and len(proposals) == 2
    for p in proposals:
        assert p.shape[1] == 4 and 0 < len(p) <= 50
        assert (p[:, 0] >= 0).all() and (p[:, 2] <= W).all() and (p[:, 3] <= H).all()
    fg, bg = model.class_scores(features, proposals, (H, W))
    assert [f.shape for f in fg] == [(len(p), C) for p in proposals] and [b.shape for b in bg] == [
        (len(p),) for p in proposals
    ]
    refined = model.refine(features, proposals, [torch.ones(len(p), dtype=torch.int64) for p in proposals], (H, W))
    assert [r.shape for r in refined] == [p.shape for p in proposals]
    detections = model.detect(features, (H, W))
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def test_anchors_per_place_follow_the_seed_ratios_as_height_over_width():
    model = build(anchor_ratios=SEED_ANCHOR_RATIOS, anchor_sizes=[16, 32, 64, 128])
    rpn = model.proposal_net
    assert rpn.head.cls_logits.out_channels == 7 and rpn.head.bbox_pred.out_channels == 28
    features = model.features(torch.rand(1, 1, 3, H, W), torch.ones(1, 1, dtype=torch.bool))
    anchors, counts = rpn.anchors(list(features.values()))
    assert counts == [7 * (H // s) * (W // s) for s in (4, 8, 16, 32)] and len(anchors) == sum(counts)
    # the 128 px anchors of P5 (rounded to whole pixels by torchvision): height / width = r, area ~ 128^2
    cell = rpn.anchor_generator.cell_anchors[3]
    heights, widths = cell[:, 3] - cell[:, 1], cell[:, 2] - cell[:, 0]
    torch.testing.assert_close(heights / widths, torch.tensor(SEED_ANCHOR_RATIOS), rtol=0.03, atol=0)
    torch.testing.assert_close(heights * widths, torch.full((7,), 128.0**2), rtol=0.03, atol=0)
    assert widths[0] > 4 * heights[0]  # ratio 0.2: a wide, flat band


@pytest.mark.parametrize("kind", ["focal", "ce"])
def test_losses_are_finite_with_all_keys_and_an_image_without_boxes(kind):
    model = build(rpn_loss=kind, roi_loss=kind)
    losses = model.loss(two_view_batch())
    assert set(losses) == {"loss", "rpn_cls", "rpn_reg", "roi_cls", "roi_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], sum(losses[k] for k in ("rpn_cls", "rpn_reg", "roi_cls", "roi_reg")))
    losses["loss"].backward()
    assert model.box_head.cls_score.weight.grad.abs().sum() > 0
    # a batch where no image has a box at all
    images = torch.rand(1, 2, 3, H, W)
    empty = model.loss(batch_of(images, torch.ones(1, 2, dtype=torch.bool), [no_boxes(), no_boxes()]))
    assert all(torch.isfinite(v) for v in empty.values()) and empty["rpn_reg"] == 0 and empty["roi_reg"] == 0


def test_a_missing_view_gives_no_loss_and_no_detections():
    model = build(score_threshold=0.0).eval()  # eval: batch norm must not mix the views' statistics here
    view = drawn_view()
    targets = [{"boxes": BOXES, "labels": LABELS}, {"boxes": BOXES[:1], "labels": LABELS[:1]}]
    missing = batch_of(torch.stack([view, view])[None], torch.tensor([[True, False]]), targets)
    alone = batch_of(view[None, None], torch.ones(1, 1, dtype=torch.bool), targets[:1])
    torch.manual_seed(3)
    with_missing = model.loss(missing)
    torch.manual_seed(3)
    expected = model.loss(alone)
    for key, value in expected.items():
        torch.testing.assert_close(with_missing[key], value)
    detections = model.predict(missing)["detections"]
    assert len(detections) == 2 and len(detections[0]["boxes"]) > 0 and len(detections[1]["boxes"]) == 0
    nothing = model.loss(batch_of(torch.rand(1, 2, 3, H, W), torch.zeros(1, 2, dtype=torch.bool), targets))
    assert nothing["loss"] == 0 and nothing["loss"].requires_grad


def test_zero_background_weights_leave_only_the_foreground_part_of_roi_cls():
    model = build()
    batch = two_view_batch()
    features = model.features(batch["images"], batch["view_mask"])
    proposals, _ = model.rpn(features, (H, W), batch["targets"])
    seen = {}

    def zero_background(boxes, labels):
        seen["boxes"], seen["labels"] = boxes, labels
        return [torch.zeros(len(b)) for b in boxes]

    losses = model.roi_losses(features, proposals, (H, W), batch["targets"], background_weights=zero_background)
    boxes, labels = seen["boxes"], torch.cat(seen["labels"])
    assert len(boxes) == 2 and (labels == 0).any() and (labels > 0).sum() >= 2  # the gt boxes are always sampled
    logits, _ = model.box_head(features, boxes, (H, W))
    fg = labels > 0
    one_hot = torch.nn.functional.one_hot(labels[fg], C + 1)[:, 1:].float()
    by_hand = 2.5 * sigmoid_focal_loss(logits[fg], one_hot, alpha=0.75, gamma=3.5, reduction="sum") / fg.sum()
    torch.testing.assert_close(losses["roi_cls"], by_hand)
    # weights of one are the plain loss (same sampling under the same seed)
    torch.manual_seed(11)
    ones = model.roi_losses(
        features, proposals, (H, W), batch["targets"], background_weights=lambda b, _: [torch.ones(len(x)) for x in b]
    )
    torch.manual_seed(11)
    plain = model.roi_losses(features, proposals, (H, W), batch["targets"])
    torch.testing.assert_close(ones["roi_cls"], plain["roi_cls"])


def test_regression_targets_feed_only_the_regression_loss():
    model = build()
    batch = two_view_batch()
    features = model.features(batch["images"], batch["view_mask"])
    proposals, _ = model.rpn(features, (H, W), batch["targets"])
    torch.manual_seed(2)
    plain = model.roi_losses(features, proposals, (H, W), batch["targets"])
    torch.manual_seed(2)
    other = model.roi_losses(features, proposals, (H, W), batch["targets"], regression_targets=[no_boxes(), no_boxes()])
    torch.testing.assert_close(other["roi_cls"], plain["roi_cls"])
    assert plain["roi_reg"] > 0 and other["roi_reg"] == 0


@pytest.mark.parametrize("kind", ["focal", "ce"])
def test_class_scores_background_definition(kind):
    model = build(roi_loss=kind).eval()
    features = model.features(torch.rand(1, 1, 3, H, W), torch.ones(1, 1, dtype=torch.bool))
    boxes = [BOXES]
    fg, bg = model.class_scores(features, boxes, (H, W))
    logits, _ = model.box_head(features, boxes, (H, W))
    if kind == "focal":
        assert logits.shape == (2, C)
        torch.testing.assert_close(fg[0], logits.sigmoid())
        torch.testing.assert_close(bg[0], 1 - logits.sigmoid().max(dim=1).values)
    else:
        assert logits.shape == (2, C + 1)
        torch.testing.assert_close(bg[0], logits.softmax(1)[:, 0])
        torch.testing.assert_close(fg[0].sum(1) + bg[0], torch.ones(2))


def test_refine_with_a_zeroed_regression_layer_returns_the_boxes():
    model = build().eval()
    nn.init.zeros_(model.box_head.bbox_pred.weight)
    nn.init.zeros_(model.box_head.bbox_pred.bias)
    features = model.features(torch.rand(1, 1, 3, H, W), torch.ones(1, 1, dtype=torch.bool))
    refined = model.refine(features, [BOXES], [LABELS], (H, W))
    torch.testing.assert_close(refined[0], BOXES)


class ViewMixer(nn.Module):
    """Stand-in for MultiViewFusion: adds the mean over the present views, scaled by a learnt gate."""

    def __init__(self, channels, *, pool_tokens, layers, heads, mlp_ratio, max_views, checkpointing):
        super().__init__()
        self.settings = dict(channels=channels, pool_tokens=pool_tokens, layers=layers, heads=heads)
        self.settings.update(mlp_ratio=mlp_ratio, max_views=max_views, checkpointing=checkpointing)
        self.gate = nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x, view_mask):
        self.calls.append((tuple(x.shape), view_mask.clone()))
        weights = view_mask.to(x.dtype)[:, :, None, None, None]
        mean = (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1)
        return x + self.gate * mean * weights


def test_fusion_is_built_from_the_config_and_applied_per_level(monkeypatch):
    fake = types.ModuleType("finescale.nn.multiview")
    fake.MultiViewFusion = ViewMixer
    monkeypatch.setitem(sys.modules, "finescale.nn.multiview", fake)
    model = build(views=2, multiview=True, pool_tokens=32, mv_layers=1, mv_heads=2, mv_mlp_ratio=2.0)
    assert list(model.fusion) == ["p2", "p3", "p4", "p5"]
    assert model.fusion["p2"].settings == dict(
        channels=16, pool_tokens=32, layers=1, heads=2, mlp_ratio=2.0, max_views=2, checkpointing=False
    )
    batch = two_view_batch()
    batch["view_mask"] = torch.tensor([[True, False]])
    losses = model.loss(batch)
    shapes = [model.fusion[n].calls[0][0] for n in model.fusion]
    assert shapes == [(1, 2, 16, H // s, W // s) for s in (4, 8, 16, 32)]
    assert model.fusion["p3"].calls[0][1].tolist() == [[True, False]]
    losses["loss"].backward()
    assert all(model.fusion[n].gate.grad is not None for n in model.fusion)
    assert len(model.predict(batch)["detections"][1]["boxes"]) == 0


def test_seeded_loss_is_the_same_twice():
    first = build(seed=7).loss(two_view_batch())
    second = build(seed=7).loss(two_view_batch())
    for key in first:
        assert first[key].item() == second[key].item()


def test_overfitting_one_image_finds_both_boxes():
    model = build(seed=0, views=1)
    batch = batch_of(drawn_view()[None, None], torch.ones(1, 1, dtype=torch.bool), [{"boxes": BOXES, "labels": LABELS}])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    found = model.predict(batch)["detections"][0]
    iou = box_iou(BOXES, found["boxes"])
    for i, label in enumerate(LABELS.tolist()):
        hits = (iou[i] > 0.5) & (found["labels"] == label)
        assert hits.any(), f"box {i} (class {label}) not found: {found}"
        assert found["scores"][hits].max() > 0.3


def test_pieces_accept_images_without_boxes():
    model = build().eval()
    features = model.features(torch.rand(1, 2, 3, H, W), torch.ones(1, 2, dtype=torch.bool))
    none = [torch.zeros(0, 4), torch.zeros(0, 4)]
    fg, bg = model.class_scores(features, none, (H, W))
    assert [f.shape for f in fg] == [(0, C)] * 2 and [b.shape for b in bg] == [(0,)] * 2
    assert [r.shape for r in model.refine(features, none, [torch.zeros(0, dtype=torch.int64)] * 2, (H, W))] == [
        (0, 4)
    ] * 2
    assert all(len(d["boxes"]) == 0 for d in model.detect(features, (H, W), proposals=none))
    # training on ground truth alone (no proposals): the gt boxes are the samples
    losses = model.roi_losses(features, none, (H, W), [{"boxes": BOXES, "labels": LABELS}, no_boxes()])
    assert all(torch.isfinite(v) for v in losses.values())
