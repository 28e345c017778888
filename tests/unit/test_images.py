"""Tests for finescale.data.images on real files of many formats, through both the OpenCV and the Pillow path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import finescale.data.images as images
from finescale.data.images import (
    IMAGE_SUFFIXES,
    as_rgb,
    as_rgb_uint8,
    check_image,
    letterbox_square,
    read_image,
    to_uint8,
)
from finescale.errors import FinescaleError, ImageReadError

H, W = 48, 64


def _picture() -> np.ndarray:
    """A smooth 8-bit gray picture (smooth so JPEG stays close) spanning most of the range."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    img = 20 + 200 * (x / (W - 1)) * 0.7 + 200 * (y / (H - 1)) * 0.3 + 10 * np.sin(x / 6.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


PIC = _picture()
EXPECTED = PIC.astype(np.float32) / 255.0


def _gray8_png(d: Path) -> Path:
    Image.fromarray(PIC, "L").save(d / "gray8.png")
    return d / "gray8.png"


def _gray16_png(d: Path) -> Path:
    assert cv2.imwrite(str(d / "gray16.png"), PIC.astype(np.uint16) * 257)
    return d / "gray16.png"


def _rgb_png(d: Path) -> Path:
    Image.fromarray(np.stack([PIC] * 3, axis=-1), "RGB").save(d / "rgb.png")
    return d / "rgb.png"


def _rgba_png(d: Path) -> Path:
    alpha = np.zeros_like(PIC)
    alpha[:, W // 2 :] = 255  # half fully transparent: compositing would change the values there
    Image.fromarray(np.stack([PIC, PIC, PIC, alpha], axis=-1), "RGBA").save(d / "rgba.png")
    return d / "rgba.png"


def _gray_alpha_png(d: Path) -> Path:
    Image.fromarray(np.stack([PIC, np.full_like(PIC, 30)], axis=-1), "LA").save(d / "la.png")
    return d / "la.png"


def _palette_png(d: Path) -> Path:
    im = Image.frombytes("P", (W, H), (255 - PIC).tobytes())  # index i shows gray 255 - i: the lookup must happen
    im.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    im.save(d / "palette.png")
    return d / "palette.png"


def _rgb16_png(d: Path) -> Path:
    assert cv2.imwrite(str(d / "rgb16.png"), np.stack([PIC.astype(np.uint16) * 257] * 3, axis=-1))
    return d / "rgb16.png"


def _jpeg(d: Path) -> Path:
    Image.fromarray(np.stack([PIC] * 3, axis=-1), "RGB").save(d / "pic.jpg", quality=95)
    return d / "pic.jpg"


def _gray8_tif(d: Path) -> Path:
    Image.fromarray(PIC, "L").save(d / "gray8.tif")
    return d / "gray8.tif"


def _gray16_tif(d: Path) -> Path:
    Image.fromarray(PIC.astype(np.uint16) * 257).save(d / "gray16.tif")
    return d / "gray16.tif"


def _float_tif(d: Path) -> Path:
    Image.fromarray(EXPECTED, "F").save(d / "float.tif")
    return d / "float.tif"


FORMATS: dict[str, Callable[[Path], Path]] = {
    "gray8_png": _gray8_png,
    "gray16_png": _gray16_png,
    "rgb_png": _rgb_png,
    "rgba_png": _rgba_png,
    "gray_alpha_png": _gray_alpha_png,
    "palette_png": _palette_png,
    "rgb16_png": _rgb16_png,
    "jpeg": _jpeg,
    "gray8_tif": _gray8_tif,
    "gray16_tif": _gray16_tif,
    "float32_tif": _float_tif,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    return {name: make(d) for name, make in FORMATS.items()}


@pytest.fixture(params=["cv2", "pil"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once through OpenCV and once with OpenCV failing, so Pillow does the decoding."""
    if request.param == "pil":
        monkeypatch.setattr(images.cv2, "imdecode", lambda *args, **kwargs: None)
    return request.param


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the same picture in every format gives the same gray values -------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_same_picture_same_gray_values(files: dict[str, Path], fmt: str, backend: str):
    img = read_image(files[fmt])
    assert img.dtype == np.float32 and img.shape == (H, W)
    assert img.min() >= 0.0 and img.max() <= 1.0
    err = np.abs(img - EXPECTED)
    if fmt == "jpeg":
        assert err.mean() < 0.01 and err.max() < 0.05
    else:
        assert err.max() < 1e-6


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_rgb_mode_repeats_gray(files: dict[str, Path], fmt: str, backend: str):
    img = read_image(files[fmt], mode="rgb")
    assert img.dtype == np.float32 and img.shape == (H, W, 3)
    tol = 0.05 if fmt == "jpeg" else 1e-6
    for c in range(3):
        assert np.abs(img[..., c] - EXPECTED).max() < tol


# --- colour order, alpha and luminance ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_alpha", [False, True])
def test_colour_channels_are_rgb_and_gray_uses_luma(tmp_path: Path, backend: str, with_alpha: bool):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    if with_alpha:
        Image.fromarray(np.dstack([rgb, np.full((4, 6), 0, np.uint8)]), "RGBA").save(tmp_path / "c.png")
    else:
        Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png", mode="rgb")
    np.testing.assert_allclose(out[0, 0], [200 / 255, 100 / 255, 50 / 255], atol=1e-6)  # alpha 0 is not composited
    gray = read_image(tmp_path / "c.png")
    np.testing.assert_allclose(gray, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, atol=1e-6)


def test_sixteen_bit_keeps_full_precision(tmp_path: Path, backend: str):
    values = np.array([[0, 1000, 4095, 65535]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "v.png"), values)
    Image.fromarray(values).save(tmp_path / "v.tif")
    for name in ("v.png", "v.tif"):
        np.testing.assert_allclose(read_image(tmp_path / name), values / 65535.0, rtol=0, atol=1e-7)


def test_one_bit_png(tmp_path: Path, backend: str):
    mask = PIC > 128
    Image.fromarray(mask).convert("1").save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png"), mask.astype(np.float32))


def test_float_tiff_outside_unit_range_is_min_max_scaled(tmp_path: Path, backend: str):
    data = (100.0 + 5000.0 * EXPECTED).astype(np.float32)
    Image.fromarray(data, "F").save(tmp_path / "f.tif")
    img = read_image(tmp_path / "f.tif")
    lo, hi = float(data.min()), float(data.max())
    np.testing.assert_allclose(img, (data - lo) / (hi - lo), atol=1e-6)
    assert img.min() == 0.0 and img.max() == pytest.approx(1.0)


def test_invalid_mode_raises(files: dict[str, Path]):
    with pytest.raises(ValueError, match="mode"):
        read_image(files["gray8_png"], mode="bgr")  # type: ignore[arg-type]


# --- bad files ---------------------------------------------------------------------------------------------------


def _truncated_png(d: Path) -> Path:
    data = _gray8_png(d).read_bytes()
    return _write(d / "truncated.png", data[: len(data) // 2])


def _truncated_jpeg(d: Path) -> Path:
    data = _jpeg(d).read_bytes()
    return _write(d / "truncated.jpg", data[: len(data) // 2])


def _text_png(d: Path) -> Path:
    return _write(d / "notes.png", b"this is not an image, just text\n")


def _empty_png(d: Path) -> Path:
    return _write(d / "empty.png", b"")


BAD_FILES = {"truncated_png": _truncated_png, "truncated_jpeg": _truncated_jpeg, "text": _text_png, "empty": _empty_png}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_raise_image_read_error(tmp_path: Path, kind: str, backend: str):
    path = BAD_FILES[kind](tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"cannot read image {path}: ") and "\n" not in message
    assert isinstance(info.value, FinescaleError)
    assert check_image(path) == "unreadable_image"


def test_truncated_jpeg_raises_even_if_opencv_decodes_it_leniently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """OpenCV 4.x fills a truncated JPEG with gray and only warns; the reader must not accept that."""
    path = _truncated_jpeg(tmp_path)
    monkeypatch.setattr(images.cv2, "imdecode", lambda *args, **kwargs: np.full((H, W, 3), 128, np.uint8))
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)
    assert read_image(_jpeg(tmp_path)).shape == (H, W)  # a complete JPEG still reads


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(ImageReadError, match=r"cannot read image .*nope\.png: file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)
    assert check_image(tmp_path / "nope.png") == "missing_file"
    assert check_image(tmp_path) == "missing_file"


@pytest.mark.parametrize("fmt", ["gray8_png", "rgba_png", "jpeg", "gray16_tif"])
def test_check_image_accepts_good_files(files: dict[str, Path], fmt: str):
    assert check_image(files[fmt]) is None
    assert check_image(str(files[fmt])) is None


# --- helpers -----------------------------------------------------------------------------------------------------


def test_to_uint8(tmp_path: Path):
    floats = np.array([0.0, 0.5, 1.0, 1.2, -0.1, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(floats), [0, 128, 255, 255, 0, 0])
    np.testing.assert_array_equal(to_uint8(np.array([0, 257, 65535], np.uint16)), [0, 1, 255])
    np.testing.assert_array_equal(to_uint8(np.array([True, False])), [255, 0])
    src = np.array([3, 7], np.uint8)
    out = to_uint8(src)
    assert out.dtype == np.uint8 and out is not src
    np.testing.assert_array_equal(out, src)
    roundtrip = to_uint8(read_image(_gray8_png(tmp_path)))
    np.testing.assert_array_equal(roundtrip, PIC)
    with pytest.raises(TypeError):
        to_uint8(np.array([1, 2], np.int64))


def test_as_rgb_and_as_rgb_uint8():
    grey = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    np.testing.assert_array_equal(as_rgb(grey), np.stack([grey] * 3, axis=-1))
    rgba = np.arange(2 * 2 * 4, dtype=np.uint8).reshape(2, 2, 4)
    np.testing.assert_array_equal(as_rgb(rgba), rgba[..., :3])
    np.testing.assert_array_equal(as_rgb_uint8(grey), np.stack([to_uint8(grey)] * 3, axis=-1))
    np.testing.assert_array_equal(as_rgb_uint8(rgba), rgba[..., :3])
    assert as_rgb_uint8(rgba).flags.c_contiguous
    rgb = np.zeros((4, 4, 3), np.uint8)
    assert np.shares_memory(as_rgb_uint8(rgb), rgb)  # big puzzles already in the right format are not copied
    with pytest.raises(ValueError):
        as_rgb(np.zeros((4, 4, 2)))


@pytest.mark.parametrize("suffix", sorted(IMAGE_SUFFIXES))
def test_every_image_suffix_reads(tmp_path: Path, suffix: str):
    # the one list of suffixes that folder scans take (predict inputs, synth photos): each must decode
    path = tmp_path / f"pic{suffix}"
    Image.fromarray(PIC).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    got = to_uint8(read_image(path))
    tolerance = 3 if suffix in (".jpg", ".jpeg") else 0
    assert got.shape == PIC.shape and np.abs(got.astype(int) - PIC).max() <= tolerance


def test_letterbox_square_pads_wide_image_centred():
    img = np.arange(2 * 5, dtype=np.float32).reshape(2, 5) + 1
    out, (ox, oy, scale) = letterbox_square(img, fill=-1.0)
    assert out.shape == (5, 5) and out.dtype == np.float32
    assert (ox, oy, scale) == (0, 1, 1.0)
    np.testing.assert_array_equal(out[oy : oy + 2, ox : ox + 5], img)
    assert (out[0] == -1).all() and (out[3:] == -1).all()


def test_letterbox_square_pads_tall_colour_image():
    img = np.ones((6, 3, 3), dtype=np.uint8)
    out, (ox, oy, scale) = letterbox_square(img)
    assert out.shape == (6, 6, 3) and out.dtype == np.uint8
    assert (ox, oy, scale) == (1, 0, 1.0)
    assert out[:, 1:4].min() == 1 and out[:, 0].max() == 0 and out[:, 4:].max() == 0


def test_letterbox_square_keeps_square_image():
    img = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    out, offsets = letterbox_square(img)
    assert offsets == (0, 0, 1.0)
    np.testing.assert_array_equal(out, img)
