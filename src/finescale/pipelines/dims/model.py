"""Models of the ``dims`` pipeline.

:class:`ImplantClassifier`: image -> timm backbone -> embedding (the penultimate layer) -> logits over companies or
models. Trained first; its embedding is what the regressor borrows.

:class:`DimsRegressor`: image -> visual feature (its own backbone) + company embedding + model embedding (the two
classifiers, fine-tuned slowly) -> attention fusion -> head -> (length, diameter). The classifiers also keep their
own loss (weight ``aux_classify_weight``) so that the names they report stay right while they fine-tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from finescale.losses import smooth_l1
from finescale.nn.attention import ATTENTIONS
from finescale.nn.backbones import TimmEncoder
from finescale.pipelines.dims.config import DimsConfig, DimsModelConfig


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the samples whose label is known (>= 0); zero (with a graph) when none is."""
    known = labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], labels[known], label_smoothing=label_smoothing)


class ImplantClassifier(nn.Module):
    """(B, 1, S, S) in [0, 1] -> ``embedding`` (B, E) and ``logits`` (B, K) over the labels of ``target``."""

    def __init__(
        self,
        *,
        encoder: nn.Module,
        embedding_dim: int,
        n_classes: int,
        target: str,
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.embed = nn.Sequential(nn.Linear(encoder.out_dim, embedding_dim), nn.LayerNorm(embedding_dim), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)
        self.target = target
        self.label_smoothing = label_smoothing
        self.embedding_dim = embedding_dim

    @classmethod
    def from_config(
        cls, cfg: DimsModelConfig, *, n_classes: int, target: str, label_smoothing: float = 0.0, load: bool = True
    ) -> ImplantClassifier:
        """``load=False`` skips pretrained/--weights loading (the weights will come from a checkpoint)."""
        weights = Path(cfg.weights) if cfg.weights and load else None
        encoder = TimmEncoder(name=cfg.backbone, pretrained=cfg.pretrained and load, weights=weights)
        return cls(
            encoder=encoder,
            embedding_dim=cfg.embedding_dim,
            n_classes=n_classes,
            target=target,
            dropout=cfg.dropout,
            label_smoothing=label_smoothing,
        )

    def class_embeddings(self) -> torch.Tensor:
        """One learned vector per class, (K, E): the rows of the last layer, the directions that name each class."""
        return self.classifier.weight

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.embed(self.encoder(images))
        return {"embedding": embedding, "logits": self.classifier(self.dropout(embedding))}

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        cls = masked_cross_entropy(self(batch["image"])["logits"], batch[self.target], self.label_smoothing)
        return {"cls": cls, "loss": cls}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """``probs`` (B, K), ``index`` (B,), ``embedding`` (B, E)."""
        out = self(batch["image"])
        probs = out["logits"].softmax(dim=1)
        return {"probs": probs, "index": probs.argmax(dim=1), "embedding": out["embedding"]}


def class_embedding(
    classifier: ImplantClassifier, out: dict[str, torch.Tensor], source: str, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """What the regressor sees of a classifier, (B, E): ``soft`` = class embeddings weighted by the predicted
    probabilities (differentiable, hedges between similar classes), ``hard`` = the arg-max class's embedding (a
    fixed identity per class), ``features`` = the penultimate features themselves, ``none`` = zeros (an ablation:
    the regressor sees the image only), ``oracle`` = the embedding of the TRUE class, ``labels`` (B,) long (zeros
    where a label is unknown, -1).

    ``oracle`` measures the ceiling of the embeddings: what they give when the classifier is always right. It is
    ``hard`` with the true label in place of the arg-max, so the regressor, its attention and its input widths stay
    exactly those of the other rows (a one-hot would need other projection widths and a freshly learned table, so a
    difference could come from that table rather than from knowing the class). The class rows are distinct vectors,
    so they name the class as fully as a one-hot would."""
    if source == "none":
        return torch.zeros_like(out["embedding"])
    if source == "features":
        return out["embedding"]
    table = classifier.class_embeddings()
    if source == "oracle":
        if labels is None:
            raise ValueError("the oracle embedding needs the true labels in the batch (company, model)")
        known = (labels >= 0).unsqueeze(1).to(table.dtype)
        return table[labels.clamp(min=0)] * known
    probs = out["logits"].softmax(dim=1)
    if source == "soft":
        return probs @ table
    if source == "hard":
        return table[probs.argmax(dim=1)]
    raise ValueError(f"unknown embedding source {source!r}")


class DimsRegressor(nn.Module):
    """Batch dict (see ``dims.data``) -> ``regression`` (B, 2) normalised (length, diameter), attention ``weights``,
    and both classifiers' logits. With the ``oracle`` embedding source the batch must carry the true ``company`` and
    ``model`` indices (B,) (training and evaluation batches do; a predict batch has the image only)."""

    def __init__(
        self,
        *,
        visual: nn.Module,
        company_embedder: ImplantClassifier,
        model_embedder: ImplantClassifier,
        attention: nn.Module,
        embedding_source: str,
        use_company: bool = True,
        use_model: bool = True,
        head_dim: int,
        dropout: float,
        target_center: Sequence[float],
        target_scale: Sequence[float],
        aux_classify_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.company_embedder = company_embedder
        self.model_embedder = model_embedder
        self.attention = attention
        self.head = nn.Sequential(
            nn.Linear(attention.out_dim, head_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(head_dim, 2)
        )
        self.embedding_source = embedding_source
        # an unused embedding enters as zeros (the "none" source), so every variant keeps one architecture
        self.sources = {
            "company": embedding_source if use_company else "none",
            "model": embedding_source if use_model else "none",
        }
        self.aux_classify_weight = aux_classify_weight
        self.register_buffer("center", torch.tensor(list(target_center), dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(list(target_scale), dtype=torch.float32), persistent=False)

    @classmethod
    def from_config(cls, cfg: DimsConfig, *, load_weights: bool = True) -> DimsRegressor:
        """Needs ``cfg.embedders`` (filled by the workflow from the classifier checkpoints) for the two
        classifiers' architectures; their weights are loaded separately (:meth:`load_embedders`).
        ``load_weights=False`` skips the visual backbone's pretrained/--weights loading (a checkpoint brings them)."""
        embedders = {}
        for target in ("company", "model"):
            spec = cfg.embedders.get(target)
            if spec is None:
                raise ValueError(f"config holds no {target} classifier (embedders.{target}); train one first")
            embedders[target] = ImplantClassifier.from_config(
                DimsModelConfig.model_validate(spec["model"]), n_classes=len(spec["labels"]), target=target, load=False
            )
        weights = Path(cfg.model.weights) if cfg.model.weights and load_weights else None
        visual = TimmEncoder(name=cfg.model.backbone, pretrained=cfg.model.pretrained and load_weights, weights=weights)
        reg = cfg.regress
        attention = ATTENTIONS.create(
            reg.attention_type,
            visual_dim=visual.out_dim,
            company_dim=embedders["company"].embedding_dim,
            model_dim=embedders["model"].embedding_dim,
            dim=reg.attention_dim,
        )
        return cls(
            visual=visual,
            company_embedder=embedders["company"],
            model_embedder=embedders["model"],
            attention=attention,
            embedding_source=reg.embedding_source,
            use_company=reg.use_company,
            use_model=reg.use_model,
            head_dim=reg.head_dim,
            dropout=cfg.model.dropout,
            target_center=reg.target_center,
            target_scale=reg.target_scale,
            aux_classify_weight=reg.aux_classify_weight,
        )

    def load_embedders(self, company_state: dict[str, Any], model_state: dict[str, Any]) -> None:
        """Load the classifiers' weights (state dicts of :class:`ImplantClassifier`), strictly."""
        self.company_embedder.load_state_dict(company_state)
        self.model_embedder.load_state_dict(model_state)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"]
        company = self.company_embedder(images)
        model = self.model_embedder(images)
        fused, weights = self.attention(
            self.visual(images),
            class_embedding(self.company_embedder, company, self.sources["company"], batch.get("company")),
            class_embedding(self.model_embedder, model, self.sources["model"], batch.get("model")),
        )
        return {
            "regression": self.head(fused),
            "weights": weights,
            "company_logits": company["logits"],
            "model_logits": model["logits"],
        }

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch)
        target = (torch.stack([batch["length_mm"], batch["diameter_mm"]], dim=1) - self.center) / self.scale
        losses = {
            "reg_length": smooth_l1(out["regression"][:, 0], target[:, 0], beta=0.1),
            "reg_diameter": smooth_l1(out["regression"][:, 1], target[:, 1], beta=0.1),
        }
        total = losses["reg_length"] + losses["reg_diameter"]
        if self.aux_classify_weight > 0:
            losses["cls_company"] = masked_cross_entropy(out["company_logits"], batch["company"])
            losses["cls_model"] = masked_cross_entropy(out["model_logits"], batch["model"])
            total = total + self.aux_classify_weight * (losses["cls_company"] + losses["cls_model"])
        losses["loss"] = total
        return losses

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """``length_mm``, ``diameter_mm`` (B,), ``company_probs`` (B, Kc), ``model_probs`` (B, Km), ``weights``."""
        out = self(batch)
        mm = out["regression"] * self.scale + self.center
        return {
            "length_mm": mm[:, 0],
            "diameter_mm": mm[:, 1],
            "company_probs": out["company_logits"].softmax(dim=1),
            "model_probs": out["model_logits"].softmax(dim=1),
            "weights": out["weights"],
        }
