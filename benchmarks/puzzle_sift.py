"""Should the classical puzzle matcher try SIFT first? Templates alone (``--matcher template``) against SIFT + RANSAC
with templates where SIFT finds too few inliers (``--matcher sift``, the default): both-correct rate, position and
rotation accuracy and ms per piece (locating only, as ``finescale puzzle eval`` times it), on two sets, with
``--runs`` alternating runs of each matcher in one process (template first in even runs, SIFT first in odd ones;
a fresh matcher each run, so every run pays for its puzzles' features). Prints a markdown table; ``--out`` also
writes every run as JSON.

    # the full measurement (issue 14): 120 synthetic test pieces + 180 pieces of outside photos, 3 runs each
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/puzzle_sift.py --work runs/puzzle_sift \
        --out runs/puzzle_sift/sift.json

Sets (each made once into ``--work`` unless given as a folder of manifests):

* ``synthetic``: ``finescale synth puzzles --n 600 --seed 0`` (the ``puzzle`` bench's data), its test split;
  ``--synthetic DIR`` uses that folder's ``test.json`` instead.
* ``outside``: ``finescale synth puzzles --images <china.jpg, flower.jpg (scikit-learn), grace_hopper.jpg
  (matplotlib)> --n 180 --seed 7``, all three splits (photos in neither the repository nor scikit-image);
  ``--outside DIR`` uses all manifests of that folder.

``--n`` / ``--n-outside`` make smaller sets (the test runs it tiny); ``--full-size-fraction`` is the share of
~3000x2000 puzzles (synth's default 0.1).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finescale.pipelines.puzzle.classical import MATCHERS, ClassicalMatcher
from finescale.pipelines.puzzle.data import load_records
from finescale.pipelines.puzzle.metrics import IOU_THRESHOLD, paired_iou, score_placements
from finescale.pipelines.puzzle.predict import ClassicalPredictor
from finescale.pipelines.puzzle.workflow import place_records
from finescale.serialize import write_json
from finescale.synth.puzzles import generate_puzzles

SPLITS = ("train", "val", "test")


def outside_photos() -> list[Path]:
    """The three photos of the README's outside check: scikit-learn's china.jpg and flower.jpg, matplotlib's
    grace_hopper.jpg (both packages ship them; nothing is downloaded)."""
    import matplotlib
    import sklearn.datasets

    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    photos = [sklearn_images / "china.jpg", sklearn_images / "flower.jpg"]
    photos.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        raise SystemExit(f"outside photos not found: {', '.join(missing)}")
    return photos


def ensure_set(folder: Path, *, n: int, seed: int, full_size_fraction: float, images: Path | None = None) -> Path:
    """``finescale synth puzzles`` into ``folder`` unless its manifests are there."""
    if not (folder / "test.json").exists():
        generate_puzzles(folder, n=n, seed=seed, images=images, full_size_fraction=full_size_fraction)
    return folder


def read_set(folder: Path, splits: Sequence[str]) -> list[dict]:
    records = []
    for split in splits:
        if (folder / f"{split}.json").exists():
            records += load_records(folder / f"{split}.json").records
    if not records:
        raise SystemExit(f"no records in {folder} ({', '.join(splits)})")
    return records


def solved(records: Sequence[dict], predictions: Sequence[dict]) -> np.ndarray:
    """Per piece: box IoU >= 0.5 and the right quarter turn (``puzzle_both_accuracy`` per piece), (N,) bool."""
    iou = paired_iou(np.array([p["box"] for p in predictions], np.float32), np.array([r["box"] for r in records]))
    turned = np.array([p["rotation"] == r["rotation"] for p, r in zip(predictions, records, strict=True)])
    return (iou.numpy() >= IOU_THRESHOLD) & turned


def run_once(matcher: str, records: Sequence[dict]) -> dict[str, Any]:
    placed = place_records(ClassicalPredictor(ClassicalMatcher(method=matcher)), records)
    metrics = score_placements(records, placed)
    predictions = placed["predictions"]
    return {
        "matcher": matcher,
        **{k: metrics[k] for k in ("puzzle_both_accuracy", "puzzle_position_accuracy", "puzzle_rotation_accuracy")},
        "puzzle_ms_per_piece": metrics["puzzle_ms_per_piece"],
        "solved": solved(records, predictions).tolist(),
        "placed_by_sift": sum(p["matched_by"] == "sift" for p in predictions) / max(1, len(predictions)),
    }


def measure(records: Sequence[dict], runs: int) -> dict[str, list[dict[str, Any]]]:
    """``runs`` alternating runs of both matchers on ``records``."""
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MATCHERS}
    order = ("template", "sift")
    for r in range(runs):
        for matcher in order if r % 2 == 0 else order[::-1]:
            results[matcher].append(run_once(matcher, records))
    return results


def summarise(name: str, n: int, results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per matcher: accuracies of the first run (the answers are the same every run, checked), ms per piece
    as mean ± sample std and each run's, and the pieces that only this matcher solved."""
    first = {m: np.array(results[m][0]["solved"]) for m in MATCHERS}
    rows = []
    for matcher, runs in results.items():
        other = first["sift" if matcher == "template" else "template"]
        ms = np.array([r["puzzle_ms_per_piece"] for r in runs])
        rows.append(
            {
                "set": name,
                "pieces": n,
                "matcher": matcher,
                "both_correct": runs[0]["puzzle_both_accuracy"],
                "position": runs[0]["puzzle_position_accuracy"],
                "rotation": runs[0]["puzzle_rotation_accuracy"],
                "ms_per_piece_mean": float(ms.mean()),
                "ms_per_piece_std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
                "ms_per_piece_runs": [round(float(v), 1) for v in ms],
                "placed_by_sift": runs[0]["placed_by_sift"],
                "solved_only_by_this": int((first[matcher] & ~other).sum()),
                "same_answers_every_run": all(r["solved"] == runs[0]["solved"] for r in runs),
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    header = "| set | pieces | matcher | both-correct | position | rotation | ms / piece | runs (ms) | placed by SIFT |"
    header += " solved only by it |"
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        ms = f"{r['ms_per_piece_mean']:.0f} ± {r['ms_per_piece_std']:.0f}"
        runs = ", ".join(f"{v:.0f}" for v in r["ms_per_piece_runs"])
        lines.append(
            f"| {r['set']} | {r['pieces']} | {r['matcher']} | {r['both_correct']:.3f} | {r['position']:.3f} |"
            f" {r['rotation']:.3f} | {ms} | {runs} | {r['placed_by_sift']:.2f} | {r['solved_only_by_this']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the generated sets")
    parser.add_argument("--synthetic", type=Path, help="a synth puzzles folder (default: made in --work)")
    parser.add_argument("--outside", type=Path, help="a synth puzzles folder of outside photos (default: made)")
    parser.add_argument("--n", type=int, default=600, help="records of the synthetic set (its test split is used)")
    parser.add_argument("--n-outside", type=int, default=180, help="records of the outside-photo set (all used)")
    parser.add_argument("--full-size-fraction", type=float, default=0.1, help="share of ~3000x2000 puzzles")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each matcher")
    parser.add_argument("--out", type=Path, help="JSON of every run")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = {"full_size_fraction": args.full_size_fraction}
    synthetic = args.synthetic or ensure_set(args.work / f"synthetic_n{args.n}", n=args.n, seed=0, **sizes)
    outside = args.outside
    if outside is None:
        photos = args.work / "outside_photos"
        photos.mkdir(parents=True, exist_ok=True)
        for photo in outside_photos():
            shutil.copy(photo, photos / photo.name)
        outside = ensure_set(args.work / f"outside_n{args.n_outside}", n=args.n_outside, seed=7, images=photos, **sizes)
    sets = {"synthetic test": read_set(synthetic, ["test"]), "outside photos": read_set(outside, SPLITS)}
    rows, every_run = [], {}
    start = time.perf_counter()
    for name, records in sets.items():
        every_run[name] = measure(records, args.runs)
        rows += summarise(name, len(records), every_run[name])
    table = markdown(rows)
    print(table, end="")
    if args.out:
        data = {"synthetic": str(synthetic), "outside": str(outside), "runs": args.runs}
        write_json(args.out, {**data, "rows": rows, "every_run": every_run, "seconds": time.perf_counter() - start})
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main()
