"""Codec table of the CT volume store: compression ratio, encode and decode MB/s, and the time to read 12 slices, for
the seed's LZ4 frame (whole volume), each store codec (Blosc2 ``.b2nd``, chunked along z), ``.nii.gz`` and, when
zarr is importable, Zarr v3 with the default Blosc codec.

    python benchmarks/ct_codecs.py --out runs/bench/ct_codecs            # synthetic phantoms + pydicom's CT slice
    python benchmarks/ct_codecs.py --volumes data/ct/volumes --metadata data/ct/metadata.csv --n 4   # your volumes

Arrays (int16 HU, (Z, Y, X)): each phantom at its own grid (what a downloaded .nii.gz holds) and on the quick preset's
grid (what ``finescale ct pack`` stores), plus pydicom's ``CT_small.dcm`` (one real 128 x 128 slice, HU from its
RescaleSlope / Intercept). Phantoms come from ``finescale.synth.ct.generate_ct`` (``--n`` at its default shape and one
at ``--big-shape``), else from a simple built-in phantom (body, lungs, spine, table, noise); the table says which.

Timed as CPU seconds of this process (``time.process_time``; every codec runs on one thread), best of ``--repeats``,
warm page cache: on a shared machine wall time would mostly measure the neighbours. Ratio = raw int16 bytes / bytes on
disk (file headers included); encode MB/s = raw MB / compression seconds (nii.gz: serialise + gzip); decode MB/s =
raw MB / (open + read the whole array) seconds; 12 slices = open + read 12 evenly spaced slices (LZ4 frame and
.nii.gz must decode everything). The 12-slice target is checked on arrays with at least 12 slices.

The default codec is picked by one rule, weighing what the store is for: the most volumes per GB (ratio) among codecs
fast enough that decoding never limits training (decode >= 250 MB/s: a quick-grid volume in < 5 ms) or packing
(encode >= 30 MB/s, faster than the resampling before it); ratios within 2 % of the best count as equal and then the
fastest encode + decode wins. Ratio and speeds are geometric means over the phantom arrays. Writes ``codecs.json``
and ``codecs.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blosc2
import lz4.frame
import nibabel as nib
import numpy as np

from finescale.data.ct_grid import HU_MAX, HU_MIN, to_grid
from finescale.data.ct_io import VOLUME_SUFFIXES, CTVolume, find_metadata_row, read_metadata_csv, read_volume
from finescale.data.volume_store import DEFAULT_CODEC, encode_volume, parse_codec, read_volume_file, store_layout

STORE_CODECS = (
    "none",
    "lz4",
    "lz4+shuffle",
    "lz4+bitshuffle",
    "lz4hc+shuffle",
    "lz4hc+bitshuffle",
    "zstd",
    "zstd+shuffle",
    "zstd+bitshuffle",
    "zstd+bitshuffle:1",
    "zstd+delta+bitshuffle",
    "zstd+shuffle+bytedelta:1",
    "zstd+shuffle+bytedelta:3",
    "zstd+shuffle+bytedelta",
)
MIN_DECODE_MB_S = 250.0
MIN_ENCODE_MB_S = 30.0
RATIO_TIE = 0.02  # ratios within 2 % are within the phantoms' own spread (4 %): then the faster round trip wins
READ_SLICES = 12
MAX_REPEATS = 30
MB = 1e6


def best_time(fn: Callable[[], Any], repeats: int, budget_s: float = 1.0) -> tuple[float, Any]:
    """(fewest CPU seconds over the calls, the last result): at least ``repeats`` calls, more (up to
    ``MAX_REPEATS``) while they add up to under 0.1 s, fewer once they pass ``budget_s`` (a 1 MB/s codec on a 12 MB
    volume is not made more precise by a fifth run). On a shared machine a millisecond call needs many tries to
    see one undisturbed run."""
    best, result, spent = math.inf, None, 0.0
    for call in range(1, MAX_REPEATS + 1):
        start = time.process_time()
        result = fn()
        seconds = time.process_time() - start
        best, spent = min(best, seconds), spent + seconds
        if spent > budget_s or (call >= repeats and spent > 0.1):
            break
    return max(best, 1e-6), result


def spread_slices(depth: int, n: int = READ_SLICES) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, depth - 1, min(n, depth))})


# --------------------------------------------------------------------------------------------------------- arrays


def builtin_phantom(seed: int, shape=(96, 256, 256), noise_hu: float = 20.0) -> np.ndarray:
    """(Z, Y, X) int16 HU chest-like phantom: air, body, textured lungs, spine, table, Gaussian noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    hu = np.full(shape, -1000.0, np.float32)
    hu[(y / 0.7) ** 2 + (x / 0.9) ** 2 < 1] = 40.0
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.5) * 400
    lungs = ((y + 0.05) / 0.5) ** 2 + ((np.abs(x) - 0.42) / 0.33) ** 2 < 1
    hu[lungs] = (-850 + texture)[lungs]
    hu[((y - 0.5) / 0.12) ** 2 + (x / 0.12) ** 2 < 1] = 700.0
    hu[(y > 0.78) & (y < 0.84) & (np.abs(x) < 0.95)] = 250.0
    hu += rng.normal(0, noise_hu, shape).astype(np.float32)
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)


def read_folder(folder: Path, n: int, metadata_csv: Path | None) -> list[CTVolume]:
    """The first ``n`` volumes under ``folder`` in HU (scaled by ``metadata_csv`` rows where it has them)."""
    table = read_metadata_csv(metadata_csv) if metadata_csv is not None and metadata_csv.exists() else {}
    paths = sorted(p for p in folder.rglob("*") if p.name.lower().endswith(VOLUME_SUFFIXES))[:n]
    if not paths:
        raise SystemExit(f"no volumes under {folder}")
    return [read_volume(p, metadata=find_metadata_row(table, p.name)) for p in paths]


def phantom_volumes(args: argparse.Namespace, work: Path) -> tuple[dict[str, CTVolume], str]:
    """{label: volume in HU} and where they came from: ``--volumes``, else ``finescale.synth.ct`` phantoms (at the
    generator's default shape, plus one at ``--big-shape``), else built-in phantoms."""
    if args.volumes is not None:
        volumes = read_folder(args.volumes, args.n, args.metadata)
        return {f"volume {i}": v for i, v in enumerate(volumes)}, f"volumes from {args.volumes}"
    try:
        from finescale.synth.ct import generate_ct
    except ImportError:
        spacing = (2.5, 1.2, 1.2)
        volumes = {f"built-in phantom {i}": builtin_phantom(i) for i in range(args.n)}
        origin = "built-in phantoms (finescale.synth.ct not available)"
        return {k: CTVolume(a.astype(np.float32), spacing, "none", k) for k, a in volumes.items()}, origin
    generate_ct(work / "synth", n=args.n, seed=0, workers=1)
    volumes = read_folder(work / "synth", args.n, work / "synth" / "metadata.csv")
    found = {f"synth phantom {i}": v for i, v in enumerate(volumes)}
    if args.big_shape:
        shape = tuple(int(v) for v in args.big_shape.split(","))
        generate_ct(work / "synth_big", n=1, seed=1, workers=1, shape=shape)
        found["synth phantom (big)"] = read_folder(work / "synth_big", 1, work / "synth_big" / "metadata.csv")[0]
    return found, "finescale.synth.ct phantoms (seed 0; the big one seed 1)"


def as_int16(volume: CTVolume) -> np.ndarray:
    return np.clip(np.rint(volume.hu), HU_MIN, HU_MAX).astype(np.int16)


def dicom_ct_slice() -> np.ndarray | None:
    """pydicom's CT_small.dcm as a (1, 128, 128) int16 HU volume, or None without pydicom."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        return None
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)[None]


# --------------------------------------------------------------------------------------------------------- formats


def measure_store(array: np.ndarray, codec: str, work: Path, repeats: int) -> dict[str, float]:
    """A store volume file: compression with the store's chunks and blocks, then ``read_volume_file``."""
    path = work / "v.b2nd"
    meta = encode_volume(path, array, codec=codec, meta={"name": "bench"})  # the file as pack writes it
    chunks, blocks = store_layout(array.shape)
    cparams = parse_codec(codec).cparams()
    encode, _ = best_time(lambda: blosc2.asarray(array, chunks=chunks, blocks=blocks, cparams=cparams), repeats)
    decode, whole = best_time(lambda: read_volume_file(path), repeats)
    assert np.array_equal(whole, array)
    wanted = spread_slices(array.shape[0])
    read12, _ = best_time(lambda: read_volume_file(path, wanted), repeats)
    return row(array, path.stat().st_size, encode, decode, read12) | {"stored_as": meta["codec"]}


def measure_lz4_frame(array: np.ndarray, work: Path, repeats: int) -> dict[str, float]:
    """The seed's format: the whole array's bytes through ``lz4.frame`` (default level), in one file."""
    path = work / "v.lz4"
    encode, data = best_time(lambda: lz4.frame.compress(array.tobytes()), repeats)
    path.write_bytes(data)

    def read() -> np.ndarray:
        return np.frombuffer(lz4.frame.decompress(path.read_bytes()), dtype=np.int16).reshape(array.shape)

    decode, whole = best_time(read, repeats)
    assert np.array_equal(whole, array)
    wanted = spread_slices(array.shape[0])
    read12, _ = best_time(lambda: read()[wanted], repeats)
    return row(array, path.stat().st_size, encode, decode, read12)


def measure_nifti_gz(array: np.ndarray, work: Path, repeats: int, level: int) -> dict[str, float]:
    """``.nii.gz`` as nibabel reads it; written with gzip ``level`` (nibabel's own default is 1)."""
    path = work / "v.nii.gz"
    image = nib.Nifti1Image(np.transpose(array, (2, 1, 0)), np.eye(4))
    encode, data = best_time(lambda: gzip.compress(image.to_bytes(), compresslevel=level), repeats)
    path.write_bytes(data)

    def read() -> np.ndarray:
        return np.asarray(nib.load(str(path)).dataobj)  # (X, Y, Z) int16: every byte decompressed

    decode, whole = best_time(read, repeats)
    assert np.array_equal(np.transpose(whole, (2, 1, 0)), array)
    wanted = spread_slices(array.shape[0])
    read12, _ = best_time(lambda: read()[:, :, wanted], repeats)
    return row(array, path.stat().st_size, encode, decode, read12)


def measure_zarr(array: np.ndarray, work: Path, repeats: int) -> dict[str, float] | None:
    """Zarr v3, same chunks and Blosc codec as the default store codec (zstd, bitshuffle, level 5)."""
    try:
        import zarr
        from zarr.codecs import BloscCodec
    except ImportError:
        return None
    path = work / "v.zarr"
    chunks = (min(4, array.shape[0]), *array.shape[1:])

    def write() -> None:
        shutil.rmtree(path, ignore_errors=True)
        codec = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle", typesize=2)
        target = zarr.create_array(str(path), shape=array.shape, dtype="int16", chunks=chunks, compressors=codec)
        target[:] = array

    encode, _ = best_time(write, repeats)
    decode, whole = best_time(lambda: zarr.open_array(str(path), mode="r")[:], repeats)
    assert np.array_equal(whole, array)
    wanted = spread_slices(array.shape[0])
    read12, _ = best_time(lambda: zarr.open_array(str(path), mode="r").oindex[wanted, :, :], repeats)
    files = [p for p in path.rglob("*") if p.is_file()]
    return row(array, sum(p.stat().st_size for p in files), encode, decode, read12) | {"files": len(files)}


def row(array: np.ndarray, stored: int, encode: float, decode: float, read12: float) -> dict[str, float]:
    return {
        "ratio": round(array.nbytes / stored, 3),
        "encode_mb_s": round(array.nbytes / MB / encode, 1),
        "decode_mb_s": round(array.nbytes / MB / decode, 1),
        "read12_ms": round(read12 * 1e3, 3),
    }


def measure_array(array: np.ndarray, work: Path, repeats: int) -> dict[str, dict]:
    rows = {"lz4-frame": measure_lz4_frame(array, work, repeats)}
    rows |= {f"store {c}": measure_store(array, c, work, repeats) for c in STORE_CODECS}
    rows[NII_GZ] = measure_nifti_gz(array, work, repeats, level=1)
    rows["nii.gz (gzip 6)"] = measure_nifti_gz(array, work, repeats, level=6)
    zarr_row = measure_zarr(array, work, repeats)
    if zarr_row is not None:
        rows["zarr v3 zstd+bitshuffle"] = zarr_row
    return rows


# --------------------------------------------------------------------------------------------------------- summary


def geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


NII_GZ = "nii.gz (gzip 1, nibabel's default)"


def summarise(tables: dict[str, dict[str, dict]], phantom_keys: list[str], depths: dict[str, int]) -> dict[str, Any]:
    """Means over the phantom arrays, the codec the rule picks, and the two targets."""
    keys = ("ratio", "encode_mb_s", "decode_mb_s")
    mean = {
        f: {k: round(geomean([tables[a][f][k] for a in phantom_keys]), 3) for k in keys}
        for f in tables[phantom_keys[0]]
    }
    eligible = {
        f: m
        for f, m in mean.items()
        if f.startswith("store ")
        and f != "store none"
        and m["decode_mb_s"] >= MIN_DECODE_MB_S
        and m["encode_mb_s"] >= MIN_ENCODE_MB_S
    }
    pick = None
    if eligible:
        best_ratio = max(m["ratio"] for m in eligible.values())
        tied = [f for f, m in eligible.items() if m["ratio"] >= best_ratio * (1 - RATIO_TIE)]
        pick = min(tied, key=lambda f: 1 / eligible[f]["encode_mb_s"] + 1 / eligible[f]["decode_mb_s"])
    store = f"store {DEFAULT_CODEC}"
    targets = {
        array: {
            "ratio_vs_lz4_frame": round(t[store]["ratio"] / t["lz4-frame"]["ratio"], 3),
            "read12_speedup_vs_nii_gz": round(t[NII_GZ]["read12_ms"] / t[store]["read12_ms"], 1),
        }
        for array, t in tables.items()
    }
    deep = [a for a in tables if depths[a] >= READ_SLICES]
    return {
        "mean_over_phantoms": mean,
        "rule": (
            f"max ratio among codecs with decode >= {MIN_DECODE_MB_S:g} MB/s and encode >= {MIN_ENCODE_MB_S:g} MB/s; "
            f"within {RATIO_TIE:.0%} of it, the fastest encode + decode"
        ),
        "picked": pick.removeprefix("store ") if pick else None,
        "default_codec": DEFAULT_CODEC,
        "targets": targets,
        "targets_met": {
            "store_ratio_ge_lz4_frame": all(t["ratio_vs_lz4_frame"] >= 1 for t in targets.values()),
            "store_read12_10x_faster_than_nii_gz": all(targets[a]["read12_speedup_vs_nii_gz"] >= 10 for a in deep),
        },
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# CT volume store codecs\n\nArrays: {report['origin']}; {report['note']}\n"]
    for array, rows in report["tables"].items():
        shape = report["shapes"][array]
        lines += [
            f"## {array}: {' x '.join(map(str, shape))} int16 ({np.prod(shape) * 2 / MB:.2f} MB)\n",
            "| format | ratio | encode MB/s | decode MB/s | 12 slices ms |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, r in rows.items():
            note = (
                f" (stored as {r['stored_as']})"
                if r.get("stored_as") not in (None, name.removeprefix("store "))
                else ""
            )
            note += f" ({r['files']} files)" if "files" in r else ""
            lines.append(
                f"| {name}{note} | {r['ratio']:.2f} | {r['encode_mb_s']:.0f} | {r['decode_mb_s']:.0f} | "
                f"{r['read12_ms']:.2f} |"
            )
        lines.append("")
    summary = report["summary"]
    lines += [
        "## Choice",
        "",
        f"Rule: {summary['rule']} (geometric means over the phantom arrays). Picked: `{summary['picked']}`; "
        f"the store's default: `{summary['default_codec']}`.",
        "",
        "| array | default's ratio / LZ4 frame's | 12 slices: .nii.gz time / store time |",
        "| --- | ---: | ---: |",
    ]
    for array, t in summary["targets"].items():
        lines.append(f"| {array} | {t['ratio_vs_lz4_frame']:.2f} | {t['read12_speedup_vs_nii_gz']:.1f}x |")
    lines += ["", f"Targets met: {json.dumps(summary['targets_met'])}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ct_codecs"))
    parser.add_argument("--volumes", type=Path, default=None, help="a folder of volumes instead of phantoms")
    parser.add_argument("--metadata", type=Path, default=None, help="metadata CSV of --volumes (HU scaling)")
    parser.add_argument("--n", type=int, default=2, help="phantom volumes at the generator's default shape")
    parser.add_argument("--big-shape", default="128,256,256", help="one more phantom of this shape Z,Y,X ('' = none)")
    parser.add_argument("--spacing", default="5,2.5,2.5", help="store grid spacing z,y,x mm (the quick preset's)")
    parser.add_argument("--shape", default="48,112,112", help="store grid shape Z,Y,X (the quick preset's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spacing = tuple(float(v) for v in args.spacing.split(","))
    shape = tuple(int(v) for v in args.shape.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        volumes, origin = phantom_volumes(args, work)
        arrays = {}
        for label, volume in volumes.items():
            arrays[f"{label} at its own grid"] = as_int16(volume)
            arrays[f"{label} on the store grid"] = to_grid(volume, spacing=spacing, shape=shape)
        phantom_keys = list(arrays)
        dicom = dicom_ct_slice()
        if dicom is not None:
            arrays["pydicom CT_small.dcm (real CT slice)"] = dicom
        tables = {}
        for name, array in arrays.items():
            print(f"measuring {name} {array.shape}", flush=True)
            tables[name] = measure_array(array, work, args.repeats)
    report = {
        "origin": origin,
        "note": f"store grid {spacing} mm, {shape}; CPU time of one thread, warm cache, best of {args.repeats}",
        "shapes": {name: list(a.shape) for name, a in arrays.items()},
        "tables": tables,
        "summary": summarise(tables, phantom_keys, {name: a.shape[0] for name, a in arrays.items()}),
    }
    (args.out / "codecs.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "codecs.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
