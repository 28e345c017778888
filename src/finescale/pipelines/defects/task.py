"""LightningModule of the ``defects`` pipeline: the multi-view Faster R-CNN (the student), its EMA teacher when
training semi-supervised (Soft Teacher), and COCO metrics on the validation split at each validation.

The teacher is a frozen copy of the model owned by the task, so its weights travel in every checkpoint (``--resume``
and ``predict_with: teacher`` need them); ``engine.ema.EMATeacher`` moves it after each optimizer step.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finescale.engine.task import TaskModule
from finescale.errors import FinescaleError
from finescale.eval.multilabel import label_slug
from finescale.pipelines.defects.config import DefectsConfig
from finescale.pipelines.defects.results import coco_results

# validation metrics logged at every validation (the per-class APs are added by name)
LOGGED = ("map", "ap50", "ap75")


class DefectsTask(TaskModule):
    config_class = DefectsConfig
    monitor = "val/defects_map"
    monitor_mode = "max"

    def __init__(self, config: dict, *, load_weights: bool = True) -> None:
        super().__init__(config, load_weights=load_weights)
        self.teacher: nn.Module | None = None
        if self.cfg.semi.semi_supervised:
            self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval()
        self._val_results: list[dict[str, Any]] = []
        self._val_images: set[int] = set()
        self._val_gt: dict[str, Any] | None = None

    def build_model(self, cfg: DefectsConfig, *, load_weights: bool = True) -> nn.Module:
        from finescale.nn.detector import DefectDetector

        if not cfg.data.categories:
            raise FinescaleError("the defects config names no categories (data.categories): train with --train-json")
        return DefectDetector.from_config(
            cfg.model, len(cfg.data.categories), views=cfg.data.views, load_weights=load_weights
        )

    def train(self, mode: bool = True) -> DefectsTask:
        """The teacher stays in eval mode (its batch-norm statistics move by EMA only, never by its own forwards)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @property
    def inference_model(self) -> nn.Module:
        """The weights eval and predict use: the teacher (Soft Teacher's usual choice) or the student."""
        use_teacher = self.teacher is not None and self.cfg.semi.predict_with == "teacher"
        return self.teacher if use_teacher else self.model

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        labeled = batch.get("labeled", batch)
        losses = self.model.loss(labeled)
        logged = {f"train/sup_{k}": v.detach() for k, v in losses.items() if k != "loss"}
        total = losses["loss"]
        unlabeled = batch.get("unlabeled")
        semi = self.cfg.semi
        if unlabeled is not None and self.teacher is not None and self.global_step >= semi.unsup_warmup_steps:
            from finescale.pipelines.defects.soft_teacher import unsupervised_losses

            generator = torch.Generator().manual_seed(self.cfg.trainer.seed * 100_003 + int(self.global_step))
            unsup, stats = unsupervised_losses(
                self.model, self.teacher, unlabeled, semi=semi, colour=self.cfg.data.augment, generator=generator
            )
            if unsup:
                total = total + semi.unsup_weight * torch.stack(list(unsup.values())).sum()
            logged.update({f"train/{k}": v.detach() for k, v in unsup.items()})
            logged.update({f"train/{k}": float(v) for k, v in stats.items() if isinstance(v, int | float)})
        logged["train/loss"] = total.detach()
        size = int(labeled["images"].shape[0])
        self.log_dict(logged, batch_size=size, on_step=True, on_epoch=True)
        self.log("loss", total.detach(), prog_bar=True, logger=False, batch_size=size)
        return total

    # ------------------------------------------------------------------ validation: COCO metrics
    def on_validation_epoch_start(self) -> None:
        self._val_results, self._val_images = [], set()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        detections = self.inference_model.predict(batch)["detections"]
        gt = self.val_ground_truth()
        ids = [c["id"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
        self._val_results += coco_results(detections, batch["image_ids"], batch["scales"], ids)
        self._val_images.update(int(i) for i in batch["image_ids"].reshape(-1).tolist() if i >= 0)

    def val_ground_truth(self) -> dict[str, Any]:
        if self._val_gt is None:
            self._val_gt = json.loads(Path(self.cfg.val_json).read_text())
        return self._val_gt

    def on_validation_epoch_end(self) -> None:
        from finescale.eval.coco_eval import coco_metrics

        results, images = self._val_results, self._val_images
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank scored a shard
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (results, images))
            results = [r for part, _ in gathered for r in part]
            images = set().union(*(part for _, part in gathered))
        if not images:
            return
        metrics = coco_metrics(subset(self.val_ground_truth(), images), results)
        wanted = [*LOGGED, *(f"ap_{label_slug(c)}" for c in self.cfg.data.categories)]
        logged = {f"val/defects_{k}": float(metrics[k]) for k in wanted if metrics.get(k) is not None}
        self.log_dict(logged, prog_bar=False, sync_dist=False)


def subset(gt: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """The COCO dict restricted to the images that were evaluated (``limit_val_batches`` may skip some)."""
    return {
        **gt,
        "images": [im for im in gt["images"] if im["id"] in image_ids],
        "annotations": [a for a in gt.get("annotations", []) if a["image_id"] in image_ids],
    }
