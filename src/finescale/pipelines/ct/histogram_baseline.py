"""The ``ct`` bench's strongest simple baseline: HU histograms of a few body regions + one logistic regression per
label (scikit-learn), no deep learning.

Most of the 18 findings change how much of the chest sits in an HU range (emphysema: more voxels below -950 HU;
effusion and consolidation: fluid and soft tissue where lung was; calcifications and metal: dense voxels) and on
which side or level. So each volume becomes log-counts of :data:`HU_EDGES` bins in :data:`Z_SLABS` slabs x left /
right halves of the stored grid, and each label gets an L2-regularised logistic regression whose strength is picked
on the validation split. It reads the same store, splits and metrics as every deep bench run; a deep row that does
not beat it has not learnt more than these counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finescale.pipelines.ct.config import CTConfig
from finescale.pipelines.ct.data import ensure_store, load_records
from finescale.pipelines.ct.task import ct_scores, renamed_scores
from finescale.pipelines.ct.views import corruption

# bin edges in HU: air and emphysema, lung, ground glass, fat, fluid and soft tissue, contrast, calcium, metal
HU_EDGES = (-1024, -950, -900, -850, -800, -700, -600, -500, -300, -100, 0, 30, 60, 100, 200, 400, 800, 1500, 3100)
Z_SLABS = 4
C_GRID = (0.01, 0.1, 1.0)  # inverse L2 strengths tried; the best mean validation AUROC wins
NAME = "hu-histogram logistic regression"


def histogram_features(hu: np.ndarray) -> np.ndarray:
    """(Z, Y, X) HU -> (Z_SLABS * 2 * bins,) log(1 + voxel count) per slab, half (left / right) and HU bin."""
    half = hu.shape[2] // 2
    parts = []
    for slab in np.array_split(hu, Z_SLABS, axis=0):
        for side in (slab[:, :, :half], slab[:, :, half:]):
            counts, _ = np.histogram(side, bins=HU_EDGES)
            parts.append(np.log1p(counts))
    return np.concatenate(parts).astype(np.float32)


def _features(records: Sequence[dict], store: Any, transform: Callable | None = None) -> np.ndarray:
    volumes = (store.read(r["name"]).astype(np.float32) for r in records)
    return np.stack([histogram_features(transform(v) if transform else v) for v in volumes])


def _labels(records: Sequence[dict]) -> np.ndarray:
    return np.array([r["labels"] for r in records], dtype=np.float32)


def fit_label_models(x: np.ndarray, y: np.ndarray, c: float) -> Callable[[np.ndarray], np.ndarray]:
    """One standardised logistic regression per label column of ``y``; a label with one class in training predicts
    its training rate. Returns features -> (N, labels) probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    models = [
        LogisticRegression(C=c, max_iter=2000).fit(z, y[:, j]) if 0 < y[:, j].mean() < 1 else float(y[:, j].mean())
        for j in range(y.shape[1])
    ]

    def predict(features: np.ndarray) -> np.ndarray:
        zf = scaler.transform(features)
        columns = [m.predict_proba(zf)[:, 1] if not isinstance(m, float) else np.full(len(zf), m) for m in models]
        return np.stack(columns, axis=1)

    return predict


def histogram_baseline(train_json: Path, test_json: Path, cfg: CTConfig | None = None) -> dict[str, dict[str, Any]]:
    """The bench row: fitted on ``train_json``, C picked on the folder's val.json, scored like a deep run on
    ``test_json``, its corrupted copy and (when the folder has one) external.json. Reads the store of ``cfg``'s
    grid (the bench's, default the quick preset's), the one the deep rows read."""
    start = time.perf_counter()
    folder = Path(test_json).parent
    manifests = {"train": Path(train_json), "val": folder / "val.json", "test": Path(test_json)}
    if (folder / "external.json").exists():
        manifests["external"] = folder / "external.json"
    store = ensure_store(cfg or CTConfig(), list(manifests.values()))
    records = {split: load_records(path).records for split, path in manifests.items()}
    x = {split: _features(recs, store) for split, recs in records.items()}
    y = {split: _labels(recs) for split, recs in records.items()}

    def val_auroc(c: float) -> float:
        value = ct_scores(fit_label_models(x["train"], y["train"], c)(x["val"]), y["val"])["ct_macro_auroc"]
        return -1.0 if value is None else float(value)

    best_c = max(C_GRID, key=val_auroc)
    predict = fit_label_models(x["train"], y["train"], best_c)
    metrics: dict[str, Any] = {**ct_scores(predict(x["test"]), y["test"]), "ct_histogram_c": best_c}
    corrupted = predict(_features(records["test"], store, corruption()))
    metrics.update(renamed_scores(ct_scores(corrupted, y["test"]), "ct_corrupted_"))
    if "external" in x:
        metrics.update(renamed_scores(ct_scores(predict(x["external"]), y["external"]), "ct_external_"))
    metrics["train_seconds"] = time.perf_counter() - start
    return {NAME: metrics}
