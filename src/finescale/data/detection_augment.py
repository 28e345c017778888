"""Weak and strong views of one detection image with its boxes (Soft Teacher's student input).

The weak view is the dataset's resize + flip (:func:`hflip_boxes`). The strong view (:func:`strong_view`) is made from
it: ONE colour op drawn from a colour space (the op's probability then decides whether it applies), ONE geometric op
(translate, rotate, shear or rescale, all affine, so one 3x3 matrix maps weak-view pixels to strong-view pixels), then
1-5 erased patches (cutout). The matrix lets a caller map teacher boxes onto the student's image and student proposals
back with its inverse.

Images are (3, H, W) float in [0, 1]; boxes are (K, 4) ``xyxy`` pixels of that image, where pixel ``(i, j)`` covers
``[j, j+1] x [i, i+1]`` (torchvision's convention, so the image warp and the box maths agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

__all__ = [
    "COLOUR_SPACES",
    "ColourOp",
    "GeometrySpace",
    "StrongView",
    "affine_matrix",
    "hflip_boxes",
    "map_boxes",
    "strong_view",
]

FILL = 0.5  # grey for pixels moved in from outside and for erased patches (Soft Teacher fills 125 of 255)
MIN_BOX_SIDE = 2.0  # px: a box narrower or lower than this after the warp is no longer a target


# ------------------------------------------------------------------------------------------------------ random draws


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, device=g.device))


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high)."""
    return int(torch.randint(low, high, (), generator=g, device=g.device))


# ------------------------------------------------------------------------------------------------------ colour ops


@dataclass(frozen=True)
class ColourOp:
    """A photometric op: ``apply(image, generator)`` draws its own magnitude; it runs with probability ``prob``."""

    name: str
    prob: float
    apply: Callable[[Tensor, torch.Generator], Tensor]


def _factor_op(name: str, prob: float, adjust: Callable[[Tensor, float], Tensor], low: float, high: float) -> ColourOp:
    return ColourOp(name, prob, lambda image, g: adjust(image, _uniform(g, low, high)))


def _posterize_bits_1_to_4(image: Tensor, g: torch.Generator) -> Tensor:
    # mmdetection's Posterize: bits = ceil(U(0, 4)), i.e. 1..4 equally likely
    return F.posterize(image, _randint(g, 1, 5))


def _identity(image: Tensor, g: torch.Generator) -> Tensor:
    return image


def _level(g: torch.Generator) -> int:
    """Soft Teacher's random magnitude: a level in 1..9 of a maximum 10."""
    return _randint(g, 1, 10)


def _st_enhance(adjust: Callable[[Tensor, float], Tensor]) -> Callable[[Tensor, torch.Generator], Tensor]:
    # PIL ImageEnhance factor 0.1 + 1.8 * level / 10: 0.28 ... 1.72 ("going to 0 just destroys it")
    return lambda image, g: adjust(image, 0.1 + 1.8 * _level(g) / 10)


def _st_solarize(image: Tensor, g: torch.Generator) -> Tensor:
    return F.solarize(image, min(int(_level(g) * 256 / 10), 255) / 255)


def _st_posterize(image: Tensor, g: torch.Generator) -> Tensor:
    return F.posterize(image, 4 - int(_level(g) * 4 / 10))  # 4 bits at low levels down to 1


# The seed's targeted colour space: wider brightness/contrast for rust, stronger sharpness for chip edges.
SEED_COLOUR = (
    ColourOp("autocontrast", 0.6, lambda image, g: F.autocontrast(image)),
    ColourOp("equalize", 0.5, lambda image, g: F.equalize(image)),
    _factor_op("brightness", 0.8, F.adjust_brightness, 0.7, 1.4),
    _factor_op("contrast", 0.8, F.adjust_contrast, 0.7, 1.5),
    _factor_op("sharpness", 0.5, F.adjust_sharpness, 0.7, 2.0),
    ColourOp("posterize", 0.3, _posterize_bits_1_to_4),
)

# Soft Teacher's original strong colour space (configs/soft_teacher/base.py): one of nine, each always applied.
SOFT_TEACHER_COLOUR = (
    ColourOp("identity", 1.0, _identity),
    ColourOp("autocontrast", 1.0, lambda image, g: F.autocontrast(image)),
    ColourOp("equalize", 1.0, lambda image, g: F.equalize(image)),
    ColourOp("solarize", 1.0, _st_solarize),
    ColourOp("color", 1.0, _st_enhance(F.adjust_saturation)),
    ColourOp("contrast", 1.0, _st_enhance(F.adjust_contrast)),
    ColourOp("brightness", 1.0, _st_enhance(F.adjust_brightness)),
    ColourOp("sharpness", 1.0, _st_enhance(F.adjust_sharpness)),
    ColourOp("posterize", 1.0, _st_posterize),
)

COLOUR_SPACES: dict[str, tuple[ColourOp, ...]] = {"seed": SEED_COLOUR, "soft_teacher": SOFT_TEACHER_COLOUR}


# ---------------------------------------------------------------------------------------------------- geometric ops


@dataclass(frozen=True)
class GeometrySpace:
    """Ranges of the geometric op. Soft Teacher translates by up to 10 % and rotates/shears by up to 30 degrees; a
    narrow box (the seed's rust bands, height/width 0.44) rotated by 30 degrees gets an enclosing box about twice its
    area, a loose target, so rotation and shear are smaller here. ``scale`` stands in for Soft Teacher's random
    resize, which a fixed model input size rules out."""

    translate: float = 0.1  # fraction of the width (x) and height (y)
    rotate: float = 10.0  # degrees
    shear: float = 10.0  # degrees, on x and y
    scale: tuple[float, float] = (0.8, 1.2)  # about the image centre


GEOMETRY = GeometrySpace()


def affine_matrix(
    *,
    angle: float,
    translate: tuple[float, float],
    scale: float,
    shear: tuple[float, float],
    center: tuple[float, float],
) -> Tensor:
    """The (3, 3) float64 matrix mapping a pixel point of the input to the output of
    ``v2.functional.affine(image, angle, translate, scale, shear, center=center)``: ``T(translate) C R(angle) S(scale)
    Shy Shx C^-1`` with ``C`` the move to ``center``, shears of ``-tan(shear)`` as torchvision defines them."""

    def m(rows: list[list[float]]) -> Tensor:
        return torch.tensor(rows, dtype=torch.float64)

    a = math.radians(angle)
    rotation = m([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    shear_x = m([[1, -math.tan(math.radians(shear[0])), 0], [0, 1, 0], [0, 0, 1]])
    shear_y = m([[1, 0, 0], [-math.tan(math.radians(shear[1])), 1, 0], [0, 0, 1]])
    scaling = m([[scale, 0, 0], [0, scale, 0], [0, 0, 1]])
    (cx, cy), (tx, ty) = center, translate
    to_centre, from_centre = m([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]]), m([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]])
    return from_centre @ rotation @ scaling @ shear_y @ shear_x @ to_centre


def _geometric_params(g: torch.Generator, size: tuple[int, int], space: GeometrySpace) -> tuple[str, dict]:
    """One op drawn uniformly, with its ``v2.functional.affine`` arguments."""
    height, width = size
    params = {"angle": 0.0, "translate": (0.0, 0.0), "scale": 1.0, "shear": (0.0, 0.0)}
    kind = ("translate", "rotate", "shear", "rescale")[_randint(g, 0, 4)]
    if kind == "translate":
        t = space.translate
        params["translate"] = (_uniform(g, -t, t) * width, _uniform(g, -t, t) * height)
    elif kind == "rotate":
        params["angle"] = _uniform(g, -space.rotate, space.rotate)
    elif kind == "shear":
        params["shear"] = (_uniform(g, -space.shear, space.shear), _uniform(g, -space.shear, space.shear))
    else:
        params["scale"] = _uniform(g, *space.scale)
    return kind, params


def map_boxes(boxes: Tensor, matrix: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Boxes (K, 4) xyxy px through a (3, 3) point matrix: the box enclosing the 4 moved corners, clipped to the image
    (H, W). Returns (boxes (K, 4) of the input dtype, keep (K,) bool: still >= 2 px wide and high)."""
    height, width = image_size
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).clone(), torch.zeros(0, dtype=torch.bool, device=boxes.device)
    m = matrix.to(device=boxes.device, dtype=torch.float64)
    b = boxes.double()
    corners = torch.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], dim=1)  # (K, 4, 2)
    moved = corners @ m[:2, :2].T + m[:2, 2]
    low, high = moved.amin(dim=1), moved.amax(dim=1)
    out = torch.cat([low, high], dim=1)
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    keep = ((out[:, 2] - out[:, 0]) >= MIN_BOX_SIDE) & ((out[:, 3] - out[:, 1]) >= MIN_BOX_SIDE)
    return out.to(boxes.dtype), keep


def hflip_boxes(boxes: Tensor, width: float) -> Tensor:
    """Boxes (K, 4) xyxy px of an image of ``width`` mirrored left-right."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


# ------------------------------------------------------------------------------------------------------- strong view


def _erase_patches(image: Tensor, g: torch.Generator) -> Tensor:
    """1-5 patches set to grey; side = r * (H, W) with one r ~ U(0, 0.2) per patch (Soft Teacher's "squared")."""
    height, width = image.shape[-2:]
    image = image.clone()
    for _ in range(_randint(g, 1, 6)):
        r = _uniform(g, 0.0, 0.2)
        ph, pw = int(r * height), int(r * width)
        y, x = _randint(g, 0, height - ph + 1), _randint(g, 0, width - pw + 1)
        image[..., y : y + ph, x : x + pw] = FILL
    return image


@dataclass
class StrongView:
    """``image`` (3, H, W) in [0, 1]; ``boxes`` (K, 4) xyxy px of the input boxes mapped by ``matrix`` and clipped;
    ``keep`` (K,) bool: boxes still >= 2 px a side; ``matrix`` (3, 3) float64 weak-view px -> strong-view px;
    ``applied``: names of the ops that ran, in order (colour op if applied, geometric op, ``"erase"``)."""

    image: Tensor
    boxes: Tensor
    keep: Tensor
    matrix: Tensor
    applied: tuple[str, ...]


def strong_view(
    image: Tensor,
    boxes: Tensor,
    *,
    colour: str,
    generator: torch.Generator,
    geometry: GeometrySpace = GEOMETRY,
) -> StrongView:
    """The strong view of one weak-view image (3, H, W) float in [0, 1] with its boxes (K, 4) xyxy px: one colour op
    from ``COLOUR_SPACES[colour]`` (applied with its probability), one geometric op, 1-5 erased patches. Every draw
    comes from ``generator`` (on the image's device or the CPU), so a seed gives the same view twice. The output keeps
    the size (H, W)."""
    if colour not in COLOUR_SPACES:
        raise ValueError(f"colour must be one of {sorted(COLOUR_SPACES)}, got {colour!r}")
    applied: list[str] = []
    ops = COLOUR_SPACES[colour]
    op = ops[_randint(generator, 0, len(ops))]
    if _uniform(generator, 0.0, 1.0) < op.prob:
        image = op.apply(image, generator).clamp(0, 1)
        applied.append(op.name)

    size = (int(image.shape[-2]), int(image.shape[-1]))
    kind, params = _geometric_params(generator, size, geometry)
    image = F.affine(
        image,
        angle=params["angle"],
        translate=list(params["translate"]),
        scale=params["scale"],
        shear=list(params["shear"]),
        interpolation=InterpolationMode.BILINEAR,
        fill=FILL,
    )
    matrix = affine_matrix(center=(size[1] / 2, size[0] / 2), **params)
    applied.append(kind)
    mapped, keep = map_boxes(boxes, matrix, size)

    image = _erase_patches(image, generator)  # boxes stay: an occluded defect is still there
    applied.append("erase")
    return StrongView(image=image, boxes=mapped, keep=keep, matrix=matrix, applied=tuple(applied))
