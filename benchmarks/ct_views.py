"""Cost of the ``ct`` pipeline's random tail: milliseconds per stored volume for one training view
(``SliceViews``: slice choice, CT augmentation, windows, NLM + CLAHE, resize, flip) of each bench variant named,
at each slice side of its training (the progressive stages, else ``image_size``).

    python benchmarks/ct_views.py --data runs/bench/ct/data                    # the bench's phantoms
    python benchmarks/ct_views.py --data data/ct --variants recipe --volumes 8

One thread (``torch.set_num_threads(1)``, OpenCV's too): a DataLoader worker's share of the machine. Timed as CPU
seconds of this process (``time.process_time``), best of ``--repeats`` passes over ``--volumes`` stored volumes of
the training manifest, after one warm-up pass; the store is packed first when missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from finescale.config import build_config
from finescale.pipelines.ct.bench import bench_variants
from finescale.pipelines.ct.config import CTConfig
from finescale.pipelines.ct.data import ensure_store, load_records
from finescale.pipelines.ct.views import SliceViews


def time_views(views: SliceViews, volumes: list[np.ndarray], repeats: int) -> float:
    """Best-of-``repeats`` CPU milliseconds per volume of ``views`` in training mode."""
    rng = np.random.default_rng(0)
    for volume in volumes:  # warm-up: OpenCV and MONAI allocate on first use
        views(volume, rng)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for volume in volumes:
            views(volume, rng)
        best = min(best, (time.process_time() - start) / len(volumes))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a `finescale synth ct` folder (train.json)")
    parser.add_argument("--variants", default="baseline,recipe,recipe-adjacent", help="comma-separated bench variants")
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    table = bench_variants(CTConfig())
    print("| variant | side px | ms per volume |\n|---|---:|---:|")
    for name in args.variants.split(","):
        cfg = build_config(CTConfig, preset="quick", config_file=None, overrides=table[name])
        store = ensure_store(cfg, [args.data / "train.json"])
        names = [r["name"] for r in load_records(args.data / "train.json").records][: args.volumes]
        volumes = [store.read(n) for n in names]
        views = SliceViews(cfg, train=True)
        for side in cfg.data.progressive_sizes or [cfg.data.image_size]:
            views.set_size(side)
            print(f"| {name} | {side} | {time_views(views, volumes, args.repeats):.0f} |", flush=True)


if __name__ == "__main__":
    main()
