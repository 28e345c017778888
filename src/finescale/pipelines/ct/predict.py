"""The ``ct`` predictor: CT volumes (``.nii.gz``, ``.nii``, ``.mha``; folders expanded) in, one dict per volume out:
the 18 calibrated probabilities, the labels at VLM3D's fixed 0.5, and the uncertainty. Volumes are read and put on
the run's grid in DataLoader workers; several checkpoints form an ensemble, ``tta`` views are averaged per member."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finescale.data.ct_grid import to_grid
from finescale.data.ct_io import LABELS, VOLUME_SUFFIXES, read_metadata_csv, read_volume
from finescale.engine.checkpoints import load_task
from finescale.engine.predictor import BatchedImagePredictor, Input
from finescale.errors import FinescaleError
from finescale.eval.ensemble import combine, tta_aggregate
from finescale.eval.prediction_files import write_predictions_csv
from finescale.eval.uncertainty import mc_dropout, require_dropout
from finescale.pipelines.ct.inference import MC_SAMPLES
from finescale.pipelines.ct.views import SliceViews

log = logging.getLogger("finescale")


class CTPredictor(BatchedImagePredictor):
    """``finescale.load(run, members=[...], ensemble="mean", tta=1).predict(["a.nii.gz", "volumes/"])``."""

    input_key = "volume"
    suffixes = VOLUME_SUFFIXES

    def __init__(
        self,
        task: Any,
        *,
        members: Sequence[str | Path] = (),
        ensemble: str = "mean",
        tta: int = 1,
        metadata_csv: str | Path | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        device: str = "auto",
    ) -> None:
        super().__init__(task, batch_size=batch_size, num_workers=num_workers, device=device)
        self.members = [self.model, *(load_task(m, pipeline="ct").model.eval().to(self.device) for m in members)]
        if ensemble not in ("mean", "adaptive", "bayesian"):
            raise FinescaleError(f"--ensemble must be mean, adaptive or bayesian, got {ensemble!r}")
        if ensemble == "bayesian":  # refused before the first volume is read, not after
            for member in self.members:
                require_dropout(member)
        self.ensemble, self.tta = ensemble, max(1, tta)
        self.metadata = read_metadata_csv(metadata_csv) if metadata_csv else {}
        self.views = [SliceViews(self.cfg, train=False, view=v) for v in range(self.tta)]

    def read(self, item: Input) -> np.ndarray:
        """A volume file -> HU on the run's grid (Z, Y, X) int16; the metadata row (by file name) when given."""
        volume = read_volume(item, metadata=self.metadata.get(Path(item).name))
        if volume.scaling == "none" and float(volume.hu.min()) >= 0:
            log.warning("%s: stored values start at 0 and no scaling was found: give --metadata CSV", item)
        return to_grid(volume, spacing=tuple(self.cfg.data.spacing), shape=tuple(self.cfg.data.shape))

    def prepare(self, volume: np.ndarray) -> dict[str, torch.Tensor]:
        """Every TTA view of one volume, stacked on a new first axis: ``slices`` (T, S, 3, H, W) or ``volume``."""
        rng = np.random.default_rng(0)
        views = [view(volume, rng) for view in self.views]
        return {key: torch.stack([v[key] for v in views]) for key in views[0] if key != "body"}

    def answer(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        mc = MC_SAMPLES if self.ensemble == "bayesian" else 0
        members = []
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(0)  # MC dropout: the same volume gives the same answer on every call
            for model in self.members:
                views = []
                for t in range(self.tta):
                    view = {k: v[:, t] for k, v in batch.items()}
                    if mc:
                        views.append(mc_dropout(model, lambda v=view, m=model: m.predict(v), mc)["probs"])
                    else:
                        views.append(model.predict(view)["probs"])
                stacked = torch.stack(views).float().cpu().numpy()
                members.append(stacked.mean(axis=0) if mc else tta_aggregate(stacked, kind="mean"))
        probs, uncertainty = combine(np.stack(members), kind=self.ensemble)
        return [
            {
                "probabilities": {name: round(float(p), 4) for name, p in zip(LABELS, row, strict=True)},
                "positive": [name for name, p in zip(LABELS, row, strict=True) if p >= 0.5],
                "uncertainty": {name: round(float(u), 4) for name, u in zip(LABELS, spread, strict=True)},
            }
            for row, spread in zip(probs, uncertainty, strict=True)
        ]

    def predict(
        self, inputs: Input | Sequence[Input], *, progress: bool = False, csv: str | Path | None = None
    ) -> list[dict[str, Any]]:
        """One dict per volume; with ``csv`` also a CT-RATE-shaped predictions CSV (VolumeName + 18 columns)."""
        answers = super().predict(inputs, progress=progress)
        if csv is not None:
            good = [a for a in answers if "error" not in a]
            probs = np.array([[a["probabilities"][n] for n in LABELS] for a in good])
            write_predictions_csv(Path(csv), [Path(a["volume"]).name for a in good], probs, LABELS)
        return answers
