"""``DefectDetector``: a Faster R-CNN with FPN (P2..P5) from torchvision's detection parts, for groups of views.

The interface is the one of ``docs/defects_design.md``: the pieces (``features``, ``rpn``, ``roi_losses``,
``class_scores``, ``refine``, ``detect``) are public so that Soft Teacher can run them on a teacher and a student;
``loss(batch)`` and ``predict(batch)`` are the supervised step and inference, and neither depends on
``self.training``. Boxes are ``xyxy`` in pixels of the (H, W) image the model sees; labels are 1..C.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image

from finescale.losses import DetectionClassLoss
from finescale.nn.detection_heads import BackgroundWeights, BoxHead, BoxLoss, ProposalNetwork, Targets
from finescale.nn.fpn import FeaturePyramid

if TYPE_CHECKING:
    from finescale.pipelines.defects.config import DefectsModelConfig

DETECTION_STRIDES = (4, 8, 16, 32)  # P2..P5
LOSS_KEYS = ("rpn_cls", "rpn_reg", "roi_cls", "roi_reg")
Features = OrderedDict[str, Tensor]


class DefectDetector(nn.Module):
    """Faster R-CNN over the V views of B tools: backbone + FPN on every view, optional multi-view fusion of each
    level, then the RPN and the RoI head on each view as an image of its own.

    ``fusion`` maps a level name ("p2".."p5") to a module ``(x (B, V, ch, h, w), view_mask (B, V)) -> same shape``.
    A view whose ``view_mask`` is False gives no loss and no detections (``loss`` and ``predict`` drop it after the
    fusion; callers of the pieces use ``select_views``).
    """

    def __init__(
        self,
        *,
        pyramid: FeaturePyramid,
        proposal_net: ProposalNetwork,
        box_head: BoxHead,
        fusion: nn.ModuleDict | None = None,
    ) -> None:
        super().__init__()
        self.pyramid, self.proposal_net, self.box_head, self.fusion = pyramid, proposal_net, box_head, fusion
        self.num_classes = box_head.num_classes

    @classmethod
    def from_config(
        cls,
        model_cfg: DefectsModelConfig,
        num_classes: int,
        *,
        views: int,
        load_weights: bool = True,
        box_loss: BoxLoss = "smooth_l1",
    ) -> DefectDetector:
        """Build from the config's model section. ``load_weights=False`` (rebuilding before a checkpoint is loaded)
        reads neither ``pretrained`` nor ``weights``. The anchors of level P_k are ``anchor_sizes[k - 2]`` wide at every
        ratio of ``anchor_ratios`` (height / width). The RoI head's MLP is ``min(1024, 4 * fpn_channels)`` wide:
        torchvision's 1024 at the full preset's 256 channels, 256 at the quick preset's 64."""
        weights = Path(model_cfg.weights) if load_weights and model_cfg.weights else None
        pyramid = FeaturePyramid(
            name=model_cfg.backbone,
            out_channels=model_cfg.fpn_channels,
            pretrained=model_cfg.pretrained and load_weights,
            weights=weights,
            strides=DETECTION_STRIDES,
        )
        channels = model_cfg.fpn_channels
        rpn_loss = DetectionClassLoss(
            model_cfg.rpn_loss,
            gamma=model_cfg.rpn_focal_gamma,
            alpha=model_cfg.rpn_focal_alpha,
            weight=model_cfg.rpn_loss_weight,
        )
        roi_loss = DetectionClassLoss(
            model_cfg.roi_loss,
            gamma=model_cfg.roi_focal_gamma,
            alpha=model_cfg.roi_focal_alpha,
            weight=model_cfg.roi_loss_weight,
        )
        proposal_net = ProposalNetwork(
            in_channels=channels,
            strides=DETECTION_STRIDES,
            anchor_sizes=model_cfg.anchor_sizes,
            anchor_ratios=model_cfg.anchor_ratios,
            cls_loss=rpn_loss,
            box_loss=box_loss,
            batch_per_image=model_cfg.rpn_batch_per_image,
            post_nms_train=model_cfg.rpn_post_nms_train,
            post_nms_test=model_cfg.rpn_post_nms_test,
        )
        box_head = BoxHead(
            in_channels=channels,
            level_names=pyramid.level_names,
            num_classes=num_classes,
            cls_loss=roi_loss,
            representation=min(1024, 4 * channels),
            box_loss=box_loss,
            batch_per_image=model_cfg.roi_batch_per_image,
            score_threshold=model_cfg.score_threshold,
            detections_per_image=model_cfg.detections_per_image,
        )
        fusion = None
        if model_cfg.multiview:
            from finescale.nn.multiview import MultiViewFusion  # written beside this; imported only when asked for

            fusion = nn.ModuleDict(
                {
                    name: MultiViewFusion(
                        channels,
                        pool_tokens=model_cfg.pool_tokens,
                        layers=model_cfg.mv_layers,
                        heads=model_cfg.mv_heads,
                        mlp_ratio=model_cfg.mv_mlp_ratio,
                        max_views=views,
                        checkpointing=model_cfg.mv_checkpointing,
                    )
                    for name in pyramid.level_names
                }
            )
        return cls(pyramid=pyramid, proposal_net=proposal_net, box_head=box_head, fusion=fusion)

    # ---- the pieces ----

    def features(self, images: Tensor, view_mask: Tensor) -> Features:
        """Images (B, V, 3, H, W) in [0, 1] (normalised inside), view_mask (B, V) bool -> {"p2".."p5": (B*V, ch, h, w)},
        view-major within a tool (row b*V + v), each level fused across the views when a fusion is set."""
        b, v = images.shape[:2]
        levels = self.pyramid(images.flatten(0, 1))
        out: Features = OrderedDict()
        for name, x in zip(self.pyramid.level_names, levels, strict=True):
            if self.fusion is not None:
                x = self.fusion[name](x.view(b, v, *x.shape[1:]), view_mask).reshape(x.shape)
            out[name] = x
        return out

    @staticmethod
    def select_views(features: Features, view_mask: Tensor) -> tuple[Features, Tensor]:
        """Keep the rows of the views that exist: -> (features of N = view_mask.sum() images, their row index (N,))."""
        index = view_mask.reshape(-1).nonzero().squeeze(1)
        return OrderedDict((k, x.index_select(0, index)) for k, x in features.items()), index

    def rpn(
        self, features: Features, image_size: tuple[int, int], targets: Targets | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals [(K_i, 4)] of the N images (``rpn_post_nms_train`` of them with targets, ``_test`` without) and
        {"rpn_cls", "rpn_reg"} with targets ({} without); targets: N dicts {"boxes" (G, 4), "labels" (G,)}."""
        return self.proposal_net(list(features.values()), image_size, targets)

    def roi_losses(
        self,
        features: Features,
        proposals: list[Tensor],
        image_size: tuple[int, int],
        targets: Targets,
        *,
        background_weights: BackgroundWeights | None = None,
        regression_targets: Targets | None = None,
    ) -> dict[str, Tensor]:
        """{"roi_cls", "roi_reg"} of the proposals [(K_i, 4)] against ``targets`` (the gt boxes join the proposals).

        ``background_weights``: a callable ``(boxes, labels) -> weights`` called with the proposals sampled for the
        classification loss, [(S_i, 4)] xyxy px, and their assigned labels [(S_i,)] (0 = background), before the loss
        is reduced; it returns [(S_i,)] weights for the background term of each sample (Soft Teacher: the teacher's
        background score of each box). Only background samples take them (foreground ones keep 1), they are detached,
        and ``roi_cls`` is then normalised by the sum of the weights (Soft Teacher's ``sum / max(weights.sum(), 1)``).

        ``regression_targets``: other per-image boxes/labels for ``roi_reg`` only (Soft Teacher's reliable pseudo
        boxes); the proposals are then sampled a second time against them, as Soft Teacher does.
        """
        return self.box_head.losses(
            features,
            proposals,
            image_size,
            targets,
            background_weights=background_weights,
            regression_targets=regression_targets,
        )

    def class_scores(
        self, features: Features, boxes: list[Tensor], image_size: tuple[int, int]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Boxes [(K_i, 4)] -> foreground probabilities [(K_i, C)] and background scores [(K_i,)]: focal (sigmoid)
        1 - max_c p_c, cross-entropy the softmax's background column."""
        logits, _ = self.box_head(features, boxes, image_size)
        fg, bg = self.box_head.scores(logits)
        counts = [len(b) for b in boxes]
        return list(fg.split(counts)), list(bg.split(counts))

    def refine(
        self, features: Features, boxes: list[Tensor], labels: list[Tensor], image_size: tuple[int, int]
    ) -> list[Tensor]:
        """The RoI head's class-specific regression applied to boxes [(K_i, 4)] with labels [(K_i,)] in 1..C, clipped
        to the image -> [(K_i, 4)]."""
        _, deltas = self.box_head(features, boxes, image_size)
        flat_labels = torch.cat(labels).long()
        refined = self.box_head.decode(deltas, torch.cat(boxes))[
            torch.arange(len(flat_labels), device=flat_labels.device), flat_labels - 1
        ]
        return list(clip_boxes_to_image(refined, image_size).split([len(b) for b in boxes]))

    def detect(
        self, features: Features, image_size: tuple[int, int], proposals: list[Tensor] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections of each image, {"boxes" (D, 4), "scores" (D,), "labels" (D,) in 1..C}, from the given proposals or
        from the RPN's (test count)."""
        if proposals is None:
            proposals, _ = self.rpn(features, image_size)
        return self.box_head.detect(features, proposals, image_size)

    # ---- the supervised step and inference ----

    def loss(self, batch: dict) -> dict[str, Tensor]:
        """Supervised losses of a batch (docs/defects_design.md) -> {"loss", "rpn_cls", "rpn_reg", "roi_cls",
        "roi_reg"}; "loss" is their sum (the classification terms already carry their loss weights)."""
        images, view_mask = batch["images"], batch["view_mask"].bool()
        image_size = (int(images.shape[-2]), int(images.shape[-1]))
        features, index = self.select_views(self.features(images, view_mask), view_mask)
        if len(index) == 0:  # no view at all: a zero that keeps the graph
            zero = sum(x.sum() for x in features.values()) * 0.0
            return {"loss": zero, **{k: zero for k in LOSS_KEYS}}
        targets = [_on_device(batch["targets"][i], images.device) for i in index.tolist()]
        proposals, rpn_losses = self.rpn(features, image_size, targets)
        losses = {**rpn_losses, **self.roi_losses(features, proposals, image_size, targets)}
        return {"loss": sum(losses.values()), **losses}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, list[dict[str, Tensor]]]:
        """{"detections": B*V dicts (row b*V + v) {"boxes" (D, 4) xyxy px of the model's image, "scores" (D,),
        "labels" (D,) in 1..C}}; a missing view gets none. Runs without gradients."""
        images, view_mask = batch["images"], batch["view_mask"].bool()
        image_size = (int(images.shape[-2]), int(images.shape[-1]))
        features, index = self.select_views(self.features(images, view_mask), view_mask)
        found = self.detect(features, image_size) if len(index) else []
        empty = {
            "boxes": images.new_zeros(0, 4),
            "scores": images.new_zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64, device=images.device),
        }
        detections = [empty] * view_mask.numel()
        for row, result in zip(index.tolist(), found, strict=True):
            detections[row] = result
        return {"detections": detections}


def _on_device(target: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {
        "boxes": torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4),
        "labels": torch.as_tensor(target["labels"], dtype=torch.int64, device=device).reshape(-1),
    }
