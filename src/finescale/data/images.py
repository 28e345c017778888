"""Image reading that gives float32 arrays in [0, 1] whatever the file's format, bit depth or colour layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from finescale.errors import ImageReadError

__all__ = ["IMAGE_SUFFIXES", "as_rgb", "as_rgb_uint8", "check_image", "letterbox_square", "read_image", "to_uint8"]

# The files taken as images wherever a folder is scanned (predict inputs, synth's source photos); all decode here.
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})

# ITU-R BT.601 luma weights (what OpenCV and Pillow use), applied to R, G, B.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def _fail(path: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image {path}: {reason}")


def _jpeg_may_be_truncated(data: np.ndarray) -> bool:
    """True for a JPEG whose data does not end with the end-of-image marker (older OpenCV decodes those silently)."""
    if data[:2].tobytes() != _JPEG_SOI:
        return False
    return not data[-64:].tobytes().rstrip(b"\x00\r\n ").endswith(_JPEG_EOI)


def _decode_pil(path: Path) -> np.ndarray:
    """Decode with Pillow; returns an array in RGB channel order. Relies on ``LOAD_TRUNCATED_IMAGES`` being False."""
    try:
        with Image.open(path) as im:
            im.load()  # full decode: raises OSError for truncated or corrupt data
            mode = im.mode
            if mode in ("1", "L", "F", "RGB", "RGBA", "RGBX") or mode.startswith("I;16"):
                arr = np.asarray(im)
            elif mode == "I":
                arr = np.asarray(im)
                if arr.size and arr.min() >= 0 and arr.max() <= 0xFFFF:
                    arr = arr.astype(np.uint16)  # Pillow widens 16-bit data to 32-bit "I"
            elif mode in ("LA", "La"):
                arr = np.asarray(im.getchannel("L"))
            else:  # P, PA, CMYK, YCbCr, LAB, HSV, ...
                arr = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise _fail(path, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _fail(path, f"corrupt or truncated data ({exc})") from None
    if not arr.dtype.isnative:  # e.g. big-endian "I;16B"
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    return arr


def _decode(path: Path) -> np.ndarray:
    """Decode ``path`` fully into an (H, W) or (H, W, 3) RGB array of its native dtype; raise ImageReadError."""
    if not path.exists():
        raise _fail(path, "file not found")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode on bytes also handles non-ASCII paths
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from None
    if data.size == 0:
        raise _fail(path, "empty file")
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0 or _jpeg_may_be_truncated(data):
        return _decode_pil(path)
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels == 1:
            arr = arr[..., 0]
        elif channels == 2:  # gray + alpha
            arr = arr[..., 0]
        else:  # BGR / BGRA -> RGB, alpha dropped (no compositing)
            arr = arr[..., 2::-1]
    return arr


def _normalise(arr: np.ndarray) -> np.ndarray:
    """Map any dtype to float32 in [0, 1]: integers by their dtype range, floats by min/max unless already in [0, 1]."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = (arr.astype(np.float64) - info.min) / (float(info.max) - info.min)
        return out.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        finite = np.isfinite(out)
        if not finite.any():
            return np.zeros(arr.shape, dtype=np.float32)
        lo, hi = float(out[finite].min()), float(out[finite].max())
        if lo < 0.0 or hi > 1.0:
            out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
        out[~finite] = 0.0
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    raise TypeError(f"unsupported image dtype {arr.dtype}")


def read_image(path: str | os.PathLike[str], mode: Literal["gray", "rgb"] = "gray") -> np.ndarray:
    """Read an image file as float32 in [0, 1]: shape (H, W) for ``"gray"``, (H, W, 3) for ``"rgb"``.

    Handles 8/16-bit gray and colour PNG/TIFF, palette and 1-bit PNG, JPEG and float TIFF. Alpha is dropped, colour
    goes to gray with BT.601 luma weights. Raises ImageReadError for missing, corrupt or truncated files.
    """
    if mode not in ("gray", "rgb"):
        raise ValueError(f"mode must be 'gray' or 'rgb', got {mode!r}")
    path = Path(path)
    img = _normalise(_decode(path))
    if mode == "gray":
        if img.ndim == 3:
            img = np.clip(img @ LUMA_WEIGHTS, 0.0, 1.0)
    else:
        img = as_rgb(img)
    return np.ascontiguousarray(img, dtype=np.float32)


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Return None when ``path`` decodes fully, else ``"missing_file"`` or ``"unreadable_image"``."""
    path = Path(path)
    if not path.is_file():
        return "missing_file"
    try:
        _decode(path)
    except ImageReadError:
        return "unreadable_image"
    return None


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Convert a float image in [0, 1] (values outside are clipped), bool, uint8 or uint16 image to uint8."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.copy()
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * np.uint8(255)
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        scaled = np.nan_to_num(img.astype(np.float32), nan=0.0)
        return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise TypeError(f"to_uint8 expects a float, bool, uint8 or uint16 image, got {img.dtype}")


def as_rgb(img: np.ndarray) -> np.ndarray:
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image as (H, W, 3) of the same dtype: grey is repeated, alpha
    dropped (a view where nothing is repeated)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {img.shape}")
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """An image as contiguous RGB uint8 (H, W, 3): grey repeated, alpha dropped, other dtypes through
    :func:`to_uint8` (floats in [0, 1] scaled); contiguous uint8 RGB comes back as is, without a copy."""
    img = np.asarray(img)
    return np.ascontiguousarray(as_rgb(img if img.dtype == np.uint8 else to_uint8(img)))


def letterbox_square(img: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, tuple[int, int, float]]:
    """Pad (never resize) an (H, W) or (H, W, C) image to a centred square of side max(H, W).

    Returns ``(square, (offset_x, offset_y, scale))``; a pixel (x, y) of ``img`` lands at
    (x * scale + offset_x, y * scale + offset_y) in ``square``. ``scale`` is always 1.0 as nothing is resized.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"letterbox_square expects an (H, W) or (H, W, C) array, got shape {img.shape}")
    h, w = img.shape[:2]
    side = max(h, w)
    offset_x, offset_y = (side - w) // 2, (side - h) // 2
    out = np.full((side, side, *img.shape[2:]), fill, dtype=img.dtype)
    out[offset_y : offset_y + h, offset_x : offset_x + w] = img
    return out, (offset_x, offset_y, 1.0)
