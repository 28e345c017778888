"""The ``dims`` predictor (both stages), batched through a DataLoader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from finescale.engine.predictor import BatchedImagePredictor
from finescale.errors import FinescaleError
from finescale.eval.uncertainty import mc_dropout_per_item
from finescale.pipelines.dims.catalogue import maker_of, snap_to_catalogue
from finescale.pipelines.dims.data import prepare_image

WEIGHT_NAMES = {"dual": ("company", "model"), "triple": ("visual", "company", "model")}
WEIGHT_NAMES["hierarchical"] = WEIGHT_NAMES["triple"]
SIZES = ("length_mm", "diameter_mm")
STATS = ("std", "mean")  # of the MC-dropout samples of the regressor's own sizes, in the answer's "uncertainty"


def _named(labels: Sequence[str], probs: torch.Tensor) -> dict[str, float]:
    return {name: round(float(p), 4) for name, p in zip(labels, probs.tolist(), strict=True)}


class DimsPredictor(BatchedImagePredictor):
    """Wraps a trained dims task; ``predict(paths_or_arrays)`` -> the dicts the CLI prints, one per image.

    A regressor gives length and diameter (mm, from the model in eval mode, snapped to the catalogue), the model's
    name and its maker as the company (the company classifier's own answer beside it, flagged when it differs), their
    probabilities, the attention weights, and with ``mc_samples`` > 1 the standard deviation and mean of that many
    MC-dropout passes (seeded per image: the same image gives the same answer in any batch); a classifier gives its
    label.
    """

    def __init__(
        self,
        task: Any,
        *,
        mc_samples: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str = "auto",
    ) -> None:
        super().__init__(task, batch_size=batch_size, num_workers=num_workers, device=device)
        if self.cfg.stage == "regress" and self.cfg.regress.embedding_source == "oracle":
            raise FinescaleError(
                "this regressor was trained with oracle embeddings (the true company and model, a bench measurement):"
                " it cannot predict images whose names are unknown; `finescale dims eval` scores it on a manifest"
            )
        self.mc_samples = self.cfg.regress.mc_samples if mc_samples is None else mc_samples

    def prepare(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        return {"image": prepare_image(image, self.cfg.model.image_size, self.cfg.model.view)}

    def answer(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return self.classify_records(batch) if self.cfg.stage == "classify" else self.regress_records(batch)

    def snap(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.snap_config(self.cfg, arrays)

    @staticmethod
    def snap_config(cfg: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``arrays`` with ``length_mm``/``diameter_mm`` snapped to the catalogue sizes of the likely models (when
        the config's ``snap`` is on), the regressed values kept as ``raw_length_mm``/``raw_diameter_mm``; the same
        object when nothing is snapped."""
        if not cfg.regress.snap or not cfg.catalogue:
            return arrays
        length, diameter = snap_to_catalogue(
            arrays["length_mm"],
            arrays["diameter_mm"],
            arrays["model_probs"],
            cfg.data.models,
            cfg.catalogue,
            cfg.regress.snap_sigma,
        )
        raw = {"raw_length_mm": arrays["length_mm"], "raw_diameter_mm": arrays["diameter_mm"]}
        return {**arrays, **raw, "length_mm": length, "diameter_mm": diameter}

    def classify_records(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        target = self.cfg.classify.target
        labels = self.cfg.labels(target)
        probs = self.model.predict(batch)["probs"].float().cpu()
        return [
            {
                target: labels[int(p.argmax())],
                "probability": round(float(p.max()), 4),
                "probabilities": _named(labels, p),
            }
            for p in probs
        ]

    def regress_records(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        # the answer is the model's in eval mode (dropout off): deterministic, the same whatever else is in the
        # batch, and what `eval` scores; MC dropout only measures the spread around it
        pred = {k: v.float().cpu() for k, v in self.model.predict(batch).items()}
        samples = self.mc_samples
        spread = None
        if samples > 1:
            runs = mc_dropout_per_item(self.model, self.model.predict, batch, samples)  # (B, samples) each
            spread = {f"{k}_{stat}": getattr(runs[k].float().cpu(), stat)(dim=1) for k in SIZES for stat in STATS}
        sizes = self.snap({k: pred[k].numpy() for k in ("length_mm", "diameter_mm", "model_probs")})
        companies, models = self.cfg.data.companies, self.cfg.data.models
        names = WEIGHT_NAMES[self.cfg.regress.attention_type]
        out = []
        for i in range(pred["length_mm"].shape[0]):
            cp, mp = pred["company_probs"][i], pred["model_probs"][i]
            model = models[int(mp.argmax())]
            own = companies[int(cp.argmax())]  # the company classifier's own answer
            # the company reported is the predicted model's maker, so that the two never contradict each other
            company = maker_of(model, self.cfg.catalogue, companies) or own
            out.append(
                {
                    "length_mm": round(float(sizes["length_mm"][i]), 3),
                    "diameter_mm": round(float(sizes["diameter_mm"][i]), 3),
                    **{k: round(float(sizes[k][i]), 3) for k in ("raw_length_mm", "raw_diameter_mm") if k in sizes},
                    "company": company,
                    "company_probability": round(float(cp[companies.index(company)]), 4),
                    "model": model,
                    "model_probability": round(float(mp.max()), 4),
                    "company_classifier": own,
                    "company_classifier_agrees": own == company,
                    "company_probabilities": _named(companies, cp),
                    "model_probabilities": _named(models, mp),
                    "uncertainty": {
                        **{
                            f"{k}_{stat}": round(float(spread[f"{k}_{stat}"][i]), 4) if spread else None
                            for k in SIZES
                            for stat in STATS
                        },
                        "mc_samples": samples if spread else 0,
                    },
                    "attention_weights": _named(names, pred["weights"][i]),
                }
            )
        return out
