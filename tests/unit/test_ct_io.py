"""CT-RATE file I/O on real NIfTI / MetaImage files: HU scaling cases, spacing, axis order, damage, CSVs, names."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from finescale.data import ct_io
from finescale.data.ct_io import LABELS, CTVolume, read_volume
from finescale.errors import FinescaleError, ImageReadError

# Stored values of a tiny (Z, Y, X) = (3, 4, 5) volume: distinct per voxel, so any axis mix-up shows.
STORED_ZYX = (np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) * 10).astype(np.int16)


def write_nifti(
    path: Path,
    stored_zyx: np.ndarray = STORED_ZYX,
    zooms_zyx: tuple[float, float, float] = (5.0, 0.8, 0.7),
    header_scaling: tuple[float, float] | None = None,
) -> Path:
    """Write ``stored_zyx`` as a NIfTI with int16 storage (nibabel's (X, Y, Z) order) and optional scl_slope/inter."""
    img = nib.Nifti1Image(np.transpose(stored_zyx, (2, 1, 0)), np.diag([*zooms_zyx[::-1], 1.0]))
    img.header.set_data_dtype(np.int16)
    img.header.set_zooms(zooms_zyx[::-1])
    if header_scaling is not None:
        img.header.set_slope_inter(*header_scaling)
    nib.save(img, str(path))
    return path


def metadata_row(slope: float = 1.0, intercept: float = -1024.0, xy: str = "[0.75, 0.6]", z: float = 1.5) -> dict:
    return {"VolumeName": "train_1_a_1.nii.gz", "RescaleSlope": slope, "RescaleIntercept": intercept,
            "XYSpacing": xy, "ZSpacing": z}  # fmt: skip


def test_csv_slope_and_intercept_apply_to_stored_values(tmp_path):
    path = write_nifti(tmp_path / "train_1_a_1.nii.gz")
    vol = read_volume(path, metadata=metadata_row(slope=2.0, intercept=-1024.0))
    assert isinstance(vol, CTVolume) and vol.scaling == "csv" and vol.hu.dtype == np.float32
    np.testing.assert_array_equal(vol.hu, STORED_ZYX * 2.0 - 1024.0)


def test_header_scaling_is_used_without_a_metadata_row(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", header_scaling=(1.0, -1024.0))
    vol = read_volume(path)
    assert vol.scaling == "header"
    np.testing.assert_array_equal(vol.hu, STORED_ZYX - 1024.0)


def test_both_present_applies_the_csv_to_unscaled_values_never_both(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", header_scaling=(3.0, 500.0))
    vol = read_volume(path, metadata=metadata_row(slope=1.0, intercept=-8192.0))
    assert vol.scaling == "csv"
    np.testing.assert_array_equal(vol.hu, STORED_ZYX - 8192.0)  # not 3*v+500 scaled again


def test_no_scaling_anywhere_keeps_stored_values(tmp_path):
    vol = read_volume(write_nifti(tmp_path / "v.nii"))
    assert vol.scaling == "none"
    np.testing.assert_array_equal(vol.hu, STORED_ZYX)


def test_spacing_comes_from_the_csv_when_given_else_from_the_header(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", zooms_zyx=(5.0, 0.8, 0.7))
    assert read_volume(path).spacing == pytest.approx((5.0, 0.8, 0.7))
    assert read_volume(path, metadata=metadata_row(xy="[0.75, 0.6]", z=1.5)).spacing == pytest.approx((1.5, 0.75, 0.6))


def test_axis_order_is_z_y_x(tmp_path):
    vol = read_volume(write_nifti(tmp_path / "v.nii.gz"))
    assert vol.hu.shape == (3, 4, 5)
    assert vol.hu[2, 1, 4] == STORED_ZYX[2, 1, 4]


def test_mha_input_gives_z_y_x_and_its_spacing(tmp_path):
    image = sitk.GetImageFromArray(STORED_ZYX)  # SimpleITK arrays are (Z, Y, X)
    image.SetSpacing((0.7, 0.8, 5.0))  # ITK spacing is (x, y, z)
    path = tmp_path / "case.mha"
    sitk.WriteImage(image, str(path))
    vol = read_volume(path)
    assert vol.scaling == "none" and vol.spacing == pytest.approx((5.0, 0.8, 0.7))
    np.testing.assert_array_equal(vol.hu, STORED_ZYX)
    vol = read_volume(path, metadata=metadata_row(intercept=-1024.0))
    np.testing.assert_array_equal(vol.hu, STORED_ZYX - 1024.0)


def test_file_objects_read_like_paths(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    path = write_nifti(tmp_path / "train_1_a_1.nii.gz", header_scaling=(1.0, -1024.0))
    with fsspec.open(f"file://{path}", "rb") as f:
        vol = read_volume(f)
    np.testing.assert_array_equal(vol.hu, STORED_ZYX - 1024.0)
    with path.open("rb") as f:
        assert read_volume(f, name="x.nii.gz", metadata=metadata_row()).scaling == "csv"


def test_truncated_nifti_raises_image_read_error_naming_the_file(tmp_path):
    big = np.random.default_rng(0).integers(-1000, 1000, (16, 32, 32), dtype=np.int16)
    path = write_nifti(tmp_path / "broken.nii.gz", stored_zyx=big)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="broken.nii.gz") as info:
        read_volume(path)
    assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.mha"
    garbage.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="garbage.mha"):
        read_volume(garbage)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_metadata_csv_parses_scaling_and_spacing_and_keeps_other_columns(tmp_path):
    header = ["VolumeName", "Manufacturer", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing"]
    row = ["train_1_a_1.nii.gz", "ACME", "1", "-8192", "[0.75, 0.7]", "1.5"]
    path = write_csv(tmp_path / "meta.csv", header, [row])
    row = ct_io.read_metadata_csv(path)["train_1_a_1.nii.gz"]
    assert row["RescaleSlope"] == 1.0 and row["RescaleIntercept"] == -8192.0
    assert row["XYSpacing"] == [0.75, 0.7] and row["ZSpacing"] == 1.5 and row["Manufacturer"] == "ACME"
    with pytest.raises(FinescaleError, match="ZSpacing"):
        ct_io.read_metadata_csv(write_csv(tmp_path / "bad.csv", header[:-1], [["a", "b", "1", "0", "[1, 1]"]]))


def test_labels_csv_follows_labels_order_whatever_the_column_order(tmp_path):
    assert len(LABELS) == 18 and LABELS[0] == "Medical material" and LABELS[-1] == "Interlobular septal thickening"
    columns = list(reversed(LABELS))
    values = [1 if c in ("Medical material", "Emphysema") else 0 for c in columns]
    table = ct_io.read_labels_csv(write_csv(tmp_path / "labels.csv", ["VolumeName", *columns], [["v.nii.gz", *values]]))
    expected = np.zeros(18, np.int8)
    expected[[LABELS.index("Medical material"), LABELS.index("Emphysema")]] = 1
    assert table["v.nii.gz"].dtype == np.int8
    np.testing.assert_array_equal(table["v.nii.gz"], expected)
    with pytest.raises(FinescaleError, match="Consolidation"):
        ct_io.read_labels_csv(write_csv(tmp_path / "l2.csv", ["VolumeName", *LABELS[:15]], [["v", *[0] * 15]]))


def test_names_and_nested_layout():
    assert ct_io.patient_id("train_12_a_1.nii.gz") == "train_12"
    assert ct_io.patient_id("valid_3_b_2") == "valid_3"
    assert ct_io.volume_relpath("train_12_a_1.nii.gz") == "train/train_12/train_12_a/train_12_a_1.nii.gz"
    assert ct_io.volume_relpath("valid_3_b_1.nii.gz") == "valid/valid_3/valid_3_b/valid_3_b_1.nii.gz"
    with pytest.raises(FinescaleError):
        ct_io.patient_id("scan.nii.gz")


def test_inspect_volume_reports_what_the_loader_sees(tmp_path):
    path = write_nifti(tmp_path / "train_1_a_1.nii.gz", header_scaling=(1.0, -1024.0))
    info = ct_io.inspect_volume(path)
    assert info["shape"] == [3, 4, 5] and info["scaling"] == "header" and info["dtype_on_disk"] == "int16"
    assert info["hu_min"] == -1024.0 and info["hu_max"] == STORED_ZYX.max() - 1024.0
    assert info["hu_p1"] <= info["hu_p50"] <= info["hu_p99"]
    header = ["VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing"]
    meta = write_csv(tmp_path / "meta.csv", header, [["train_1_a_1.nii.gz", "1", "-8192", "[0.5, 0.5]", "2"]])
    info = ct_io.inspect_volume(path, meta)
    assert info["scaling"] == "csv" and info["spacing_mm"] == [2.0, 0.5, 0.5] and info["hu_min"] == -8192.0
