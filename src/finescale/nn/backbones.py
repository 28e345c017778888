"""Backbones from timm, wrapped as pooled feature extractors that take images in [0, 1]."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from finescale.errors import FinescaleError

log = logging.getLogger("finescale")


class ImageNormalize(nn.Module):
    """(B, 1 or 3, H, W) in [0, 1] -> (B, 3, H, W) normalised with a timm model's mean/std (``pretrained_cfg``,
    ImageNet's when it has none). Grey is repeated to three channels so that pretrained RGB weights apply unchanged.
    mean/std are non-persistent buffers: they follow ``.to(device)`` but stay out of the state dict."""

    def __init__(self, pretrained_cfg: dict | None) -> None:
        super().__init__()
        cfg = pretrained_cfg or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", IMAGENET_DEFAULT_MEAN)).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.get("std", IMAGENET_DEFAULT_STD)).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return (images - self.mean) / self.std


class TimmEncoder(nn.Module):
    """``timm`` model without its classifier: (B, 1 or 3, H, W) in [0, 1] -> (B, out_dim) pooled features.

    Normalisation uses the model's own mean/std, so callers hand over raw [0, 1] pixels; grey images are
    repeated to three channels so that pretrained RGB weights apply unchanged. Vision transformers are built
    with ``dynamic_img_size`` so one encoder serves several input resolutions.
    """

    def __init__(
        self, *, name: str, pretrained: bool = False, weights: Path | None = None, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.name = name
        self.net = _create(name, pretrained=pretrained, num_classes=0, drop_path_rate=drop_path_rate)
        if weights is not None:
            load_weights(self.net, weights)
        self.normalize = ImageNormalize(self.net.pretrained_cfg)
        self.out_dim: int = int(self.net.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))


def _create(name: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError:  # not a transformer: the resolution-free models take no such argument
        pass
    except RuntimeError as err:  # timm raises this for unknown model names
        raise FinescaleError(f"timm has no model {name!r}: {err}") from None
    return timm.create_model(name, **kwargs)


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a state dict file (plain, or nested under ``state_dict``/``model``) into ``module``.

    Prefixes such as ``module.`` and ``net.`` are stripped and tensors of the wrong shape (a classifier for
    another number of classes) are skipped; loading nothing at all is an error, not a silent no-op.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FinescaleError(f"weights file {path} does not exist") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = module.state_dict()
    matched = {}
    for key, tensor in state.items():
        for prefix in ("", "module.", "net.", "model.", "backbone.", "encoder.net."):
            name = key[len(prefix) :] if key.startswith(prefix) else None
            if name is not None and name in own and own[name].shape == tensor.shape:
                matched[name] = tensor
                break
    if not matched:
        raise FinescaleError(f"no tensor in {path} matches the backbone's parameters")
    module.load_state_dict(matched, strict=False)
    log.info("loaded %d/%d tensors from %s", len(matched), len(own), path)
