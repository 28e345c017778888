"""Soft Teacher's unsupervised step (Xu et al. 2021, "End-to-End Semi-Supervised Object Detection with Soft Teacher").

The EMA teacher detects on the weak view of an unlabeled image; its confident detections become pseudo boxes, which
are carried into a strongly augmented view that the student learns from:

- the student's RPN learns the pseudo boxes of score >= ``rpn_pseudo_thr``;
- its RoI classifier learns those of score >= ``cls_pseudo_thr``, and each background proposal counts by the
  teacher's own background score for it (the *soft teacher*: a proposal the teacher is unsure about, likely a missed
  object, hardly counts as background);
- its RoI regression learns only the pseudo boxes whose position the teacher is sure of (*box jittering*: the
  teacher's refinements of jittered copies of the box agree, relative std < ``jitter_max_std``).

Boxes are ``xyxy`` in pixels of the model's input image; labels ``1..C``. ``matrix`` is the 3x3 affine map from weak
to strong pixel coordinates that ``data.detection_augment.strong_view`` returns with each strong view.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from finescale.pipelines.defects.config import SemiConfig

Refine = Callable[[Tensor, Tensor], Tensor]  # (M, 4) boxes, (M,) labels -> (M, 4) refined boxes

# ------------------------------------------------------------------ pure parts


def filter_pseudo_labels(detections: list[dict[str, Tensor]], score_thr: float) -> list[dict[str, Tensor]]:
    """Per image, the detections of score >= ``score_thr``: dicts of ``boxes`` (K, 4), ``labels`` (K,), ``scores``
    (K,), with every other per-box entry of the input (e.g. ``rel_std``) filtered alike."""
    kept = []
    for det in detections:
        keep = det["scores"] >= score_thr
        kept.append({k: v[keep] for k, v in det.items() if isinstance(v, Tensor) and v.shape[:1] == keep.shape})
    return kept


def box_sizes(boxes: Tensor) -> Tensor:
    """(K, 4) xyxy -> (K, 4) the (w, h, w, h) each coordinate varies with, at least 1 px (degenerate boxes)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1.0)
    return wh.repeat(1, 2)


def jitter_boxes(boxes: Tensor, n: int, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """Soft Teacher's box jitter: ``n`` copies of each box, each coordinate moved by an offset ~ N(0, scale * w) for
    x1, x2 and N(0, scale * h) for y1, y2. (K, 4) -> (K * n, 4), box-major: rows ``k*n .. k*n + n - 1`` are box k."""
    device = generator.device if generator is not None else boxes.device
    noise = torch.randn(boxes.shape[0], n, 4, generator=generator, device=device).to(boxes.device, boxes.dtype)
    return (boxes[:, None, :] + noise * scale * box_sizes(boxes)[:, None, :]).reshape(-1, 4)


def box_reliability(
    boxes: Tensor,
    labels: Tensor,
    refine: Refine,
    *,
    n: int = 10,
    scale: float = 0.06,
    max_std: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """How sure the teacher is of each box's position. ``refine`` maps (K*n, 4) jittered boxes with their (K*n,)
    labels to refined boxes (the teacher's class-specific regression). Per box: the std over its n refined copies
    of each coordinate, divided by the box's width (x) or height (y), averaged over the 4 coordinates -> ``rel_std``
    (K,); ``keep`` (K,) bool = rel_std < max_std. A refiner that ignores its input keeps every box (rel_std 0); one
    that returns its input gives rel_std ~ scale."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=boxes.device), boxes.new_zeros(0)
    jittered = jitter_boxes(boxes, n, scale, generator)
    refined = refine(jittered, labels.repeat_interleave(n)).reshape(boxes.shape[0], n, 4)
    rel_std = (refined.std(dim=1) / box_sizes(boxes)).mean(dim=1)
    return rel_std < max_std, rel_std


def soft_background_weights(background_scores: Tensor, is_background: Tensor) -> Tensor:
    """Per-proposal loss weights (K,): 1 for foreground proposals; for background ones the teacher's background score,
    rescaled so that the background weights sum to the number of background proposals.

    The rescaling keeps the loss scale of plain training (the background part weighs in as much as with hard labels,
    and the foreground / background balance of the sampler holds); only how it is shared among the background
    proposals changes. That is the paper's normalisation, w_j = r_j / sum_k r_k, times N_bg since our classification
    losses average over samples. With no background score at all (sum 0) the weights stay 1."""
    weights = torch.ones_like(background_scores)
    scores = background_scores[is_background]
    total = scores.sum()
    if scores.numel() and total > 0:
        weights[is_background] = scores * (scores.numel() / total)
    return weights


def pseudo_label_stats(
    detections: list[dict[str, Tensor]], pseudo: list[dict[str, Tensor]], num_classes: int | None = None
) -> dict[str, float]:
    """Monitoring numbers: ``teacher_detections`` (above the detector's score threshold) and ``pseudo_boxes`` per
    image, ``kept_ratio`` = pseudo boxes / teacher detections (the seed's "teacher kept ratio"), and with
    ``num_classes`` the pseudo boxes of each label c as ``pseudo_class_<c>`` (totals)."""
    n_images = max(len(detections), 1)
    n_det = sum(int(d["boxes"].shape[0]) for d in detections)
    n_pseudo = sum(int(p["boxes"].shape[0]) for p in pseudo)
    stats = {
        "teacher_detections": n_det / n_images,
        "pseudo_boxes": n_pseudo / n_images,
        "kept_ratio": n_pseudo / n_det if n_det else 0.0,
    }
    if num_classes is not None:
        labels = [p["labels"].reshape(-1).cpu() for p in pseudo]
        counts = torch.bincount(torch.cat(labels).long(), minlength=num_classes + 1) if labels else None
        for c in range(1, num_classes + 1):
            stats[f"pseudo_class_{c}"] = float(counts[c]) if counts is not None else 0.0
    return stats


# ------------------------------------------------------------------ the unsupervised step

StrongViewFn = Callable[..., Any]  # data.detection_augment.strong_view's signature


def select_images(features: OrderedDict[str, Tensor], index: Tensor) -> OrderedDict[str, Tensor]:
    """The feature maps of the images at ``index`` (N,) of the (B*V, ...) maps: each level (N, C, h, w)."""
    return OrderedDict((name, level.index_select(0, index)) for name, level in features.items())


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (frozen batch-norm statistics, no dropout) for the block, its own mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def as_target(pseudo: dict[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
    """The detector target ({"boxes", "labels"}) of the pseudo boxes where ``keep`` (K,) is True."""
    return {"boxes": pseudo["boxes"][keep], "labels": pseudo["labels"][keep]}


def add_reliability(
    teacher: nn.Module,
    features: OrderedDict[str, Tensor],
    pseudo: list[dict[str, Tensor]],
    size: tuple[int, int],
    *,
    semi: SemiConfig,
    generator: torch.Generator | None,
) -> None:
    """Adds ``rel_std`` (K_i,) to each image's pseudo boxes (:func:`box_reliability` through the teacher's ``refine``),
    all images in one ``refine`` call: jitters are box-major, so each image's rows are one contiguous block."""
    counts = [int(p["boxes"].shape[0]) for p in pseudo]

    def refine(boxes: Tensor, labels: Tensor) -> Tensor:
        blocks = [c * semi.jitter_n for c in counts]
        return torch.cat(teacher.refine(features, list(boxes.split(blocks)), list(labels.split(blocks)), size))

    boxes = torch.cat([p["boxes"] for p in pseudo])
    labels = torch.cat([p["labels"] for p in pseudo])
    _, rel_std = box_reliability(
        boxes,
        labels,
        refine,
        n=semi.jitter_n,
        scale=semi.jitter_scale,
        max_std=semi.jitter_max_std,
        generator=generator,
    )
    for p, r in zip(pseudo, rel_std.split(counts), strict=True):
        p["rel_std"] = r


def zero_losses(student: nn.Module) -> dict[str, Tensor]:
    """All four losses 0, attached to the student's graph (DDP needs every rank to backpropagate through it)."""
    zero = sum(p.sum() for p in student.parameters() if p.requires_grad) * 0.0
    return {k: zero for k in ("unsup_rpn_cls", "unsup_rpn_reg", "unsup_roi_cls", "unsup_roi_reg")}


def unsupervised_losses(
    student: nn.Module,
    teacher: nn.Module,
    weak_batch: dict[str, Any],
    *,
    semi: SemiConfig,
    colour: str,
    generator: torch.Generator | None = None,
    augment: StrongViewFn | None = None,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Soft Teacher's losses on an unlabeled batch (the weak view, in the batch layout of ``docs/defects_design.md``).

    Returns the unweighted losses ``unsup_rpn_cls``, ``unsup_rpn_reg``, ``unsup_roi_cls``, ``unsup_roi_reg`` (the
    task multiplies their sum by ``semi.unsup_weight``) and monitoring numbers (see :func:`pseudo_label_stats`, plus
    ``reliable_share`` of pseudo boxes, and the RPN / classification / regression targets per image). Views with
    ``view_mask`` False take part in the multi-view fusion as the zero images they are, but contribute no loss.
    ``augment`` stands in for ``data.detection_augment.strong_view`` (tests); ``colour`` is its colour space.
    """
    if augment is None:
        from finescale.data.detection_augment import strong_view as augment
    images, view_mask = weak_batch["images"], weak_batch["view_mask"].bool()
    n_groups, n_views = images.shape[:2]
    size = (int(images.shape[-2]), int(images.shape[-1]))
    present = view_mask.reshape(-1).nonzero().squeeze(1)
    if present.numel() == 0:
        return zero_losses(student), {}

    # (a) the teacher on the weak views: detections, pseudo boxes, and how sure it is of each box's position
    with torch.no_grad(), eval_mode(teacher):
        teacher_features = select_images(teacher.features(images, view_mask), present)
        detections = teacher.detect(teacher_features, size)
        pseudo = filter_pseudo_labels(detections, semi.pseudo_score_thr)
        add_reliability(teacher, teacher_features, pseudo, size, semi=semi, generator=generator)
    stats = pseudo_label_stats(detections, pseudo, getattr(student, "num_classes", None))

    # (b) strong views of the present images, their pseudo boxes carried along (boxes leaving the view are dropped)
    strong = images.reshape(n_groups * n_views, *images.shape[2:]).clone()
    matrices, strong_pseudo = [], []
    for i, p in zip(present.tolist(), pseudo, strict=True):
        view = augment(strong[i], p["boxes"], colour=colour, generator=generator)
        strong[i] = view.image.to(strong)
        matrices.append(torch.as_tensor(view.matrix, dtype=torch.float64, device=strong.device))
        keep = view.keep.to(p["boxes"].device)
        boxes = view.boxes if view.boxes.shape[0] == int(keep.sum()) else view.boxes[keep]
        strong_pseudo.append({**{k: v[keep] for k, v in p.items() if k != "boxes"}, "boxes": boxes.to(p["boxes"])})

    # (c) the student on the strong views; its RPN learns the most confident pseudo boxes
    features = select_images(student.features(strong.reshape(images.shape), view_mask), present)
    rpn_targets = [as_target(p, p["scores"] >= semi.rpn_pseudo_thr) for p in strong_pseudo]
    proposals, rpn_losses = student.rpn(features, size, rpn_targets)

    # (d) RoI classification against the confident pseudo boxes, background weighted by the teacher; regression only
    # towards the boxes the teacher is sure of
    cls_targets = [as_target(p, p["scores"] >= semi.cls_pseudo_thr) for p in strong_pseudo]
    reg_targets = [as_target(p, p["rel_std"] < semi.jitter_max_std) for p in strong_pseudo]
    background_weights = None
    if semi.soft_background:

        def background_weights(boxes: list[Tensor], labels: list[Tensor]) -> list[Tensor]:
            # called by the RoI head with its sampled boxes [(S_i, 4)] (strong frame) and labels [(S_i,)], 0 = bg
            with torch.no_grad(), eval_mode(teacher):
                scores = teacher_background_scores(teacher, teacher_features, boxes, matrices, size)
            return [soft_background_weights(bg, lab == 0) for bg, lab in zip(scores, labels, strict=True)]

    roi_losses = student.roi_losses(
        features, proposals, size, cls_targets, background_weights=background_weights, regression_targets=reg_targets
    )

    # (e) monitoring
    n_pseudo = sum(int(p["boxes"].shape[0]) for p in pseudo)
    n_images = len(strong_pseudo)
    n_reliable = sum(int((p["rel_std"] < semi.jitter_max_std).sum()) for p in pseudo)
    stats["reliable_share"] = n_reliable / n_pseudo if n_pseudo else 0.0
    stats["rpn_targets"] = sum(int(t["boxes"].shape[0]) for t in rpn_targets) / n_images
    stats["cls_targets"] = sum(int(t["boxes"].shape[0]) for t in cls_targets) / n_images
    stats["reg_targets"] = sum(int(t["boxes"].shape[0]) for t in reg_targets) / n_images
    losses = {
        "unsup_rpn_cls": rpn_losses["rpn_cls"],
        "unsup_rpn_reg": rpn_losses["rpn_reg"],
        "unsup_roi_cls": roi_losses["roi_cls"],
        "unsup_roi_reg": roi_losses["roi_reg"],
    }
    return losses, stats


def teacher_background_scores(
    teacher: nn.Module,
    teacher_features: OrderedDict[str, Tensor],
    boxes: list[Tensor],
    matrices: list[Tensor],
    size: tuple[int, int],
) -> list[Tensor]:
    """The teacher's background score (K_i,) of each student box [(K_i, 4)] of the strong views: each box goes back
    into its weak view (the inverse of its weak -> strong ``matrix``, clipped to the image) and the teacher scores it
    there. A box that lands wholly outside the weak image (the strong view's padding) scores 1: surely background."""
    from finescale.data.detection_augment import map_boxes

    weak_boxes, outside = [], []
    for b, matrix in zip(boxes, matrices, strict=True):
        back, _ = map_boxes(b.detach(), torch.linalg.inv(matrix.double()), size)  # clipped to the weak image
        weak_boxes.append(back)
        outside.append(((back[:, 2:] - back[:, :2]) < 1e-3).any(dim=1))
    _, background = teacher.class_scores(teacher_features, weak_boxes, size)
    return [torch.where(out, torch.ones_like(bg), bg) for bg, out in zip(background, outside, strict=True)]
