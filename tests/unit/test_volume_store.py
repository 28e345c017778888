"""The CT grid and the compressed volume store: bit-exact round trips, z-chunk layout, budget stop, resume, a pack
killed mid-way, corrupt inputs, an in-memory fsspec source and the uncompressed fallback. Tiny volumes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import blosc2
import fsspec
import nibabel as nib
import numpy as np
import pytest

from finescale.data.ct_grid import to_grid
from finescale.data.ct_io import CTVolume, read_volume
from finescale.data.volume_pack import pack
from finescale.data.volume_store import (
    CHUNK_SLICES,
    VolumeStore,
    encode_volume,
    parse_codec,
    read_volume_file,
)
from finescale.errors import FinescaleError

SPACING = (2.0, 1.5, 1.5)  # grid (z, y, x) mm
SHAPE = (10, 20, 20)  # grid (Z, Y, X)
SOURCE_SPACING = (1.5, 0.9, 0.9)


def phantom(seed: int, shape: tuple[int, int, int] = (14, 36, 36)) -> np.ndarray:
    """(Z, Y, X) int16 HU: air, a noisy body ellipse, two lungs and a dense spot."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(y / 0.7) ** 2 + (x / 0.9) ** 2 < 1] = 40
    hu[((y / 0.5) ** 2 + ((np.abs(x) - 0.4) / 0.3) ** 2) < 1] = -850
    hu[(np.abs(z) < 0.2) & (np.abs(y - 0.5) < 0.1) & (np.abs(x) < 0.1)] = 3500  # saturates at 3071
    hu += rng.normal(0, 15, shape)
    return np.rint(hu).astype(np.int16)


def write_nifti(path: Path, hu: np.ndarray, spacing=SOURCE_SPACING) -> Path:
    """A NIfTI file of (Z, Y, X) ``hu`` (stored as nibabel's (X, Y, Z)) with voxel sizes ``spacing`` (z, y, x)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)), affine), str(path))
    return path


def make_folder(root: Path, n: int, start: int = 0) -> list[Path]:
    """``n`` volumes in CT-RATE's nested layout under ``root``."""
    return [
        write_nifti(root / f"train_{i}" / f"train_{i}_a" / f"train_{i}_a_1.nii.gz", phantom(i))
        for i in range(start, start + n)
    ]


def expected_grid(path: Path) -> np.ndarray:
    return to_grid(read_volume(path), spacing=SPACING, shape=SHAPE)


def pack_quietly(source, out, **options) -> dict:
    options = {"spacing": SPACING, "shape": SHAPE, "workers": 1, "progress": False} | options
    return pack(source, out, **options)


# ------------------------------------------------------------------------------------------------------- to_grid


def volume(hu: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> CTVolume:
    return CTVolume(hu=hu.astype(np.float32), spacing=spacing, scaling="none", source="test")


def test_to_grid_at_the_same_spacing_and_shape_is_the_rounded_volume():
    hu = np.random.default_rng(0).normal(0, 300, (6, 8, 10)).astype(np.float32)
    grid = to_grid(volume(hu), spacing=(1, 1, 1), shape=hu.shape)
    assert grid.dtype == np.int16
    np.testing.assert_array_equal(grid, np.clip(np.rint(hu), -1024, 3071))


def test_to_grid_centre_pads_with_air_and_centre_crops():
    hu = np.full((4, 6, 6), 100.0)
    padded = to_grid(volume(hu), spacing=(1, 1, 1), shape=(8, 6, 10))
    assert (padded[2:6, :, 2:8] == 100).all()
    assert (padded[:2] == -1024).all() and (padded[6:] == -1024).all() and (padded[:, :, :2] == -1024).all()
    ramp = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 3, 3))
    cropped = to_grid(volume(ramp), spacing=(1, 1, 1), shape=(4, 3, 3))
    assert cropped[:, 1, 1].tolist() == [3, 4, 5, 6]


def test_to_grid_resamples_to_the_spacing_and_clips_to_ct_range():
    ramp = (np.arange(21, dtype=np.float32) * 10)[:, None, None] * np.ones((21, 4, 4))  # 10 HU per 1 mm slice
    grid = to_grid(volume(ramp, spacing=(1.0, 1.0, 1.0)), spacing=(2.0, 1.0, 1.0), shape=(9, 4, 4))
    # the 2 mm grid is centred on slice 10: its slices sit at 2, 4, ..., 18 mm, a linear ramp stays exact inside
    np.testing.assert_array_equal(grid[1:-1, 1, 1], np.arange(4, 17, 2) * 10)
    extreme = to_grid(volume(np.array([-3000.0, 0, 5000]).reshape(3, 1, 1)), spacing=(1, 1, 1), shape=(3, 1, 1))
    assert extreme.ravel().tolist() == [-1024, 0, 3071]


# -------------------------------------------------------------------------------------------- round trip, layout


def test_pack_round_trip_is_bit_exact_including_z_subsets(tmp_path):
    sources = make_folder(tmp_path / "src", 2)
    stats = pack_quietly(tmp_path / "src", tmp_path / "store")
    store = VolumeStore(tmp_path / "store")
    assert stats["volumes_stored"] == 2 and store.names() == ["train_0_a_1.nii.gz", "train_1_a_1.nii.gz"]
    for path in sources:
        want = expected_grid(path)
        got = store.read(path.name)
        assert got.dtype == np.int16 and got.shape == SHAPE
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(store.read(path.name, z=[7, 1, 1, -1, 4, 5]), want[[7, 1, 1, -1, 4, 5]])
        np.testing.assert_array_equal(store.read(path.name, z=slice(2, 7)), want[2:7])
        np.testing.assert_array_equal(store.read(path.name, z=slice(None, None, 3)), want[::3])
        assert store.read(path.name, z=[]).shape == (0, *SHAPE[1:])
    meta = store.meta("train_1_a_1")  # a stem finds the volume too
    assert meta["shape"] == list(SHAPE) and meta["spacing"] == list(SPACING)
    assert meta["source"] == str(sources[1]) and meta["codec"] == stats["codec"]
    assert (
        meta["raw_bytes"] == np.prod(SHAPE) * 2 and meta["stored_bytes"] == store.file(sources[1].name).stat().st_size
    )
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert sorted(index) == store.names()
    saved = json.loads((tmp_path / "store" / "pack_stats.json").read_text())
    for key in ("ratio", "encode_mb_s", "decode_mb_s", "stored_bytes", "raw_bytes", "codecs"):
        assert saved[key] == stats[key]
    with pytest.raises(IndexError):
        store.read(sources[0].name, z=[SHAPE[0]])


def test_volumes_are_chunked_along_z_and_read_without_finescale(tmp_path):
    sources = make_folder(tmp_path / "src", 1)
    pack_quietly(tmp_path / "src", tmp_path / "store")
    store = VolumeStore(tmp_path / "store")
    array = blosc2.open(str(store.file(sources[0].name)), mode="r")  # plain blosc2, as any other tool would
    assert array.chunks == (CHUNK_SLICES, *SHAPE[1:])  # a few whole slices per chunk
    assert array.blocks == (1, *SHAPE[1:])  # Blosc decodes one slice at a time
    np.testing.assert_array_equal(array[:], expected_grid(sources[0]))
    assert array.vlmeta["finescale"]["spacing"] == list(SPACING)


def test_read_volume_file_reads_b2nd_files_of_any_chunking(tmp_path):
    """The store reads whole-plane blocks as flat items; any other layout goes through NDArray slicing."""
    array = np.random.default_rng(0).integers(-1024, 3072, (9, 7, 5)).astype(np.int16)
    blosc2.asarray(array, chunks=(2, 4, 5), blocks=(1, 2, 5), urlpath=str(tmp_path / "other.b2nd"), mode="w")
    for z in (None, [8, 0, 0, 3, 4], slice(2, 9)):
        np.testing.assert_array_equal(read_volume_file(tmp_path / "other.b2nd", z), array if z is None else array[z])


def test_manifest_records_keep_labels_and_metadata_rows_set_the_hu_scaling(tmp_path):
    src = tmp_path / "data"
    paths = make_folder(src / "volumes", 2)
    row = {"VolumeName": paths[0].name, "RescaleSlope": 1.0, "RescaleIntercept": -24.0, "XYSpacing": [0.9, 0.9]}
    records = [
        {"volume": str(p.relative_to(src)), "name": p.name, "patient": f"train_{i}", "labels": [i, 1 - i]}
        for i, p in enumerate(paths)
    ]
    records[0]["metadata"] = row | {"ZSpacing": 1.5}
    (src / "train.json").write_text(json.dumps(records))
    pack_quietly(src / "train.json", tmp_path / "store")
    store = VolumeStore(tmp_path / "store")
    assert store.manifest == records
    assert store.meta(paths[0].name)["scaling"] == "csv" and store.meta(paths[1].name)["scaling"] == "none"
    shifted = read_volume(paths[0], metadata=records[0]["metadata"])
    np.testing.assert_array_equal(store.read(paths[0].name), to_grid(shifted, spacing=SPACING, shape=SHAPE))


# --------------------------------------------------------------------------------------------- budget and resume


def test_pack_stops_at_the_budget_and_reports_data_utilisation(tmp_path):
    sources = make_folder(tmp_path / "src", 8)
    pack_quietly(tmp_path / "src", tmp_path / "all")
    everything = VolumeStore(tmp_path / "all")
    sizes = [everything.meta(p.name)["stored_bytes"] for p in sources]
    budget = sum(sizes[:5]) + sizes[5] // 2  # five fit, the sixth does not
    stats = pack_quietly(tmp_path / "src", tmp_path / "store", max_storage_gb=budget / 1e9)
    store = VolumeStore(tmp_path / "store")
    assert store.names() == [p.name for p in sources[:5]]  # a prefix of the source order
    assert stats["budget_reached"] and stats["volumes_stored"] == 5 and stats["volumes_not_packed"] == 3
    assert stats["stored_bytes"] <= budget
    raw_fit = int((np.cumsum([p.stat().st_size for p in sources]) <= budget).sum())  # as .nii.gz files
    assert 1 <= raw_fit < 5
    assert stats["raw_volumes_in_budget"] == raw_fit
    assert stats["data_utilisation"] == pytest.approx(5 / raw_fit, abs=1e-3)
    assert not list((tmp_path / "store" / "volumes").glob(".*"))  # no temporaries left behind
    again = pack_quietly(tmp_path / "src", tmp_path / "store", max_storage_gb=budget / 1e9)
    assert again["volumes_packed"] == 0 and again["budget_reached"] and again["volumes_already_stored"] == 5


def test_a_second_pack_skips_stored_volumes_and_adds_new_ones(tmp_path):
    make_folder(tmp_path / "src", 2)
    pack_quietly(tmp_path / "src", tmp_path / "store")
    store = VolumeStore(tmp_path / "store")
    mtimes = {name: store.file(name).stat().st_mtime_ns for name in store.names()}
    make_folder(tmp_path / "src", 1, start=2)
    stats = pack_quietly(tmp_path / "src", tmp_path / "store")
    assert stats["volumes_packed"] == 1 and stats["volumes_already_stored"] == 2 and stats["volumes_stored"] == 3
    store = VolumeStore(tmp_path / "store")
    assert {name: store.file(name).stat().st_mtime_ns for name in mtimes} == mtimes  # not rewritten
    with pytest.raises(FinescaleError, match="spacing"):
        pack_quietly(tmp_path / "src", tmp_path / "store", spacing=(3.0, 1.5, 1.5))
    with pytest.raises(FinescaleError, match="not a volume store"):
        VolumeStore(tmp_path / "src")
    with pytest.raises(FinescaleError, match="not a volume store"):
        pack_quietly(tmp_path / "src", tmp_path / "src" / "train_0")  # a folder holding other files


KILLED_PACK = """
import sys, time
from finescale.data import volume_pack

real_encode = volume_pack.encode_volume
def encode_then_hang(path, grid, **kw):
    meta = real_encode(path, grid, **kw)
    if "train_0_" not in str(path):
        time.sleep(600)  # the second volume's verified temporary file is on disk, not yet renamed
    return meta
volume_pack.encode_volume = encode_then_hang
volume_pack.pack(sys.argv[1], sys.argv[2], spacing={spacing}, shape={shape}, workers=1, progress=False)
"""


def test_a_killed_pack_leaves_only_complete_volumes_and_a_rerun_completes(tmp_path):
    sources = make_folder(tmp_path / "src", 3)
    out = tmp_path / "store"
    script = KILLED_PACK.format(spacing=SPACING, shape=SHAPE)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path / "src"), str(out)], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list((out / "volumes").glob(".train_1_a_1*")) and time.monotonic() < deadline:
            assert child.poll() is None, "the pack to kill ended early"
            time.sleep(0.1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert list((out / "volumes").glob(".train_1_a_1*")), "the pack was not caught mid-way"
    (out / "volumes" / "train_2_a_1.b2nd").write_bytes(b"b2nd-looking junk")  # e.g. a half copy by hand
    store = VolumeStore(out)
    assert store.names() == ["train_0_a_1.nii.gz"]  # the temporary and the junk are not volumes
    np.testing.assert_array_equal(store.read("train_0_a_1.nii.gz"), expected_grid(sources[0]))
    (out / "volumes" / "train_2_a_1.b2nd").unlink()
    stats = pack_quietly(tmp_path / "src", out)
    assert stats["volumes_already_stored"] == 1 and stats["volumes_packed"] == 2
    assert not list((out / "volumes").glob(".*"))  # the killed run's temporary is gone
    store = VolumeStore(out)
    for path in sources:
        np.testing.assert_array_equal(store.read(path.name), expected_grid(path))


# ------------------------------------------------------------------------------------------ corrupt inputs, fsspec


def test_corrupt_truncated_and_missing_inputs_are_skipped_and_counted(tmp_path):
    good = make_folder(tmp_path / "src", 2)
    data = good[0].read_bytes()
    (tmp_path / "src" / "train_7_a_1.nii.gz").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "src" / "train_8_a_1.nii.gz").write_bytes(b"not a volume at all")
    (tmp_path / "src" / "train_9_a_1.nii.gz").write_bytes(b"")
    stats = pack_quietly(tmp_path / "src", tmp_path / "store")
    assert stats["skipped"] == {"unreadable_volume": 3} and stats["volumes_stored"] == 2
    assert {s["name"] for s in stats["skipped_files"]} == {
        "train_7_a_1.nii.gz",
        "train_8_a_1.nii.gz",
        "train_9_a_1.nii.gz",
    }
    records = [
        {"volume": str(good[1]), "name": good[1].name},
        {"volume": str(tmp_path / "gone.nii.gz")},
        {"x": 1},
        {"volume": str(good[0]), "name": ".hidden.nii.gz"},
        {"volume": str(good[0]), "name": good[1].name},
    ]
    stats = pack_quietly(records, tmp_path / "store2")
    assert stats["volumes_stored"] == 1
    assert stats["skipped"] == {"missing_file": 1, "missing_field": 1, "bad_name": 1, "duplicate_name": 1}


def test_an_in_memory_fsspec_source_packs_like_a_local_folder(tmp_path):
    local = make_folder(tmp_path / "src", 3)
    fs = fsspec.filesystem("memory")
    root = f"/ct-{uuid.uuid4().hex[:8]}"
    try:
        for path in local:
            fs.pipe(f"{root}/{path.relative_to(tmp_path / 'src').as_posix()}", path.read_bytes())
        fs.pipe(f"{root}/notes.txt", b"not a volume")
        remote = pack_quietly(f"memory://{root}", tmp_path / "from_memory", workers=2)  # fetched here, packed there
    finally:
        fs.rm(root, recursive=True)
    pack_quietly(tmp_path / "src", tmp_path / "from_disk")
    a, b = VolumeStore(tmp_path / "from_memory"), VolumeStore(tmp_path / "from_disk")
    assert remote["volumes_stored"] == 3 and a.names() == b.names()
    assert a.meta(local[0].name)["source"] == f"memory://{root}/train_0/train_0_a/train_0_a_1.nii.gz"
    for name in a.names():
        np.testing.assert_array_equal(a.read(name), b.read(name))


# --------------------------------------------------------------------------------------------- codecs, fallback


def test_incompressible_volumes_are_stored_uncompressed(tmp_path):
    noise = np.random.default_rng(0).integers(-32768, 32768, (6, 16, 16)).astype(np.int16)
    meta = encode_volume(tmp_path / "noise.b2nd", noise, codec="zstd+bitshuffle", meta={"name": "noise"})
    assert meta["codec"] == "none" and meta["stored_bytes"] >= noise.nbytes
    np.testing.assert_array_equal(blosc2.open(str(tmp_path / "noise.b2nd"))[:], noise)
    # through pack: uniform HU noise on the source grid does not pay, a noisy body does
    hu = np.random.default_rng(1).integers(-1024, 3072, SHAPE).astype(np.int16)
    write_nifti(tmp_path / "src" / "noise.nii.gz", hu, spacing=SPACING)
    write_nifti(tmp_path / "src" / "body.nii.gz", phantom(0))
    stats = pack_quietly(tmp_path / "src", tmp_path / "store", codec="lz4+shuffle")
    store = VolumeStore(tmp_path / "store")
    assert store.meta("noise.nii.gz")["codec"] == "none" and store.meta("body.nii.gz")["codec"] == "lz4+shuffle"
    assert set(stats["codecs"]) == {"none", "lz4+shuffle"}
    np.testing.assert_array_equal(store.read("noise.nii.gz"), hu)


def test_pack_is_importable_from_the_store_module():
    from finescale.data import volume_pack, volume_store

    assert volume_store.pack is volume_pack.pack


def test_codec_names_parse_to_blosc_settings():
    codec = parse_codec("ZSTD+shuffle+bytedelta:7")
    assert codec.name == "zstd+shuffle+bytedelta:7" and codec.codec == blosc2.Codec.ZSTD and codec.level == 7
    assert codec.filters == (blosc2.Filter.SHUFFLE, blosc2.Filter.BYTEDELTA)
    assert parse_codec("lz4:5").name == "lz4" and parse_codec("none").level == 0
    for bad in ("zip", "zstd+lzma", "zstd:0", "zstd:x", "none+shuffle"):
        with pytest.raises(FinescaleError, match="codec"):
            parse_codec(bad)
