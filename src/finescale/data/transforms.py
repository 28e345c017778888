"""Image transforms shared by pipelines: resizing and the random flip + exposure jitter applied to all views of a
sample alike (moved here from ``pipelines/length/data.py`` so that every pipeline can use them)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from finescale.data.images import letterbox_square


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square image -> (size, size) float32; area interpolation when shrinking so fine detail averages, not aliases."""
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image.astype(np.float32), (size, size), interpolation=interp)


class RandFlipAndExposure:
    """Random horizontal flip and exposure change (gamma, contrast, brightness), the same for every view of a
    sample so that scales and crops stay consistent. Draws from torch's global RNG, which Lightning seeds."""

    def __init__(
        self,
        *,
        flip_p: float = 0.5,
        gamma: float = 0.25,
        contrast: float = 0.15,
        brightness: float = 0.05,
        noise: float = 0.03,
    ) -> None:
        self.flip_p, self.gamma, self.contrast, self.brightness = flip_p, gamma, contrast, brightness
        self.noise = noise  # Gaussian noise std drawn up to this, per sample: a cached view never repeats exactly

    def __call__(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
        """Returns the changed views and whether they were flipped (mirrored measurements must follow)."""
        flip = bool(torch.rand(()) < self.flip_p)
        gamma = float(torch.empty(()).uniform_(-self.gamma, self.gamma).exp())
        contrast = float(torch.empty(()).uniform_(1 - self.contrast, 1 + self.contrast))
        shift = float(torch.empty(()).uniform_(-self.brightness, self.brightness))
        sigma = float(torch.empty(()).uniform_(0, self.noise))
        out = []
        for view in views:
            view = view.flip(-1) if flip else view
            view = view.clamp(0, 1).pow(gamma)
            view = (view - 0.5) * contrast + 0.5 + shift + sigma * torch.randn_like(view)
            out.append(view.clamp(0, 1))
        return out, flip


class RandShiftZoom:
    """Random shift and slight zoom of whole-image views, the same for every scale of a sample. The label keeps:
    where the object sits does not matter, and pixel spacing is unknown anyway. Each view is (C, H, W)."""

    def __init__(self, *, shift: float = 0.06, zoom: float = 0.05) -> None:
        self.shift, self.zoom = shift, zoom

    def __call__(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        scale = float(torch.empty(()).uniform_(1 - self.zoom, 1 + self.zoom))
        tx, ty = (float(v) for v in torch.empty(2).uniform_(-self.shift, self.shift))
        theta = torch.tensor([[1 / scale, 0.0, tx], [0.0, 1 / scale, ty]])[None]
        out = []
        for view in views:
            grid = F.affine_grid(theta, [1, *view.shape], align_corners=False)
            out.append(F.grid_sample(view[None], grid, padding_mode="border", align_corners=False)[0])
        return out


def square_view(image: np.ndarray, size: int) -> np.ndarray:
    """Grey image (H, W) padded to a centred square (never stretched: shape cues survive), resized: (size, size)."""
    return resize_image(letterbox_square(image)[0], size)
