"""Images per second of ``length`` prediction: the one-by-one path (before the batched predictor: read, prepare and
one model call per image) against the batched predictor (a DataLoader, ``--batch-size`` images per model call,
``--num-workers`` reading processes), on the same images and the same quick-preset model, in one process.

    python benchmarks/predict_throughput.py --images 1000 --out docs/bench/predict

Weights do not change the cost, so the model is the quick preset's, untrained. Run it alone: another torch process on
the same cores slows both several-fold.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from finescale.config import build_config
from finescale.data.images import read_image
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.data import prepare_views
from finescale.pipelines.length.predict import LengthPredictor
from finescale.pipelines.length.task import LengthTask
from finescale.synth.implants import generate_implants


def one_by_one(predictor: LengthPredictor, paths: list[Path]) -> list[dict]:
    """The path before batching: each image read, prepared and sent through the model alone."""
    out = []
    with torch.inference_mode():
        for path in paths:
            views = prepare_views(read_image(path), predictor.cfg.model)
            batch = {k: [t[None] for t in v] if isinstance(v, list) else v[None] for k, v in views.items()}
            out += predictor.records(predictor.model.predict(batch))
    return out


def timed(fn, *args) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/predict"))
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes of the batched run")
    args = parser.parse_args()
    data = args.out / "images"
    if not (data / "test.json").exists():
        generate_implants(data, n=args.images, seed=0)
    paths = sorted((data / "images").glob("*.png"))[: args.images]
    torch.manual_seed(0)
    task = LengthTask(build_config(LengthConfig, preset="quick").model_dump(mode="json"))
    rows = {}
    reference = None
    for name, batch_size, workers in (
        ("one-by-one", 1, 0),
        ("batched (32, 0 workers)", 32, 0),
        (f"batched (32, {args.workers} workers)", 32, args.workers),
    ):
        predictor = LengthPredictor(task, batch_size=batch_size, num_workers=workers, device="cpu")
        if name == "one-by-one":
            seconds, answers = timed(one_by_one, predictor, paths)
        else:
            seconds, answers = timed(predictor.predict, paths)
        lengths = [a["length_mm"] for a in answers]
        reference = reference or lengths
        rows[name] = {
            "images": len(paths),
            "seconds": round(seconds, 2),
            "images_per_second": round(len(paths) / seconds, 1),
            "max_length_difference_mm": round(max(abs(a - b) for a, b in zip(lengths, reference, strict=True)), 4),
        }
        print(json.dumps({name: rows[name]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
