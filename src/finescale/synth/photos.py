"""Source photos of the synthetic puzzles: any folder of images, or the photos scikit-image ships (no network),
and their deal to train/val/test so that a split's pictures are built only from its own photos."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from finescale.data.images import IMAGE_SUFFIXES, as_rgb_uint8, read_image, to_uint8
from finescale.errors import FinescaleError

SPLITS = ("train", "val", "test")
# scikit-image photos that ship with the wheel (no network); grey ones become RGB. `cat` repeats `chelsea`.
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "stereo_motorcycle", "text",
)  # fmt: skip
MAX_PHOTO_SIDE = 3200


@lru_cache(maxsize=1)
def _skimage_photos() -> tuple[tuple[str, np.ndarray], ...]:
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # a photo that needs a download (or is missing) is simply skipped
            continue
        photos.append((name, as_rgb_uint8(img[0] if isinstance(img, tuple) else img)))
    return tuple(photos)


def load_photos(images: str | Path | None = None) -> dict[str, np.ndarray]:
    """Source photos by name (uint8 RGB): the readable images of folder ``images``, or scikit-image's own photos.

    Photos larger than 3200 px are shrunk. Raises FinescaleError when the folder holds no readable image.
    """
    if images is None:
        return dict(_skimage_photos())
    folder = Path(images)
    if not folder.is_dir():
        raise FinescaleError(f"--images {folder} is not a folder.")
    photos = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            img = to_uint8(read_image(path, "rgb"))
        except FinescaleError:
            continue
        if min(img.shape[:2]) < 32:
            continue
        f = MAX_PHOTO_SIDE / max(img.shape[:2])
        if f < 1:
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        photos[path.name] = img
    if not photos:
        raise FinescaleError(
            f"--images {folder} holds no readable image (jpg, png, tif, bmp or webp of 32 px or more)."
        )
    return photos


def deal_photos(names: list[str], split: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Shuffle photo names with ``default_rng([seed])`` and deal them to the splits; every split with a positive
    fraction gets at least one photo."""
    need = [s for s, f in zip(SPLITS, split, strict=True) if f > 0]
    if len(names) < len(need):
        raise FinescaleError(f"splitting by picture needs at least {len(need)} source photos, found {len(names)}.")
    order = [names[i] for i in np.random.default_rng([seed]).permutation(len(names))]
    counts = {
        s: (max(1, round(f / sum(split) * len(names))) if f > 0 else 0) for s, f in zip(SPLITS, split, strict=True)
    }
    counts["train"] = len(names) - counts["val"] - counts["test"]
    while counts["train"] < (1 if split[0] > 0 else 0):  # give train its photo back from the larger other split
        bigger = max(("val", "test"), key=counts.get)
        counts[bigger] -= 1
        counts["train"] += 1
    out, start = {}, 0
    for s in ("test", "val", "train"):
        out[s] = sorted(order[start : start + counts[s]])
        start += counts[s]
    return {s: out[s] for s in SPLITS}
