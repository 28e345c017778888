"""CT-RATE file I/O: volumes (``.nii.gz``, ``.nii``, ``.mha``) in Hounsfield units, the metadata and labels CSVs,
and CT-RATE's names and nested layout.

Axis convention: every array here is ``(Z, Y, X)`` (slice, row, column) in the file's voxel order, with no
reorientation; spacing tuples follow the same ``(z, y, x)`` order, in mm. nibabel returns NIfTI data as ``(X, Y, Z)``
(``i, j, k``) and is transposed; SimpleITK's ``GetArrayFromImage`` already gives ``(Z, Y, X)``.

HU scaling (``CTVolume.scaling``): ``"csv"`` when a metadata row is given (``RescaleSlope`` x stored value +
``RescaleIntercept``, applied to the *unscaled* stored values), else ``"header"`` when the NIfTI header carries a
non-identity ``scl_slope``/``scl_inter``, else ``"none"`` (stored values are HU). The two are never combined.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from finescale.errors import FinescaleError, ImageReadError

__all__ = [
    "LABELS",
    "VOLUME_SUFFIXES",
    "CTVolume",
    "inspect_volume",
    "patient_id",
    "read_labels_csv",
    "read_metadata_csv",
    "read_volume",
    "volume_relpath",
]

# CT-RATE's 18 abnormality columns, in the labels CSV's order (which is also the order of every label vector here).
LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha")

METADATA_REQUIRED = ("VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing")

# train_12_a_1[.nii.gz]: split, patient number, scan letter(s), reconstruction number.
_VOLUME_NAME = re.compile(r"^(?P<split>[A-Za-z]+)_(?P<patient>\d+)_(?P<scan>[A-Za-z]+)_(?P<recon>\d+)$")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

PathOrFile = str | os.PathLike | IO[bytes]


@dataclass(frozen=True)
class CTVolume:
    """One CT volume as the loader sees it."""

    hu: np.ndarray  # (Z, Y, X) float32 Hounsfield units
    spacing: tuple[float, float, float]  # (z, y, x) mm
    scaling: str  # "csv" | "header" | "none"
    source: str  # the path or name it was read from


# ---------------------------------------------------------------------------------------------------------- names


def volume_suffix(name: str) -> str:
    """The volume suffix of ``name`` (``".nii.gz"``, ``".nii"``, ``".mha"``), or ``""`` when it has none of them."""
    lower = name.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), "")


def volume_stem(name: str) -> str:
    """``name``'s basename without its volume suffix: ``"dir/train_1_a_1.nii.gz"`` -> ``"train_1_a_1"``."""
    base = os.path.basename(str(name))
    return base[: len(base) - len(volume_suffix(base))]


def _parse_name(volume_name: str) -> re.Match[str]:
    match = _VOLUME_NAME.match(volume_stem(volume_name))
    if match is None:
        raise FinescaleError(
            f"{volume_name!r} is not a CT-RATE volume name (<split>_<patient>_<scan>_<recon>, e.g. train_12_a_1.nii.gz)"
        )
    return match


def patient_id(volume_name: str) -> str:
    """``"train_12_a_1.nii.gz"`` -> ``"train_12"`` (also ``valid_`` and any other split prefix)."""
    m = _parse_name(volume_name)
    return f"{m['split']}_{m['patient']}"


def volume_relpath(volume_name: str) -> str:
    """CT-RATE's nested location of a volume, relative to the dataset root:
    ``"train_12_a_1.nii.gz"`` -> ``"train/train_12/train_12_a/train_12_a_1.nii.gz"``."""
    m = _parse_name(volume_name)
    patient = f"{m['split']}_{m['patient']}"
    return f"{m['split']}/{patient}/{patient}_{m['scan']}/{os.path.basename(volume_name)}"


# ----------------------------------------------------------------------------------------------------------- CSVs


def _read_csv(path: str | os.PathLike, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts; a missing required column is a :class:`FinescaleError` naming it."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets add a BOM
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except OSError as e:
        raise FinescaleError(f"cannot read {path}: {e.strerror or e}") from e
    missing = [c for c in required if c not in columns]
    if missing:
        raise FinescaleError(f"{path} has no column {', '.join(repr(c) for c in missing)}")
    return rows


def parse_xy_spacing(value: Any) -> list[float]:
    """CT-RATE's ``XYSpacing`` (``"[0.75, 0.75]"``, also numpy's ``"[0.75 0.75]"`` or a sequence) -> ``[y, x]`` mm.

    The pair is DICOM's PixelSpacing: row spacing (y) first, then column spacing (x)."""
    numbers = (
        [float(v) for v in value]
        if isinstance(value, list | tuple | np.ndarray)
        else [float(v) for v in _FLOAT.findall(str(value))]
    )
    if len(numbers) != 2 or not all(np.isfinite(numbers)) or min(numbers) <= 0:
        raise ValueError(f"XYSpacing {value!r} is not two positive numbers")
    return numbers


def read_metadata_csv(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """CT-RATE's metadata CSV -> ``{VolumeName: row}``.

    In each row ``RescaleSlope``, ``RescaleIntercept`` and ``ZSpacing`` are floats and ``XYSpacing`` is ``[y, x]``
    floats (mm); other columns are kept as the CSV's strings. A missing column or an unparseable value of those four
    is a :class:`FinescaleError` naming the file, line and column (a wrong scaling would silently corrupt HU)."""
    rows = _read_csv(path, METADATA_REQUIRED)
    table: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        column = "RescaleSlope"
        try:
            for column in ("RescaleSlope", "RescaleIntercept", "ZSpacing"):
                row[column] = float(row[column])
            column = "XYSpacing"
            row[column] = parse_xy_spacing(row[column])
        except ValueError as e:
            raise FinescaleError(f"{path} line {line}: bad {column} {row[column]!r} for {row['VolumeName']}") from e
        table[row["VolumeName"]] = row
    return table


def read_labels_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """CT-RATE's labels CSV -> ``{VolumeName: (18,) int8}`` in :data:`LABELS` order; values must be 0 or 1."""
    rows = _read_csv(path, ("VolumeName", *LABELS))
    table: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        try:
            values = np.array([float(row[c]) for c in LABELS])
        except ValueError as e:
            raise FinescaleError(f"{path} line {line}: a label of {row['VolumeName']} is not a number") from e
        if not np.isin(values, (0.0, 1.0)).all():
            raise FinescaleError(f"{path} line {line}: labels of {row['VolumeName']} must be 0 or 1")
        table[row["VolumeName"]] = values.astype(np.int8)
    return table


def find_metadata_row(table: Mapping[str, Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The row of volume ``name`` (a path or a VolumeName) in a metadata table, matching by basename then by stem
    (so ``x.mha`` finds the row of ``x.nii.gz``); ``None`` when the table has no row for it."""
    base = os.path.basename(str(name))
    if base in table:
        return table[base]
    stem = volume_stem(base)
    return next((row for key, row in table.items() if volume_stem(key) == stem), None)


# -------------------------------------------------------------------------------------------------------- volumes


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged file raises inside nibabel, gzip, zlib or SimpleITK (RuntimeError)."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    return (OSError, EOFError, ValueError, zlib.error, RuntimeError, ImageFileError, HeaderDataError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _source_name(path: PathOrFile, name: str | None) -> str:
    if name is not None:
        return str(name)
    if isinstance(path, str | os.PathLike):
        return os.fspath(path)
    for attr in ("path", "name"):  # fsspec files have .path, local files .name
        value = getattr(path, attr, None)
        if isinstance(value, str):
            return value
    raise FinescaleError("read_volume needs name= for a file object without a path (its suffix picks the reader)")


def _nifti_from_bytes(data: bytes, gzipped: bool) -> Any:
    import nibabel as nib

    if gzipped or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if int.from_bytes(data[:4], "little") == 540 or int.from_bytes(data[:4], "big") == 540:  # sizeof_hdr of NIfTI-2
        return nib.Nifti2Image.from_bytes(data)
    return nib.Nifti1Image.from_bytes(data)


def _read_nifti(path: PathOrFile, source: str) -> tuple[Any, np.ndarray, tuple[float, float, float]]:
    """(image, unscaled (X, Y, Z) array, header zooms as (z, y, x))."""
    import nibabel as nib

    if isinstance(path, str | os.PathLike):
        img = nib.load(os.fspath(path))
    else:
        img = _nifti_from_bytes(path.read(), source.lower().endswith(".gz"))
    raw = np.asarray(img.dataobj.get_unscaled())  # reads (and, for .gz, decompresses) every byte: damage shows here
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return img, raw, (zooms[2], zooms[1], zooms[0])


def _header_slope_inter(img: Any) -> tuple[float, float] | None:
    """The NIfTI header's (scl_slope, scl_inter), or ``None`` when it scales by identity or not at all.

    nibabel moves the header's scaling onto ``img.dataobj`` on load (``img.header.get_slope_inter()`` then says
    ``(None, None)``), already mapping NIfTI's "no scaling" (slope 0 or NaN) to (1, 0)."""
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def _read_mha(path: PathOrFile) -> tuple[np.ndarray, tuple[float, float, float]]:
    """((Z, Y, X) stored values, spacing (z, y, x)); a file object goes through a temporary file (ITK reads paths)."""
    import SimpleITK as sitk

    if isinstance(path, str | os.PathLike):
        image = sitk.ReadImage(os.fspath(path))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "volume.mha"
            local.write_bytes(path.read())
            image = sitk.ReadImage(str(local))
    sx, sy, sz = (float(s) for s in image.GetSpacing()[:3])
    return sitk.GetArrayFromImage(image), (sz, sy, sx)


def _as_3d(array: np.ndarray, source: str) -> np.ndarray:
    squeezed = array.reshape([d for i, d in enumerate(array.shape) if i < 3 or d != 1])
    if squeezed.ndim != 3:
        raise ImageReadError(f"cannot read volume {source}: expected a 3-D volume, got shape {array.shape}")
    return squeezed


def _metadata_spacing(row: Mapping[str, Any], header: tuple[float, float, float]) -> tuple[float, float, float]:
    """(z, y, x) mm from a metadata row; a field the row lacks falls back to the header's."""
    z, y, x = header
    if row.get("ZSpacing") not in (None, ""):
        z = float(row["ZSpacing"])
    if row.get("XYSpacing") not in (None, ""):
        y, x = parse_xy_spacing(row["XYSpacing"])
    return (z, y, x)


def read_volume(path: PathOrFile, *, metadata: Mapping[str, Any] | None = None, name: str | None = None) -> CTVolume:
    """Read one CT volume in HU.

    Args:
        path: a ``.nii.gz`` / ``.nii`` / ``.mha`` path, or an open binary file object (e.g. from ``fsspec.open``);
            its format comes from ``name`` or the file object's ``path``/``name``.
        metadata: the volume's metadata CSV row (:func:`read_metadata_csv`); when given, its ``RescaleSlope`` /
            ``RescaleIntercept`` apply to the unscaled stored values and its spacing wins over the header's.
        name: the volume's name when ``path`` is a file object without one.

    Returns:
        :class:`CTVolume` with ``hu`` ``(Z, Y, X)`` float32 and ``spacing`` ``(z, y, x)`` mm.

    Raises:
        ImageReadError: unknown suffix, or a corrupt or truncated file (one line naming it).
    """
    source = _source_name(path, name)
    suffix = volume_suffix(source)
    if not suffix:
        raise ImageReadError(f"cannot read volume {source}: not one of {', '.join(VOLUME_SUFFIXES)}")
    header_scale = None
    try:
        if suffix == ".mha":
            raw, spacing = _read_mha(path)
        else:
            img, raw_xyz, spacing = _read_nifti(path, source)
            raw = np.transpose(_as_3d(raw_xyz, source), (2, 1, 0))
            header_scale = _header_slope_inter(img)
    except ImageReadError:
        raise
    except _read_errors() as e:
        raise ImageReadError(f"cannot read volume {source}: {_first_line(e)}") from e
    raw = _as_3d(raw, source)

    if metadata is not None:
        try:
            slope, inter = float(metadata["RescaleSlope"]), float(metadata["RescaleIntercept"])
            spacing = _metadata_spacing(metadata, spacing)
        except (KeyError, TypeError, ValueError) as e:
            raise FinescaleError(f"metadata row of {source} lacks a usable {e}") from e
        scaling = "csv"
    elif header_scale is not None:
        (slope, inter), scaling = header_scale, "header"
    else:
        slope, inter, scaling = 1.0, 0.0, "none"
    hu = raw.astype(np.float32)
    if (slope, inter) != (1.0, 0.0):
        hu *= np.float32(slope)
        hu += np.float32(inter)
    return CTVolume(
        hu=np.ascontiguousarray(hu), spacing=tuple(float(s) for s in spacing), scaling=scaling, source=source
    )


def _dtype_on_disk(path: str | os.PathLike) -> str:
    """The stored voxel type, read from the header only."""
    if volume_suffix(os.fspath(path)) == ".mha":
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(os.fspath(path))
        reader.ReadImageInformation()
        return sitk.GetPixelIDValueAsString(reader.GetPixelID())
    import nibabel as nib

    return str(nib.load(os.fspath(path)).get_data_dtype())


def inspect_volume(path: str | os.PathLike, metadata_csv: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the loader sees in one volume, as plain JSON values (``finescale ct inspect``): shape ``(Z, Y, X)``,
    spacing ``(z, y, x)`` mm, HU min / max / percentiles 1, 50, 99, the scaling used and the stored dtype."""
    row = None
    if metadata_csv is not None:
        row = find_metadata_row(read_metadata_csv(metadata_csv), os.fspath(path))
    volume = read_volume(path, metadata=row)
    p1, p50, p99 = (float(v) for v in np.percentile(volume.hu, (1, 50, 99)))
    return {
        "volume": os.fspath(path),
        "shape": list(volume.hu.shape),
        "spacing_mm": list(volume.spacing),
        "scaling": volume.scaling,
        "metadata_row": row is not None,
        "dtype_on_disk": _dtype_on_disk(path),
        "hu_min": float(volume.hu.min()),
        "hu_max": float(volume.hu.max()),
        "hu_p1": p1,
        "hu_p50": p50,
        "hu_p99": p99,
    }
