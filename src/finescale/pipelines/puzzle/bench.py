"""Bench of the ``puzzle`` pipeline, all on the same data and budget:

* ``baseline``: the architecture the seed diagnoses (pooled correlation -> box regression, rotation classifier,
  puzzle squeezed to 256);
* ``recipe``: the seed's plan (the same heads on a 512 puzzle through the FPN), and ``recipe-768`` at a higher
  puzzle resolution, the seed's first fallback;
* ``default``: finescale's default (dense correlation of the piece's feature map as classification over positions,
  rotation by matching the 4 quarter turns, piece and puzzle at one pixel scale, the piece cut out of its photo,
  256-px training windows), and the default with separate backbones, with the piece photo as taken, with 128-px
  windows, with the seed's fixed 512 puzzle, and with the seed's rotation classifier;
* ``classical`` and ``classical-template`` (extra rows, no training): SIFT + RANSAC, else masked template matching;
  and template matching only.

Every trained row is evaluated with the default method, ``hybrid`` (the model's proposals verified by template
matching, the classical search as fallback); ``puzzle_learned_*`` are the same model's placements on its own, and
``puzzle_fallback_rate`` the share of pieces whose proposals failed verification.
"""

from __future__ import annotations

from typing import Any

from finescale.pipelines.puzzle.config import PuzzleConfig

METRICS = (
    "puzzle_both_accuracy",
    "puzzle_position_accuracy",
    "puzzle_rotation_accuracy",
    "puzzle_ms_per_piece",
    "puzzle_learned_both_accuracy",
    "puzzle_learned_ms_per_piece",
    "puzzle_fallback_rate",
)
SEED = {"head": "regression", "rotation": "head", "scale_mode": "fixed", "piece_size": 224}


def bench_variants(cfg: PuzzleConfig) -> dict[str, dict[str, Any]]:
    default = {
        "head": cfg.model.head,
        "rotation": cfg.model.rotation,
        "scale_mode": cfg.data.scale_mode,
        "shared_backbone": True,
        "piece_input": cfg.data.piece_input,
        "window": cfg.data.window,
    }
    return {
        "baseline": {**SEED, "puzzle_size": 256},
        "recipe": {**SEED, "puzzle_size": 512},
        "recipe-768": {**SEED, "puzzle_size": 768},
        "default": default,
        "default-separate": {**default, "shared_backbone": False},
        "default-photo": {**default, "piece_input": "photo"},
        "default-window-128": {**default, "window": 128},
        "default-fixed-512": {**default, "scale_mode": "fixed", "puzzle_size": 512, "piece_size": 96},
        "default-rotation-head": {**default, "rotation": "head"},
    }
