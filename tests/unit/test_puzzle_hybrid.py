"""The hybrid's verification: a right proposal is accepted where it is (re-centred within the window), a wrong one
is rejected by its low correlation and the classical search finds the piece; learned proposals come out of the
dense score as local maxima in puzzle pixels."""

from __future__ import annotations

import numpy as np
import torch
from tests.unit.test_puzzle_classical import _iou, _textured_puzzle

from finescale.pipelines.puzzle.classical import Candidate, ClassicalMatcher
from finescale.pipelines.puzzle.predict import same_place, search_whole_puzzle, verify_guess
from finescale.pipelines.puzzle.whole_puzzle import top_places
from finescale.synth.jigsaw import make_cut
from finescale.synth.puzzles import photograph_piece


def _piece(k: int, cell: tuple[int, int], seed: int = 0):
    puzzle = _textured_puzzle(seed)
    cut = make_cut(puzzle.shape[1], puzzle.shape[0], 90, np.random.default_rng(3))
    alpha, origin = cut.mask(*cell)
    photo, _, _ = photograph_piece(puzzle, alpha, origin, k, np.random.default_rng(k))
    return puzzle, photo, cut.box(*cell)


def _guess(x: float, y: float, k: int, cell_px: float = 12.0) -> dict:
    return {"proposals": [Candidate(1.0, k, x, y)], "cell_px": cell_px, "box": [0, 0, 1, 1], "rotation": k}


def test_a_near_proposal_is_accepted_and_recentred():
    puzzle, photo, box = _piece(3, (2, 3))
    matcher = ClassicalMatcher(method="template")
    cx, cy = (box[0] + box[2]) / 2 + 11, (box[1] + box[3]) / 2 - 9  # about a score cell off
    result = verify_guess(matcher, matcher.index_of(puzzle), photo, _guess(cx, cy, 3), accept=0.6, refine_top=2)
    assert not result["fallback"] and result["rotation"] == 3 and result["confidence"] > 0.8
    assert _iou(result["box"], box) >= 0.7
    assert result["learned"] == {"box": [0, 0, 1, 1], "rotation": 3}


def test_a_wrong_proposal_falls_back_to_the_search():
    puzzle, photo, box = _piece(1, (1, 5))
    matcher = ClassicalMatcher(method="template")
    far = _guess(box[0] - 250.0 if box[0] > 300 else box[2] + 250.0, 60.0, 2)  # wrong place and wrong turn
    rejected = verify_guess(matcher, matcher.index_of(puzzle), photo, far, accept=0.6, refine_top=2)
    assert rejected["fallback"] and rejected["rotation"] == 1 and _iou(rejected["box"], box) >= 0.6
    kept = verify_guess(matcher, matcher.index_of(puzzle), photo, far, accept=0.0, refine_top=2)
    assert not kept["fallback"] and _iou(kept["box"], box) < 0.1  # accept=0 trusts the proposal: the search is off


class _Dense:
    dense, match_rotations = True, True


def test_top_places_are_local_maxima_in_puzzle_pixels():
    logits = torch.full((1, 4, 6, 8), -5.0)
    logits[0, 2, 3, 5] = 4.0  # the best: turn 2, cell (row 3, col 5)
    logits[0, 2, 3, 4] = 3.5  # its neighbour: not a local maximum
    logits[0, 0, 1, 1] = 2.0  # a separate peak at turn 0
    places = top_places(_Dense(), {"logits": logits}, {}, torch.zeros(1, 4), 2, cell_px=10.0)[0]
    assert [(p.rotation, p.x, p.y) for p in places] == [(2, 55.0, 35.0), (0, 15.0, 15.0)]
    assert places[0].score == 4.0


def test_hybrid_estimates_each_mask_once_for_the_cutout_and_the_verification(monkeypatch):
    """The model's cutout and the template verification use one mask per piece: estimating it (GrabCut) is the
    costliest step they share."""
    from types import SimpleNamespace

    from finescale.pipelines.puzzle import piece_photo, predict
    from finescale.pipelines.puzzle.config import PuzzleConfig
    from finescale.pipelines.puzzle.model import PuzzleLocator

    torch.manual_seed(0)
    cfg = PuzzleConfig(model={"fpn_channels": 16}, data={"piece_input": "cutout"})
    hybrid = predict.HybridPredictor(SimpleNamespace(cfg=cfg, model=PuzzleLocator.from_config(cfg)), proposals=2)
    real, calls = piece_photo.estimate_piece_mask, []

    def counted(photo, *args, **kwargs):
        calls.append(photo.shape)
        return real(photo, *args, **kwargs)

    monkeypatch.setattr(piece_photo, "estimate_piece_mask", counted)
    puzzle, photo_a, box_a = _piece(0, (2, 2))
    _, photo_b, _ = _piece(2, (3, 5))
    results = hybrid.locate(puzzle, [photo_a, photo_b])
    assert len(calls) == 2  # one per piece, not one more for the cutout
    assert len(results) == 2 and _iou(results[0]["box"], box_a) >= 0.6  # the fallback still finds it
    assert set(hybrid.stage_seconds) == {"mask", "learned", "verify"}


def test_same_place_needs_the_same_turn_and_both_axes_within_the_tolerance():
    a = Candidate(0.9, 1, 100.0, 50.0)
    assert same_place(a, Candidate(0.2, 1, 104.0, 46.0), 4.0)
    assert not same_place(a, Candidate(0.9, 2, 100.0, 50.0), 4.0)  # another turn
    assert not same_place(a, Candidate(0.9, 1, 104.5, 50.0), 4.0)
    assert not same_place(a, Candidate(0.9, 1, 100.0, 45.0), 4.0)


def _counting_refine(matcher, monkeypatch):
    refined = []
    real = matcher.refine

    def counted(index, piece, candidates, pad=None):
        refined.extend(candidates)
        return real(index, piece, candidates, pad)

    monkeypatch.setattr(matcher, "refine", counted)
    return refined


def test_the_fallback_skips_places_already_refined_and_stops_once_one_is_accepted(monkeypatch):
    puzzle, photo, box = _piece(1, (1, 5))
    matcher = ClassicalMatcher(method="template")
    index, piece = matcher.index_of(puzzle), matcher.prepare(photo)
    best = matcher.coarse_candidates(index, piece)[0]
    assert best.rotation == 1
    twin = Candidate(best.score, best.rotation, best.x + piece.factor, best.y - 1.0)  # the same place at another scale
    elsewhere = [Candidate(0.5, 1, 40.0, 40.0), Candidate(0.4, 3, best.x, best.y)]
    monkeypatch.setattr(matcher, "coarse_candidates", lambda index, piece: [best, twin, *elsewhere])
    nothing = {"box": [0.0, 0.0, 1.0, 1.0], "rotation": 0, "confidence": 0.0}

    refined = _counting_refine(matcher, monkeypatch)
    everything = search_whole_puzzle(matcher, index, piece, nothing, refined=[], accept=2.0)  # never accepted
    assert refined == [best, *elsewhere] and _iou(everything["box"], box) >= 0.6

    refined.clear()
    search_whole_puzzle(matcher, index, piece, nothing, refined=[twin], accept=2.0)
    assert refined == elsewhere  # the place refined before is not refined again

    refined.clear()
    first = search_whole_puzzle(matcher, index, piece, nothing, refined=[], accept=0.5)
    assert refined == [best] and first["box"] == everything["box"]  # accepted at once: the rest is not refined
