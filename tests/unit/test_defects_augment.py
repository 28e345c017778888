"""Tests for finescale.data.detection_augment: affine box maths against torchvision, the strong view's ops."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from finescale.data.detection_augment import (
    COLOUR_SPACES,
    FILL,
    GeometrySpace,
    _erase_patches,
    affine_matrix,
    hflip_boxes,
    map_boxes,
    strong_view,
)

NO_GEOMETRY = GeometrySpace(translate=0.0, rotate=0.0, shear=0.0, scale=(1.0, 1.0))


def _boxes(g: torch.Generator, n: int, height: int, width: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width - 4.0, height - 4.0])
    wh = 2 + torch.rand(n, 2, generator=g) * torch.tensor([width / 2, height / 2])
    return torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(width), float(height)]))], dim=1)


@pytest.mark.parametrize("seed", range(6))
def test_map_boxes_matches_torchvision_affine(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    height, width = 72, 24
    boxes = _boxes(g, 7, height, width)
    angle, scale = (
        float(torch.empty(()).uniform_(-40, 40, generator=g)),
        float(torch.empty(()).uniform_(0.6, 1.5, generator=g)),
    )
    translate = [float(v) for v in torch.empty(2).uniform_(-15, 15, generator=g)]
    shear = [float(v) for v in torch.empty(2).uniform_(-25, 25, generator=g)]
    expected = F.affine(
        tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        angle=angle,
        translate=translate,
        scale=scale,
        shear=shear,
    )
    matrix = affine_matrix(angle=angle, translate=tuple(translate), scale=scale, shear=tuple(shear), center=(12, 36))
    mapped, keep = map_boxes(boxes, matrix, (height, width))
    torch.testing.assert_close(mapped, expected.as_subclass(torch.Tensor), atol=1e-4, rtol=0)
    side = torch.minimum(mapped[:, 2] - mapped[:, 0], mapped[:, 3] - mapped[:, 1])
    assert torch.equal(keep, side >= 2)


def test_map_boxes_hand_cases() -> None:
    # 90 degrees about the centre (5, 5) of a 10 x 10 image: (x, y) -> (10 - y, x)
    quarter = affine_matrix(angle=90.0, translate=(0.0, 0.0), scale=1.0, shear=(0.0, 0.0), center=(5.0, 5.0))
    boxes, keep = map_boxes(torch.tensor([[0.0, 0.0, 2.0, 4.0]]), quarter, (10, 10))
    torch.testing.assert_close(boxes, torch.tensor([[6.0, 0.0, 10.0, 2.0]]), atol=1e-5, rtol=0)
    # moved 2 px left: the box keeps 1 px inside the image and is dropped; the other stays
    shift = affine_matrix(angle=0.0, translate=(-2.0, 0.0), scale=1.0, shear=(0.0, 0.0), center=(5.0, 5.0))
    boxes, keep = map_boxes(torch.tensor([[0.0, 0.0, 3.0, 3.0], [4.0, 4.0, 8.0, 9.0]]), shift, (10, 10))
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 1.0, 3.0], [2.0, 4.0, 6.0, 9.0]]))
    assert keep.tolist() == [False, True]
    empty, keep = map_boxes(torch.zeros(0, 4), shift, (10, 10))
    assert empty.shape == (0, 4) and keep.shape == (0,)
    torch.testing.assert_close(
        hflip_boxes(torch.tensor([[1.0, 2.0, 4.0, 6.0]]), 10), torch.tensor([[6.0, 2.0, 9.0, 6.0]])
    )


@pytest.mark.parametrize(
    "params",
    [
        {"angle": 0.0, "translate": (3.0, -5.0), "scale": 1.0, "shear": (0.0, 0.0)},
        {"angle": 20.0, "translate": (0.0, 0.0), "scale": 1.0, "shear": (0.0, 0.0)},
        {"angle": 0.0, "translate": (0.0, 0.0), "scale": 1.3, "shear": (0.0, 0.0)},
        {"angle": 0.0, "translate": (0.0, 0.0), "scale": 1.0, "shear": (10.0, -8.0)},
    ],
)
def test_matrix_moves_image_content_where_the_warp_does(params: dict) -> None:
    """A bright spot's centroid after v2.functional.affine lands where the matrix sends it (sub-pixel)."""
    height, width = 64, 40
    image = torch.zeros(1, height, width)
    image[0, 20:26, 12:17] = 1.0  # centre (14.5, 23.0) in pixel-corner coordinates
    warped = F.affine(
        image,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        interpolation=InterpolationMode.BILINEAR,
    )[0]
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centroid = torch.stack([(warped * xs).sum(), (warped * ys).sum()]) / warped.sum()
    matrix = affine_matrix(center=(width / 2, height / 2), **params)
    expected = (matrix @ torch.tensor([14.5, 23.0, 1.0], dtype=torch.float64))[:2]
    torch.testing.assert_close(centroid.double(), expected, atol=0.15, rtol=0)


@pytest.mark.parametrize("colour", sorted(COLOUR_SPACES))
def test_colour_ops_keep_size_and_range_and_never_move_boxes(colour: str) -> None:
    g = torch.Generator().manual_seed(3)
    image = torch.rand(3, 48, 16, generator=g)
    boxes = _boxes(g, 5, 48, 16)
    for op in COLOUR_SPACES[colour]:
        out = op.apply(image, torch.Generator().manual_seed(0))
        assert out.shape == image.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    for seed in range(40):
        view = strong_view(
            image, boxes, colour=colour, generator=torch.Generator().manual_seed(seed), geometry=NO_GEOMETRY
        )
        torch.testing.assert_close(view.matrix, torch.eye(3, dtype=torch.float64))
        assert torch.equal(view.boxes, boxes) and view.keep.all()


def test_same_seed_same_view() -> None:
    image, boxes = torch.rand(3, 72, 24), torch.tensor([[2.0, 10.0, 20.0, 30.0], [5.0, 40.0, 9.0, 70.0]])
    a, b, c = (strong_view(image, boxes, colour="seed", generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes) and torch.equal(a.matrix, b.matrix)
    assert a.applied == b.applied and a.image.shape == (3, 72, 24)
    assert not torch.equal(a.image, c.image)
    torch.testing.assert_close(a.boxes, map_boxes(boxes, a.matrix, (72, 24))[0])


@pytest.mark.parametrize("colour", sorted(COLOUR_SPACES))
def test_each_op_applies_at_its_probability(colour: str) -> None:
    ops = COLOUR_SPACES[colour]
    g = torch.Generator().manual_seed(11)
    image, boxes, n = torch.rand(3, 12, 8, generator=g), torch.tensor([[1.0, 1.0, 6.0, 10.0]]), 1600
    counts: Counter = Counter()
    for _ in range(n):
        counts.update(strong_view(image, boxes, colour=colour, generator=g).applied)
    assert counts["erase"] == n
    for op in ops:  # drawn 1 in len(ops), then applied with op.prob
        p = op.prob / len(ops)
        assert abs(counts[op.name] - n * p) < 4 * (n * p * (1 - p)) ** 0.5, (op.name, counts[op.name], n * p)
    for kind in ("translate", "rotate", "shear", "rescale"):
        assert abs(counts[kind] - n / 4) < 4 * (n * 0.25 * 0.75) ** 0.5, (kind, counts[kind])


def test_erased_patches_are_grey_and_bounded() -> None:
    g = torch.Generator().manual_seed(5)
    fractions = []
    for _ in range(400):
        out = _erase_patches(torch.zeros(3, 100, 50), g)
        grey = (out == FILL).all(dim=0)
        fractions.append(grey.float().mean().item())
        assert ((out == 0) | (out == FILL)).all()
    # 1-5 patches of side r * (H, W), r ~ U(0, 0.2): at most 5 * 0.04 of the image, about 3 * 0.0133 on average
    assert max(fractions) <= 0.2 and 0.025 < sum(fractions) / len(fractions) < 0.045


def test_strong_view_on_the_device_of_the_image() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    image, boxes = torch.rand(3, 72, 24, device="cuda"), torch.tensor([[2.0, 10.0, 20.0, 30.0]], device="cuda")
    view = strong_view(image, boxes, colour="soft_teacher", generator=torch.Generator().manual_seed(0))
    assert view.image.device == image.device and view.boxes.device == image.device
