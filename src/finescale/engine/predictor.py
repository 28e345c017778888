"""The predictor shape every pipeline shares (see :class:`finescale.pipelines.Predictor`): inputs in, one plain dict
per input out, images read and prepared in DataLoader workers and the model called once per batch.

:class:`BatchedImagePredictor` is the base of predictors whose answer is per image (``length``, ``dims``): a
subclass says how one image becomes the model's input (:meth:`~BatchedImagePredictor.prepare`, run in the workers)
and how one batch of model outputs becomes dicts (:meth:`~BatchedImagePredictor.answer`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from finescale.console import stderr_console
from finescale.errors import FinescaleError, ImageReadError

Input = str | os.PathLike[str] | np.ndarray


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch on ``device``; everything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def expand_inputs(inputs: Input | Sequence[Input], suffixes: Collection[str] | None = None) -> list[Input]:
    """One input or many -> a flat list: arrays and files as given, folders replaced by the files they hold whose
    name ends in one of ``suffixes`` (default: the image suffixes), sorted. A folder without any is an error that
    names the suffixes read."""
    from finescale.data.images import IMAGE_SUFFIXES

    suffixes = tuple(suffixes or IMAGE_SUFFIXES)
    items = [inputs] if isinstance(inputs, str | os.PathLike | np.ndarray) else list(inputs)
    out: list[Input] = []
    for item in items:
        if isinstance(item, str | os.PathLike) and Path(item).is_dir():
            found = sorted(p for p in Path(item).iterdir() if p.name.lower().endswith(suffixes))
            if not found:
                listed = " ".join(sorted(suffixes))
                raise FinescaleError(f"folder {item} holds no inputs (files ending in {listed} are read)")
            out.extend(found)
        else:
            out.append(item)
    if not out:
        raise FinescaleError("no input images given")
    return out


def input_name(item: Input, index: int) -> str:
    """How a dict names its input: the path as given, or ``array[i]`` for an array."""
    return f"array[{index}]" if isinstance(item, np.ndarray) else str(item)


def image_reader(mode: str = "gray") -> Callable[[Input], np.ndarray]:
    """An input -> float32 array: files through ``read_image`` in ``mode``, arrays as they are."""

    def read(item: Input) -> np.ndarray:
        from finescale.data.images import read_image

        return np.asarray(item, dtype=np.float32) if isinstance(item, np.ndarray) else read_image(item, mode)

    return read


class PreparedInputs(Dataset):
    """Inputs -> ``{"index", "views"}`` (``prepare(read(input))``), or ``{"index", "error"}`` for an input that
    cannot be read, so one bad file does not stop the others."""

    def __init__(
        self, inputs: Sequence[Input], prepare: Callable[[Any], Any], read: Callable[[Input], Any] | None = None
    ) -> None:
        self.inputs = list(inputs)
        self.prepare = prepare
        self.read = read or image_reader()

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            data = self.read(self.inputs[index])
        except ImageReadError as err:
            return {"index": index, "error": str(err)}
        return {"index": index, "views": self.prepare(data)}


def collate_prepared(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable items' views into one batch; keep the unreadable ones' errors aside."""
    good = [it for it in items if "views" in it]
    return {
        "index": [it["index"] for it in good],
        "batch": torch.utils.data.default_collate([it["views"] for it in good]) if good else None,
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
    }


class BatchedImagePredictor:
    """Base of a per-image predictor. ``batch_size`` images per model call, ``num_workers`` DataLoader processes
    reading and preparing them, the model on ``device`` (``auto``: CUDA when present)."""

    image_mode = "gray"  # how read_image decodes an input file
    input_key = "image"  # the key that names the input in each answer
    suffixes: tuple[str, ...] | None = None  # files a folder input expands to (default: images)

    def __init__(self, task: Any, *, batch_size: int = 32, num_workers: int = 0, device: str = "auto") -> None:
        if batch_size < 1 or num_workers < 0:
            raise FinescaleError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {num_workers}")
        self.cfg = task.cfg
        self.device = resolve_device(device)
        self.model = task.model.eval().to(self.device)
        self.batch_size = batch_size
        self.num_workers = num_workers

    # ------------------------------------------------------------------ to implement per pipeline
    def read(self, item: Input) -> Any:
        """One input -> what ``prepare`` takes (default: the image, decoded in ``image_mode``)."""
        return image_reader(self.image_mode)(item)

    def prepare(self, image: np.ndarray) -> Any:
        """One decoded image -> the model's input for it (tensors, without the batch dimension)."""
        raise NotImplementedError

    def answer(self, batch: Any) -> list[dict[str, Any]]:
        """One batch on the model's device -> one plain dict per image (without the input's name)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def loader(self, inputs: Sequence[Input]) -> DataLoader:
        dataset = PreparedInputs(inputs, self.prepare, self.read)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_prepared,
            shuffle=False,
        )

    def stream(self, inputs: Input | Sequence[Input], *, progress: bool = False) -> Iterator[dict[str, Any]]:
        """Answers in input order as batches finish; an unreadable input gives ``{input_key, "error"}``."""
        items = expand_inputs(inputs, self.suffixes)
        batches = self.loader(items)
        if progress:
            batches = track(batches, description="predicting", console=stderr_console(), transient=True)
        with torch.inference_mode():
            for part in batches:
                answers: dict[int, dict[str, Any]] = {i: {"error": msg} for i, msg in part["errors"]}
                if part["batch"] is not None:
                    found = self.answer(move_to(part["batch"], self.device))
                    answers.update(zip(part["index"], found, strict=True))
                for i in sorted(answers):
                    yield {self.input_key: input_name(items[i], i), **answers[i]}

    def predict(self, inputs: Input | Sequence[Input], *, progress: bool = False) -> list[dict[str, Any]]:
        """One dict per input (folders expanded to their images), in order."""
        return list(self.stream(inputs, progress=progress))
