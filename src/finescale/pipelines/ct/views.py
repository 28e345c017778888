"""The random tail of the ``ct`` data pipeline: one stored volume (Z, Y, X) int16 HU -> the model's input.

2-D: ``slices_per_volume`` slices (spread over the volume; jittered in training), each made into 3 channels (three
HU windows, or the slice and its two neighbours in the lung window), optionally denoised (non-local means) and
contrast-enhanced (CLAHE), resized to the current side, flipped. 3-D: the whole volume in the lung window.
Training adds the CT augmentations (scanner noise, breathing motion, lung texture, elastic deformation) in HU, before
windowing, on the slab of slices the view reads (:func:`slab_indices`); the adaptive window also comes from that
slab. Test-time views (``view`` k > 0) flip and shift the slice positions; ``corrupt`` is the robustness check's
copy: strong scanner noise, breathing motion and a shifted window, the same for every model it is given to.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from finescale.data import ct_transforms as T
from finescale.pipelines.ct.config import CTConfig

BODY_HU = -500.0  # above: body (soft tissue, bone); below: air and lung


def corruption() -> Callable[[np.ndarray], np.ndarray]:
    """The robustness check's corrupted copy, identical for every model and call: strong scanner noise, breathing
    motion, and a +60 HU calibration offset (so every window sits 60 HU off)."""
    noise = T.RandScannerNoise(1.0, quantum_std=(35.0, 35.0), electronic_std=(12.0, 12.0))
    motion = T.RandBreathingMotion(1.0, max_shift=6)

    def corrupt(hu: np.ndarray) -> np.ndarray:
        noise.set_random_state(seed=0)
        motion.set_random_state(seed=1)
        return noise(motion(hu)) + 60.0

    return corrupt


def slab_indices(index: np.ndarray, depth: int, *, neighbours: bool) -> np.ndarray:
    """The sorted, distinct slices a 2-D view reads: the chosen ``index``, plus each one's clamped neighbours above
    and below when the channels are adjacent slices. The random tail runs on this slab alone (12 of the quick grid's 64
    slices with window channels). Every CT transform is in-plane except breathing motion, which
    displaces a run of consecutive slab rows: still a run of slices in acquisition (z) order, only sparser."""
    rows = [index - 1, index, index + 1] if neighbours else [index]
    return np.unique(np.clip(np.concatenate(rows), 0, depth - 1))


class SliceViews:
    """``views(volume, rng)`` -> ``{"slices": (S, 3, H, W), "body": (S, 1, H, W)}`` or ``{"volume": (1, Z, Y, X),
    "body": (1, Z, Y, X)}``, float32 in [0, 1]. ``set_size`` changes the side (progressive resizing) in shared
    memory, so DataLoader workers follow."""

    def __init__(self, cfg: CTConfig, *, train: bool, view: int = 0, corrupt: bool = False) -> None:
        self.data = cfg.data
        self.dimension = cfg.model.dimension
        self.train, self.view, self.corrupt = train, view, corrupt
        first = cfg.data.progressive_sizes[0] if train and cfg.data.progressive_sizes else cfg.data.image_size
        self._size = torch.tensor([first], dtype=torch.int64).share_memory_()
        self.augment = T.CTAugment(elastic=cfg.data.elastic) if train and cfg.data.ct_augment else None
        self.corruption = corruption() if corrupt else None

    def set_size(self, size: int) -> None:
        self._size[0] = int(size)

    @property
    def size(self) -> int:
        return int(self._size[0])

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if self.dimension == "3d":
            return self.whole_volume(volume, rng)
        return self.slices(volume, rng)

    def _hu(self, volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmentation (training) or corruption (robustness check) in HU, on a (Z, Y, X) stack: the whole volume
        (3-D) or the slab of the chosen slices (2-D)."""
        hu = volume.astype(np.float32)
        if self.augment is not None:
            hu = self.augment(hu, rng)
        if self.corruption is not None:
            hu = self.corruption(hu)
        return hu

    def slices(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        depth = volume.shape[0]
        mode = "random" if self.train else "uniform"
        index = T.slice_indices(depth, self.data.slices_per_volume, mode=mode, rng=rng)
        index = np.clip(index + (self.view // 2) * (1 if self.view % 4 < 2 else -1), 0, depth - 1)  # TTA shifts
        slab = slab_indices(index, depth, neighbours=self.data.channels == "adjacent")
        hu = self._hu(volume[slab], rng)  # (len(slab), Y, X): the random tail never touches the other slices
        local = np.searchsorted(slab, index)  # the chosen slices' rows in the slab; a neighbour is the next row
        window = T.adaptive_window(hu) if self.data.window == "adaptive" else T.LUNG
        channels = T.three_channel(hu, local, mode=self.data.channels, window=window)  # (S, 3, Y, X) in [0, 1]
        body = (hu[local] > BODY_HU)[:, None].astype(np.float32)
        x, body_t = self._resize(torch.from_numpy(channels), torch.from_numpy(body))
        if self.data.denoise or self.data.clahe:  # at the model's side: 2-4x cheaper than on the stored grid
            x = torch.from_numpy(self._enhance(x.numpy()))
        x, body_t = self._flip(x, body_t, rng)
        return {"slices": x, "body": body_t}

    def whole_volume(self, volume: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        hu = self._hu(volume, rng)
        x = torch.from_numpy(T.hu_window(hu, *T.LUNG)[None])  # (1, Z, Y, X)
        body = torch.from_numpy((hu > BODY_HU)[None].astype(np.float32))
        return dict(zip(("volume", "body"), self._flip(x, body, rng), strict=True))

    def _enhance(self, channels: np.ndarray) -> np.ndarray:
        """Non-local means (search window 11 px: the slices are small) and CLAHE, per channel image."""
        if self.data.denoise:
            channels = T.nlm_denoise(channels, search_window=11, template_window=5)
        if self.data.clahe:
            channels = T.clahe(channels)
        return channels

    def _resize(self, x: torch.Tensor, body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.size
        if x.shape[-1] == size and x.shape[-2] == size:
            return x.float(), body
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(0, 1), F.interpolate(body, size=(size, size), mode="nearest")

    def _flip(self, x: torch.Tensor, body: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-right flip: random in training (``flips``), on odd test-time views."""
        flip = (self.train and self.data.flips and rng.random() < 0.5) or (not self.train and self.view % 2 == 1)
        return (x.flip(-1), body.flip(-1)) if flip else (x, body)
