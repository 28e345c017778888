"""Probabilities of one model or an ensemble on a list of records, with test-time augmentation (seed §5).

Each member predicts every TTA view (``views.py``: as is, left-right flipped, slices shifted, ...); a member's views
are averaged in probability (``eval/ensemble.tta_aggregate``, mean), then the members are combined by
``eval/ensemble.combine``: ``mean``, ``adaptive`` (confidence-weighted) or ``bayesian`` (every member's MC-dropout
samples pooled: the mean and the per-label spread as uncertainty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from finescale.data.volume_store import VolumeStore
from finescale.engine.predictor import move_to, resolve_device
from finescale.eval.ensemble import combine, tta_aggregate
from finescale.eval.uncertainty import mc_dropout, require_dropout
from finescale.pipelines.ct.data import CTVolumes

MC_SAMPLES = 8  # MC-dropout passes per member and view of the bayesian ensemble


def view_probabilities(
    task: Any, records: Sequence[dict], store: VolumeStore, *, view: int, corrupt: bool, device: torch.device, mc: int
) -> np.ndarray:
    """(N, 18) calibrated probabilities of one member on one view, or (mc, N, 18) MC-dropout samples."""
    dataset = CTVolumes(records, store, task.cfg, train=False, view=view, corrupt=corrupt)
    loader = DataLoader(dataset, batch_size=task.cfg.trainer.batch_size, num_workers=0)
    model = task.model.eval().to(device)
    parts = []
    with torch.inference_mode():
        for batch in loader:
            batch = move_to(batch, device)
            if mc > 1:
                parts.append(mc_dropout(model, lambda b=batch: model.predict(b), mc)["probs"].float().cpu())
            else:
                parts.append(model.predict(batch)["probs"].float().cpu())
    return torch.cat(parts, dim=-2).numpy()


def ensemble_probabilities(
    tasks: Sequence[Any],
    records: Sequence[dict],
    store: VolumeStore,
    *,
    ensemble: str = "mean",
    tta: int = 1,
    corrupt: bool = False,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 18) probabilities and (N, 18) uncertainty (the members' spread; MC-dropout's for ``bayesian``). Seeded:
    the same call gives the same numbers (the corrupted copy and MC dropout draw from a fixed stream)."""
    where = resolve_device(device)
    mc = MC_SAMPLES if ensemble == "bayesian" else 0
    for task in tasks if mc else ():
        require_dropout(task.model)
    members = []
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        torch.manual_seed(0)
        for task in tasks:
            views = [
                view_probabilities(task, records, store, view=v, corrupt=corrupt, device=where, mc=mc)
                for v in range(max(1, tta))
            ]
            # a member's views averaged in probability; MC samples stay apart for the bayesian pooling
            members.append(np.mean(views, axis=0) if mc else tta_aggregate(np.stack(views), kind="mean"))
    return combine(np.stack(members), kind=ensemble)  # (M, N, 18), or (M, samples, N, 18) for bayesian
