"""The ``defects`` predictor: the views of a tool in, one dict per view out (boxes in the view's own pixels, class
names, scores), batched through a DataLoader a group of views at a time.

Inputs are grouped into tools: a folder is one tool (its images sorted by name, at most ``views`` of them); loose
files are taken in the order given, every ``views`` consecutive files one tool. A view that cannot be read gets an
``error`` answer and is masked out of its tool, whose other views are still predicted (the fusion attends only to the
views present); so does a tool with fewer views than the model was trained with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from finescale.console import stderr_console
from finescale.engine.predictor import expand_inputs, input_name, move_to, resolve_device
from finescale.errors import FinescaleError, ImageReadError
from finescale.pipelines.defects.results import named_detections

Input = str | os.PathLike[str] | np.ndarray


def group_inputs(inputs: Input | Sequence[Input], views: int) -> list[list[Input]]:
    """Tools as lists of views: each folder one tool, loose files and arrays in consecutive runs of ``views``."""
    items = [inputs] if isinstance(inputs, str | os.PathLike | np.ndarray) else list(inputs)
    groups: list[list[Input]] = []
    loose: list[Input] = []
    for item in items:
        if isinstance(item, str | os.PathLike) and Path(item).is_dir():
            found = expand_inputs(item)
            if len(found) > views:
                raise FinescaleError(f"folder {item} holds {len(found)} images; a tool has at most {views} views")
            groups.append(found)
        else:
            loose.append(item)
    groups += [loose[i : i + views] for i in range(0, len(loose), views)]
    if not groups:
        raise FinescaleError("no input images given")
    return groups


def read_view(item: Input, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """One view -> (H, W, 3) float32 RGB in [0, 1] resized to ``size`` = (H, W), and its (sx, sy) scale."""
    from finescale.data.images import as_rgb, read_image

    image = as_rgb(np.asarray(item, dtype=np.float32)) if isinstance(item, np.ndarray) else read_image(item, "rgb")
    height, width = size
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return resized, (width / image.shape[1], height / image.shape[0])


class ToolViews(Dataset):
    """Groups of inputs -> batches in the layout of docs/defects_design.md, plus each view's read error."""

    def __init__(self, groups: list[list[Input]], views: int, size: tuple[int, int]) -> None:
        self.groups, self.views, self.size = groups, views, size

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        height, width = self.size
        images = torch.zeros(self.views, 3, height, width)
        mask = torch.zeros(self.views, dtype=torch.bool)
        scales = torch.ones(self.views, 2)
        errors: dict[int, str] = {}
        for v, item in enumerate(self.groups[index]):
            try:
                image, scale = read_view(item, self.size)
            except ImageReadError as err:
                errors[v] = str(err)
                continue
            images[v] = torch.from_numpy(image).permute(2, 0, 1)
            mask[v], scales[v] = True, torch.tensor(scale)
        return {"images": images, "view_mask": mask, "scales": scales, "errors": errors, "group": index}


def collate_views(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": torch.stack([it["images"] for it in items]),
        "view_mask": torch.stack([it["view_mask"] for it in items]),
        "scales": torch.stack([it["scales"] for it in items]),
        "errors": [it["errors"] for it in items],
        "group": [it["group"] for it in items],
    }


class DefectsPredictor:
    """Wraps a trained defects task; ``predict(views)`` -> one dict per view: ``image``, ``tool`` (the group's index),
    ``view``, ``boxes`` (xyxy in the view's own pixels), ``labels`` (class names), ``scores``. ``predict_with``:
    teacher or student weights (default: the run's ``semi.predict_with``)."""

    def __init__(
        self,
        task: Any,
        *,
        predict_with: str | None = None,
        score_threshold: float | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        device: str = "auto",
    ) -> None:
        if batch_size < 1 or num_workers < 0:
            raise FinescaleError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {num_workers}")
        if predict_with not in (None, "teacher", "student"):
            raise FinescaleError(f"--predict-with takes teacher or student, not {predict_with!r}")
        self.cfg = task.cfg
        if predict_with is None:
            model = task.inference_model
        elif predict_with == "student":
            model = task.model
        elif task.teacher is None:
            raise FinescaleError("this run was trained without a teacher (supervised only): use --predict-with student")
        else:
            model = task.teacher
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        if score_threshold is not None:
            self.model.box_head.score_threshold = score_threshold  # where detect() reads it
        self.batch_size, self.num_workers = batch_size, num_workers

    def predict(
        self, inputs: Input | Sequence[Input], *, progress: bool = False, overlays: str | os.PathLike | None = None
    ) -> list[dict[str, Any]]:
        """One dict per view, in input order; with ``overlays`` each answered view's boxes are also drawn into
        ``overlays/<tool>_<view>_<file stem>.png``."""
        answers = self._answers(inputs, progress=progress)
        if overlays is not None:
            groups = group_inputs(inputs, self.cfg.data.views)
            for answer in answers:
                if "error" not in answer:
                    item = groups[answer["tool"]][answer["view"]]
                    write_overlay(item, answer, Path(overlays), self.cfg.data.categories)
        return answers

    def _answers(self, inputs: Input | Sequence[Input], *, progress: bool) -> list[dict[str, Any]]:
        views = self.cfg.data.views
        groups = group_inputs(inputs, views)
        size = (self.cfg.data.image_height, self.cfg.data.image_width)
        loader = DataLoader(
            ToolViews(groups, views, size),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_views,
        )
        if progress:
            loader = track(loader, description="predicting", console=stderr_console(), transient=True)
        answers: list[dict[str, Any]] = []
        position = 0
        with torch.inference_mode():
            for batch in loader:
                errors, group_ids = batch.pop("errors"), batch.pop("group")
                detections = self.model.predict(move_to(batch, self.device))["detections"]
                for b, g in enumerate(group_ids):
                    for v, item in enumerate(groups[g]):
                        answer: dict[str, Any] = {"image": input_name(item, position), "tool": g, "view": v}
                        position += 1
                        if v in errors[b]:
                            answers.append({**answer, "error": errors[b][v]})
                            continue
                        det = detections[b * views + v]
                        answers.append(
                            {**answer, **named_detections(det, batch["scales"][b, v], self.cfg.data.categories)}
                        )
        return answers


def write_overlay(item: Input, answer: dict[str, Any], folder: Path, categories: Sequence[str]) -> Path:
    """The view with its predicted boxes (one colour per class, label and score above each) as a PNG."""
    from finescale.data.images import as_rgb_uint8, read_image

    image = as_rgb_uint8(item if isinstance(item, np.ndarray) else read_image(item, "rgb"))
    canvas = np.ascontiguousarray(image[:, :, ::-1])  # OpenCV draws in BGR
    colours = [tuple(int(c) for c in rgb[::-1]) for rgb in _PALETTE]
    for box, label, score in zip(answer["boxes"], answer["labels"], answer["scores"], strict=True):
        colour = colours[categories.index(label) % len(colours)]
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
        cv2.putText(canvas, f"{label} {score:.2f}", (x1, max(8, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(answer["image"]).stem if not isinstance(item, np.ndarray) else "array"
    path = folder / f"{answer['tool']:03d}_{answer['view']}_{stem}.png"
    cv2.imwrite(str(path), canvas)
    return path


# one colour per class (RGB), tab10's first five
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
