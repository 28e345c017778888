"""A piece photo made ready for matching: the mask separates the piece from the table, and the cutout (the learned
model's input) is the straightened piece alone on a plain square."""

from __future__ import annotations

import numpy as np
import pytest
from tests.unit.test_puzzle_classical import _textured_puzzle

from finescale.pipelines.puzzle.piece_photo import cut_out_piece, estimate_piece_mask, skew_angle
from finescale.synth.jigsaw import make_cut
from finescale.synth.puzzles import photograph_piece


def test_piece_mask_separates_the_table():
    puzzle = _textured_puzzle(1)
    cut = make_cut(puzzle.shape[1], puzzle.shape[0], 80, np.random.default_rng(0))
    for i, cell in enumerate([(1, 1), (2, 3), (3, 6)]):
        alpha, origin = cut.mask(*cell)
        photo, cover, _ = photograph_piece(puzzle, alpha, origin, i, np.random.default_rng(10 + i))
        mask, truth = estimate_piece_mask(photo), cover > 0.5
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85


def test_cutout_is_the_straightened_piece_on_its_mean_colour():
    """The learned model's piece input: the table is gone (a plain border of the piece's mean colour), the few
    degrees of turn are undone, and the content is the piece's (matches the region under its box)."""
    puzzle = _textured_puzzle(3)
    cut = make_cut(puzzle.shape[1], puzzle.shape[0], 90, np.random.default_rng(5))
    alpha, origin = cut.mask(2, 3)
    photo, cover, angle = photograph_piece(puzzle, alpha, origin, 0, np.random.default_rng(6))
    out = cut_out_piece(photo)
    side = out.shape[0]
    x1, y1, x2, y2 = cut.box(2, 3)
    assert out.shape == (side, side, 3) and out.dtype == np.uint8
    assert side == pytest.approx(max(x2 - x1, y2 - y1), rel=0.15)  # no table margin left
    border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    colours, counts = np.unique(border, axis=0, return_counts=True)
    fill = colours[np.argmax(counts)]
    assert counts.max() > 0.5 * len(border)  # one plain colour around the piece, which touches it only at its extremes
    # straightened: the piece's outline in the cutout has axis-aligned sides (no residual skew)
    assert abs(skew_angle(np.any(out != fill, axis=2))) < 1.5
    # the photo's table texture does not survive: it differs from the plain fill
    table = photo[~estimate_piece_mask(photo)]
    assert np.abs(table.astype(int) - fill).mean() > 5
