"""Correlating a template's features (a puzzle piece) with a search image's features (the puzzle).

Shapes: B = batch, K = templates per sample (e.g. the 4 rotations of a piece), C = channels, (h, w) = template map,
(H, W) = search map. A search batch of 1 is broadcast against every template sample, so one encoded puzzle serves
many pieces. Outputs are cosine-like similarities in [-1, 1]; :class:`LearnableTemperature` turns them into logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def _as_templates(piece_feat: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) or (B, K, C, h, w) -> (B, K, C, h, w)."""
    if piece_feat.dim() == 4:
        return piece_feat[:, None]
    if piece_feat.dim() != 5:
        raise ValueError(f"piece features must be (B, C, h, w) or (B, K, C, h, w), got {tuple(piece_feat.shape)}")
    return piece_feat


def _check_batches(templates: torch.Tensor, puzzle_feat: torch.Tensor) -> None:
    if puzzle_feat.shape[0] not in (1, templates.shape[0]) or puzzle_feat.shape[1] != templates.shape[2]:
        raise ValueError(f"cannot correlate templates {tuple(templates.shape)} with {tuple(puzzle_feat.shape)}")


def pooled_correlation(piece_feat: torch.Tensor, puzzle_feat: torch.Tensor) -> torch.Tensor:
    """The seed's correlation: cosine between the piece's mean descriptor and every puzzle feature vector.

    (B, C, h, w) or (B, K, C, h, w), and (B or 1, C, H, W) -> (B, K, H, W) with K = 1 for a 4-D piece.
    """
    templates = _as_templates(piece_feat)
    _check_batches(templates, puzzle_feat)
    descriptors = F.normalize(templates.mean(dim=(3, 4)), dim=2)  # (B, K, C)
    puzzle = F.normalize(puzzle_feat, dim=1)
    if puzzle.shape[0] == 1:
        return torch.einsum("bkc,chw->bkhw", descriptors, puzzle[0])
    return torch.einsum("bkc,bchw->bkhw", descriptors, puzzle)


def same_padding(h: int, w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps the search size; the template's centre cell
    ((h - 1) // 2, (w - 1) // 2) lands on the output cell (odd sizes: exactly the centre)."""
    top, left = (h - 1) // 2, (w - 1) // 2
    return left, w - 1 - left, top, h - 1 - top


def dense_correlation(
    piece_feat: torch.Tensor, puzzle_feat: torch.Tensor, *, max_rows: int | None = None, zero_mean: bool = False
) -> torch.Tensor:
    """Normalised cross-correlation of the piece's whole spatial map with every puzzle position.

    ``out[b, k, y, x] = <T_bk, P_b[window at (y, x)]> / (|T_bk| |P_b[window]|)``: the template is the kernel of a
    (per-sample, grouped) conv2d with 'same' padding, so the peak sits at the puzzle cell under the template's centre
    (see :func:`same_padding`), and values lie in [-1, 1]. Shapes as :func:`pooled_correlation`.

    ``max_rows`` computes the output in bands of that many rows, bounding the working memory of the convolution
    on large search maps (whole-puzzle inference); the result is the same.

    ``zero_mean`` subtracts each channel's mean over the template and over each puzzle window first (zero-normalised
    cross-correlation, OpenCV's TM_CCOEFF_NORMED): an offset shared by all features then no longer lifts every
    position's score alike.
    """
    templates = _as_templates(piece_feat)
    _check_batches(templates, puzzle_feat)
    b, k, c, h, w = templates.shape
    if zero_mean:  # a zero-mean kernel ignores the window's mean, so only the window's norm needs centring
        templates = templates - templates.mean(dim=(3, 4), keepdim=True)
    kernels = F.normalize(templates.flatten(2), dim=2).view(b * k, c, h, w)
    padded = F.pad(puzzle_feat, same_padding(h, w))
    # |P window| for every position: a box filter over the channel-summed squares (shared by all templates)
    window_energy = F.avg_pool2d(padded.square().sum(dim=1, keepdim=True), (h, w), stride=1) * (h * w)
    if zero_mean:
        means = F.avg_pool2d(padded, (h, w), stride=1)
        window_energy = window_energy - means.square().sum(dim=1, keepdim=True) * (h * w)
    norms = window_energy.clamp_min(EPS * EPS).sqrt()  # (B or 1, 1, H, W)
    broadcast = puzzle_feat.shape[0] == 1
    height = puzzle_feat.shape[2]
    step = height if not max_rows else max(1, max_rows)
    bands = []
    for top in range(0, height, step):
        rows = padded[:, :, top : min(height, top + step) + h - 1]
        if broadcast:  # one puzzle, many templates: a plain conv with B * K output channels
            out = F.conv2d(rows, kernels)
        else:  # sample i's templates only see sample i's puzzle: a grouped conv, in channels-last memory, where
            # its backward is about 5x faster on CPU (oneDNN) than in the default layout; the same sums
            grouped = rows.reshape(1, -1, *rows.shape[2:]).contiguous(memory_format=torch.channels_last)
            out = F.conv2d(grouped, kernels.contiguous(memory_format=torch.channels_last), groups=b)
        bands.append(out.view(b, k, *out.shape[2:]))
    return torch.cat(bands, dim=2) / norms


def rot90_stack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) square images or feature maps -> (B, 4, C, h, w) where entry ``r`` is ``x`` turned back by r
    quarter turns: if ``x = rot90(region, r)`` (numpy/torch convention on the last two axes), entry r equals region,
    so correlating all four with the puzzle scores each rotation hypothesis."""
    return torch.stack([torch.rot90(x, -r, dims=(-2, -1)) for r in range(4)], dim=1)


class LearnableTemperature(nn.Module):
    """Turns similarities into logits with one learned scalar per pyramid level.

    ``divide=True`` is the seed's form, ``x / t`` with ``t`` initialised to ``initial`` (the seed uses sqrt(C));
    otherwise ``x * exp(s)`` with ``exp(s)`` initialised to ``initial``, which stays positive and learns a scale
    of any size at an even pace.
    """

    def __init__(self, initial: float, *, divide: bool = False) -> None:
        super().__init__()
        if initial <= 0:
            raise ValueError(f"temperature must be positive, got {initial}")
        self.divide = divide
        self.value = nn.Parameter(torch.tensor(float(initial) if divide else math.log(initial)))

    @property
    def scale(self) -> torch.Tensor:
        """The factor that multiplies the similarities."""
        return 1.0 / self.value if self.divide else self.value.exp()

    def forward(self, similarity: torch.Tensor) -> torch.Tensor:
        return similarity * self.scale
