"""Pictures of what the puzzle model sees: for a few records, the piece, its window of the puzzle with the true box,
and the model's position probability over that window (the correlation map the seed asks to monitor)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

SHOWN = 4


def plot_correlation_maps(predictor: Any, records: Sequence[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from finescale.pipelines.puzzle.data import PuzzleDataset

    dataset = PuzzleDataset(records[:SHOWN], predictor.cfg.data.model_copy(update={"cache": False}), train=False)
    items = [dataset[i] for i in range(len(dataset))]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    with torch.inference_mode():
        probs = predictor.model.correlation_maps(batch)["probs"]  # (B, K, H, W)
    fig, axes = plt.subplots(len(items), 3, figsize=(8, 2.6 * len(items)), dpi=100, squeeze=False)
    for row, item in enumerate(items):
        side = item["puzzle"].shape[-1]
        x1, y1, x2, y2 = (item["box"] * side).tolist()
        k = int(item["rotation"]) if probs.shape[1] == 4 else 0
        axes[row, 0].imshow(item["piece"].permute(1, 2, 0).numpy())
        axes[row, 0].set_title(f"piece (turn {int(item['rotation'])})", fontsize=8)
        axes[row, 1].imshow(item["puzzle"].permute(1, 2, 0).numpy())
        axes[row, 1].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
        axes[row, 1].set_title("puzzle window, true box", fontsize=8)
        heat = probs[row, k].numpy()
        axes[row, 2].imshow(heat / max(float(np.max(heat)), 1e-12), cmap="magma")
        axes[row, 2].set_title("position probability (true turn)", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
