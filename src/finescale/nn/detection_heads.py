"""Faster R-CNN's two heads from torchvision's detection parts, with the classification losses injected.

``ProposalNetwork`` (the RPN) and ``BoxHead`` (the RoI head) take FPN features of N images of one size (H, W) and
boxes in ``xyxy`` pixels of those images. Their classification losses are ``DetectionClassLoss`` objects handed to
``__init__``, so focal or cross-entropy is a choice of the builder, not a patch of torchvision's module globals.
Shapes: N = images, A = anchors of one image over all levels, K = boxes, C = classes (labels 1..C, 0 = background).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from finescale.losses import DetectionClassLoss

BoxLoss = Literal["smooth_l1", "l1"]
Targets = list[dict[str, Tensor]]
# (sampled proposals, their labels) of each image -> weight of each sample's background term, (K_i,) per image
BackgroundWeights = Callable[[list[Tensor], list[Tensor]], list[Tensor]]


def box_regression_loss(pred: Tensor, target: Tensor, kind: BoxLoss) -> Tensor:
    """Summed loss of box deltas (K, 4) vs (K, 4): smooth L1 with beta 1/9 (torchvision's Faster R-CNN) or L1."""
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    return F.smooth_l1_loss(pred, target, beta=1 / 9, reduction="sum")


def match_boxes(matcher: Matcher, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Labels (K,) int64 of boxes (K, 4) against ground truth (G, 4) with labels (G,): the matched label, 0 below the
    low IoU threshold, -1 between the thresholds (ignored by the sampler); and the matched gt box (K, 4) of each
    (zeros for an image without ground truth, whose boxes are all background)."""
    if len(gt_boxes) == 0:
        return boxes.new_zeros(len(boxes), dtype=torch.int64), torch.zeros_like(boxes)
    matched = matcher(box_iou(gt_boxes, boxes))
    labels = gt_labels[matched.clamp(min=0)].to(torch.int64)
    labels[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
    labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1
    return labels, gt_boxes[matched.clamp(min=0)]


class ProposalNetwork(nn.Module):
    """The RPN: anchors on every level, torchvision's ``RPNHead``, the sampled-anchor losses and the proposals.

    Level ``i`` has anchors of side ``anchor_sizes[i]`` and every ratio of ``anchor_ratios``, a ratio being height /
    width (torchvision's ``AnchorGenerator`` convention: an anchor of ratio r is sqrt(r) s high and s / sqrt(r) wide),
    so the head predicts ``len(anchor_ratios)`` anchors per place. Training samples ``batch_per_image`` anchors per
    image (up to ``positive_fraction`` positive: IoU >= ``fg_iou``, or the best anchor of a box; negative below
    ``bg_iou``); both losses are normalised by the number of sampled anchors.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        strides: Sequence[int],
        anchor_sizes: Sequence[int],
        anchor_ratios: Sequence[float],
        cls_loss: DetectionClassLoss,
        box_loss: BoxLoss = "smooth_l1",
        batch_per_image: int = 256,
        positive_fraction: float = 0.5,
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        post_nms_train: int = 2000,
        post_nms_test: int = 1000,
        nms_threshold: float = 0.7,
    ) -> None:
        super().__init__()
        if len(strides) != len(anchor_sizes):
            raise ValueError(f"one anchor size per level: {len(anchor_sizes)} sizes for {len(strides)} levels")
        self.strides = tuple(strides)
        ratios = tuple(float(r) for r in anchor_ratios)
        self.anchor_generator = AnchorGenerator(tuple((s,) for s in anchor_sizes), (ratios,) * len(strides))
        self.head = RPNHead(in_channels, len(ratios))
        self.cls_loss, self.box_loss = cls_loss, box_loss
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_per_image, positive_fraction)
        self.post_nms_train, self.post_nms_test, self.nms_threshold = post_nms_train, post_nms_test, nms_threshold

    def anchors(self, features: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """Anchors (A, 4) xyxy px, the same for every image, in the head's output order; and A of each level.

        The strides are the pyramid's own, not image size // map size (torchvision's guess, wrong when a side is not a
        multiple of 32 and the maps were rounded up)."""
        self.anchor_generator.set_cell_anchors(features[0].dtype, features[0].device)
        grid_sizes = [list(f.shape[-2:]) for f in features]
        per_level = self.anchor_generator.grid_anchors(grid_sizes, [[s, s] for s in self.strides])
        return torch.cat(per_level), [len(a) for a in per_level]

    def forward(
        self, features: Sequence[Tensor], image_size: tuple[int, int], targets: Targets | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Levels [(N, ch, h_l, w_l)] -> proposals [(K_i, 4)] (at most ``post_nms_train`` with targets,
        ``post_nms_test`` without) and {"rpn_cls", "rpn_reg"} when targets are given ({} otherwise)."""
        logits, deltas = self.head(list(features))
        n = len(features[0])
        # (N, A_l, h, w) -> (N, h * w * A_l): place-major, ratio-minor, the order of grid_anchors
        objectness = torch.cat([x.permute(0, 2, 3, 1).reshape(n, -1) for x in logits], dim=1)
        deltas = torch.cat([x.permute(0, 2, 3, 1).reshape(n, -1, 4) for x in deltas], dim=1)
        anchors, level_counts = self.anchors(features)
        boxes = self.box_coder.decode_single(deltas.detach().reshape(-1, 4), anchors.repeat(n, 1)).view(n, -1, 4)
        top_n = self.post_nms_train if targets is not None else self.post_nms_test
        scores = objectness.detach()
        proposals = [self.select_proposals(boxes[i], scores[i], level_counts, image_size, top_n) for i in range(n)]
        losses = {} if targets is None else self.losses(objectness, deltas, anchors, targets)
        return proposals, losses

    def select_proposals(
        self, boxes: Tensor, objectness: Tensor, level_counts: list[int], image_size: tuple[int, int], top_n: int
    ) -> Tensor:
        """One image's decoded anchors (A, 4) and logits (A,) -> proposals (K, 4): the ``top_n`` best of each level,
        clipped, tiny ones removed, NMS per level, then the ``top_n`` best overall."""
        chosen, offset = [], 0
        for count in level_counts:
            chosen.append(objectness[offset : offset + count].topk(min(top_n, count)).indices + offset)
            offset += count
        index = torch.cat(chosen)
        levels = torch.repeat_interleave(
            torch.arange(len(level_counts), device=boxes.device), index.new_tensor(level_counts)
        )
        boxes, scores, levels = clip_boxes_to_image(boxes[index], image_size), objectness[index], levels[index]
        keep = remove_small_boxes(boxes, 1e-3)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, self.nms_threshold)[:top_n]
        return boxes[keep]

    def losses(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, targets: Targets) -> dict[str, Tensor]:
        """Objectness (N, A) and deltas (N, A, 4) against each image's boxes -> {"rpn_cls", "rpn_reg"}."""
        labels, matched = zip(
            *(match_boxes(self.matcher, anchors, t["boxes"], torch.ones_like(t["labels"])) for t in targets),
            strict=True,
        )
        positive, negative = self.sampler(list(labels))
        pos = torch.cat(positive).bool()
        sampled = pos | torch.cat(negative).bool()
        cls = self.cls_loss(objectness.reshape(-1)[sampled], pos[sampled].long())
        all_anchors = anchors.repeat(len(targets), 1)
        goal = self.box_coder.encode_single(torch.cat(matched)[pos], all_anchors[pos])
        reg = box_regression_loss(deltas.reshape(-1, 4)[pos], goal, self.box_loss) / sampled.sum().clamp_min(1)
        return {"rpn_cls": cls, "rpn_reg": reg}


class BoxHead(nn.Module):
    """The RoI head: ``MultiScaleRoIAlign`` (7 x 7, sampling 2) over the named levels, torchvision's ``TwoMLPHead``
    and a predictor with class-specific box deltas (C x 4).

    The classifier has C sigmoid logits and no background column when ``cls_loss`` is focal (its bias starts at the
    RetinaNet prior, p = 0.01), C + 1 softmax logits with column 0 the background when it is cross-entropy. Training
    adds the ground-truth boxes to the proposals and samples ``batch_per_image`` of them per image, up to
    ``positive_fraction`` positive (IoU >= ``iou`` with a box); both losses are normalised by the sampled count (the
    classification one by the sum of the sample weights when background weights are given).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        level_names: Sequence[str],
        num_classes: int,
        cls_loss: DetectionClassLoss,
        representation: int = 1024,
        box_loss: BoxLoss = "smooth_l1",
        batch_per_image: int = 512,
        positive_fraction: float = 0.25,
        iou: float = 0.5,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes, self.cls_loss, self.box_loss = num_classes, cls_loss, box_loss
        self.pooler = MultiScaleRoIAlign(list(level_names), output_size=7, sampling_ratio=2)
        self.mlp = TwoMLPHead(in_channels * 7 * 7, representation)
        self.sigmoid = cls_loss.kind == "focal"
        self.cls_score = nn.Linear(representation, num_classes if self.sigmoid else num_classes + 1)
        self.bbox_pred = nn.Linear(representation, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, -math.log(99.0) if self.sigmoid else 0.0)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.matcher = Matcher(iou, iou, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_per_image, positive_fraction)
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.detections_per_image = detections_per_image

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Boxes [(K_i, 4)] of the N images -> class logits (sum K_i, C or C + 1) and deltas (sum K_i, C, 4)."""
        pooled = self.pooler(features, boxes, [image_size] * len(boxes))
        hidden = self.mlp(pooled)
        return self.cls_score(hidden), self.bbox_pred(hidden).view(-1, self.num_classes, 4)

    def scores(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits -> foreground probabilities (K, C) and background score (K,): 1 - max_c p_c for sigmoid outputs,
        the softmax's background column otherwise."""
        if self.sigmoid:
            fg = logits.sigmoid()
            return fg, 1.0 - fg.max(dim=1).values
        probs = logits.softmax(dim=1)
        return probs[:, 1:], probs[:, 0]

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Deltas (K, C, 4) applied to boxes (K, 4) -> (K, C, 4) xyxy px."""
        codes = deltas.reshape(len(boxes), self.num_classes * 4)
        return self.box_coder.decode_single(codes, boxes).view(len(boxes), self.num_classes, 4)

    def sample(self, proposals: list[Tensor], targets: Targets) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Proposals + ground truth of each image, sampled -> (boxes [(K_i, 4)], labels [(K_i,)] in 0..C, matched
        gt boxes [(K_i, 4)])."""
        boxes = [torch.cat([p.detach(), t["boxes"].to(p.dtype)]) for p, t in zip(proposals, targets, strict=True)]
        labels, matched = zip(
            *(match_boxes(self.matcher, b, t["boxes"], t["labels"]) for b, t in zip(boxes, targets, strict=True)),
            strict=True,
        )
        positive, negative = self.sampler(list(labels))
        keep = [torch.where(p.bool() | n.bool())[0] for p, n in zip(positive, negative, strict=True)]
        return (
            [b[k] for b, k in zip(boxes, keep, strict=True)],
            [lab[k] for lab, k in zip(labels, keep, strict=True)],
            [m[k] for m, k in zip(matched, keep, strict=True)],
        )

    def regression_loss(self, deltas: Tensor, boxes: Tensor, labels: Tensor, matched: Tensor) -> Tensor:
        """Class-specific deltas (K, C, 4) of the sampled boxes (K, 4) with labels (K,) against matched gt (K, 4);
        only positives count, normalised by K."""
        pos = torch.where(labels > 0)[0]
        goal = self.box_coder.encode_single(matched[pos], boxes[pos])
        return box_regression_loss(deltas[pos, labels[pos] - 1], goal, self.box_loss) / max(len(labels), 1)

    def losses(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_size: tuple[int, int],
        targets: Targets,
        *,
        background_weights: BackgroundWeights | None = None,
        regression_targets: Targets | None = None,
    ) -> dict[str, Tensor]:
        """{"roi_cls", "roi_reg"}; see ``DefectDetector.roi_losses``."""
        boxes, labels, matched = self.sample(proposals, targets)
        logits, deltas = self(features, boxes, image_size)
        flat_labels = torch.cat(labels)
        weights = None
        if background_weights is not None:
            bg = torch.cat([w.detach() for w in background_weights(boxes, labels)]).to(logits.dtype)
            weights = torch.where(flat_labels == 0, bg, torch.ones_like(bg))
        cls = self.cls_loss(logits, flat_labels, weights)
        if regression_targets is not None:  # a second sampling against the boxes trusted for regression
            boxes, labels, matched = self.sample(proposals, regression_targets)
            _, deltas = self(features, boxes, image_size)
            flat_labels = torch.cat(labels)
        reg = self.regression_loss(deltas, torch.cat(boxes), flat_labels, torch.cat(matched))
        return {"roi_cls": cls, "roi_reg": reg}

    def detect(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_size: tuple[int, int]
    ) -> list[dict[str, Tensor]]:
        """Proposals -> per image {"boxes" (D, 4) xyxy px, "scores" (D,), "labels" (D,) in 1..C}: every class's
        score and refined box, clipped, above ``score_threshold``, NMS per class, the best ``detections_per_image``."""
        logits, deltas = self(features, proposals, image_size)
        fg, _ = self.scores(logits)
        boxes = self.decode(deltas, torch.cat(proposals))
        counts = [len(p) for p in proposals]
        detections = []
        for class_boxes, class_scores in zip(boxes.split(counts), fg.split(counts), strict=True):
            classes = torch.arange(1, self.num_classes + 1, device=fg.device).expand_as(class_scores)
            flat_boxes = clip_boxes_to_image(class_boxes, image_size).reshape(-1, 4)
            scores, labels = class_scores.reshape(-1), classes.reshape(-1)
            keep = torch.where(scores > self.score_threshold)[0]
            keep = keep[remove_small_boxes(flat_boxes[keep], 1e-2)]
            keep = keep[batched_nms(flat_boxes[keep], scores[keep], labels[keep], self.nms_threshold)]
            keep = keep[: self.detections_per_image]
            detections.append({"boxes": flat_boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections
