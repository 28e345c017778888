"""A folder of preprocessed CT volumes, each stored losslessly as int16 HU in a Blosc2 NDArray file (``.b2nd``).

Layout (every file readable without finescale: ``blosc2.open("STORE/volumes/x.b2nd")[:]`` is the (Z, Y, X) array)::

    STORE/store.json        the grid: spacing (z, y, x) mm, shape (Z, Y, X), dtype, format version
    STORE/volumes/<stem>.b2nd   one volume; its vlmeta["finescale"] holds the volume's meta (below)
    STORE/index.json        {name: meta} for all volumes (a cache of the vlmeta, rebuilt from the files if stale)
    STORE/pack_stats.json   what ``pack`` did and measured (see ``volume_pack``)

Chunks are ``CHUNK_SLICES`` slices x the full plane and Blosc blocks (the unit Blosc decodes) are one slice, so
``read(name, z=[...])`` decodes only the requested slices: on a 64 x 384 x 384 volume one slice takes ~0.2 ms and
the whole volume ~40 ms. Why Blosc2 and not Zarr (measured by ``benchmarks/ct_codecs.py``): with the same Blosc codec
Zarr's ratio is within 4 % (its Blosc blocks are larger than one slice), but zarr-python 3 encodes 2x and decodes ~3x
slower, reads 12 slices ~10x slower and writes one file per chunk (13-33 per volume there) unless sharded; blosc2 is
already a dependency and keeps one file per volume.

Codecs are named ``<codec>[+<filter>...][:<level>]`` with codec ``lz4`` (the seed's), ``lz4hc``, ``zstd``,
``blosclz``, ``zlib`` or ``none`` and filters ``shuffle``, ``bitshuffle``, ``delta``, ``bytedelta`` applied in order,
e.g. ``zstd+shuffle+bytedelta:1`` (the default). A volume whose compression ratio would be under
``FALLBACK_MIN_RATIO`` is stored with codec ``none`` (raw chunks, still a ``.b2nd``): a few percent of space is not
worth decoding every read.

Per-volume meta: ``name``, ``shape`` (Z, Y, X), ``spacing`` (z, y, x) mm, ``source`` (path or URL), ``source_bytes``
(its file size), ``source_shape``, ``source_spacing``, ``scaling`` (HU scaling used), ``codec`` (as stored),
``raw_bytes`` (int16 grid bytes), ``stored_bytes`` (file size), ``encode_seconds``, ``decode_seconds``, ``record``
(the manifest record given to pack, with its labels, or None).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from finescale.data.ct_io import volume_stem
from finescale.errors import FinescaleError

__all__ = [
    "CHUNK_SLICES",
    "CODEC_CODECS",
    "CODEC_FILTERS",
    "DEFAULT_CODEC",
    "FALLBACK_MIN_RATIO",
    "StoreCodec",
    "VolumeStore",
    "encode_volume",
    "init_store",
    "parse_codec",
    "read_volume_file",
    "store_layout",
]

STORE_FORMAT = "finescale-volume-store"
STORE_VERSION = 1
META_KEY = "finescale"  # the vlmeta entry of each .b2nd file that holds its meta
VOLUME_DIR = "volumes"
VOLUME_SUFFIX = ".b2nd"
TEMP_MARK = ".tmp"  # temporary files: "." + stem + TEMP_MARK + token + VOLUME_SUFFIX, never listed

CHUNK_SLICES = 4  # slices per chunk; blocks are one slice, so one slice is the smallest decode
FALLBACK_MIN_RATIO = 1.05
# The codec bench's pick (benchmarks/ct_codecs.py, synth phantoms): ratio 2.26 vs LZ4 frame 1.19 and .nii.gz 1.68,
# encode 333 / decode 446 MB/s; zstd level 3 and 5 gain < 1 % ratio at 5-12x slower encoding. Byte-delta after
# shuffle codes each byte as the difference to its in-plane neighbour's: smooth anatomy leaves small numbers.
DEFAULT_CODEC = "zstd+shuffle+bytedelta:1"

CODEC_CODECS = {
    "none": blosc2.Codec.LZ4,  # with clevel 0 Blosc copies the bytes; the codec is never called
    "lz4": blosc2.Codec.LZ4,
    "lz4hc": blosc2.Codec.LZ4HC,
    "zstd": blosc2.Codec.ZSTD,
    "blosclz": blosc2.Codec.BLOSCLZ,
    "zlib": blosc2.Codec.ZLIB,
}
CODEC_FILTERS = {
    "shuffle": blosc2.Filter.SHUFFLE,
    "bitshuffle": blosc2.Filter.BITSHUFFLE,
    "delta": blosc2.Filter.DELTA,
    "bytedelta": blosc2.Filter.BYTEDELTA,
}
DEFAULT_LEVEL = 5  # Blosc's own default; 1-9 (for zstd Blosc maps it onto zstd's 1-22 scale)


# ------------------------------------------------------------------------------------------------------- codecs


@dataclass(frozen=True)
class StoreCodec:
    """A parsed codec name: Blosc2 codec, filter pipeline and level."""

    name: str  # canonical, e.g. "zstd+bitshuffle" or "lz4:9"
    codec: blosc2.Codec
    filters: tuple[blosc2.Filter, ...]
    level: int

    def cparams(self, typesize: int = 2) -> blosc2.CParams:
        """Single-threaded compression parameters (pack parallelises over volumes, not inside one)."""
        return blosc2.CParams(
            codec=self.codec,
            clevel=self.level,
            filters=list(self.filters) or [blosc2.Filter.NOFILTER],
            typesize=typesize,
            nthreads=1,
        )


def parse_codec(name: str) -> StoreCodec:
    """``"zstd+bitshuffle:7"`` -> :class:`StoreCodec`; a FinescaleError lists the choices for a bad name."""
    spec = name.strip().lower()
    base, _, level_text = spec.partition(":")
    codec_name, *filter_names = base.split("+")
    usage = f"codec {name!r}: use <codec>[+<filter>...][:<level 1-9>] with codec one of {', '.join(CODEC_CODECS)}"
    if codec_name not in CODEC_CODECS or any(f not in CODEC_FILTERS for f in filter_names):
        raise FinescaleError(f"{usage} and filters from {', '.join(CODEC_FILTERS)}")
    if codec_name == "none":
        if filter_names or level_text:
            raise FinescaleError(f"codec {name!r}: 'none' takes no filters or level")
        return StoreCodec("none", CODEC_CODECS["none"], (), 0)
    if level_text and not (level_text.isdigit() and 1 <= int(level_text) <= 9):
        raise FinescaleError(f"{usage} (level {level_text!r} is not 1-9)")
    level = int(level_text) if level_text else DEFAULT_LEVEL
    canonical = "+".join([codec_name, *filter_names]) + (f":{level}" if level != DEFAULT_LEVEL else "")
    filters = tuple(CODEC_FILTERS[f] for f in filter_names)
    return StoreCodec(canonical, CODEC_CODECS[codec_name], filters, level)


# ----------------------------------------------------------------------------------------------- volume files


def store_layout(shape: Sequence[int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(chunks, blocks) for a (Z, Y, X) volume: CHUNK_SLICES full planes per chunk, one plane per block."""
    z, y, x = shape
    return (max(1, min(CHUNK_SLICES, z)), y, x), (1, y, x)


def _compress(grid: np.ndarray, codec: StoreCodec) -> tuple[blosc2.NDArray, float]:
    """(in-memory NDArray, CPU seconds): the codec's cost alone, without the file system's or other processes'."""
    chunks, blocks = store_layout(grid.shape)
    start = time.process_time()
    array = blosc2.asarray(grid, chunks=chunks, blocks=blocks, cparams=codec.cparams(grid.itemsize))
    return array, time.process_time() - start


def _save_durably(array: blosc2.NDArray, path: Path, meta: Mapping[str, Any]) -> None:
    """Write ``array`` (compressed chunks copied as they are) with ``meta`` in its vlmeta, flushed to disk: the bytes
    must be on disk before a rename makes the file visible."""
    array.vlmeta[META_KEY] = dict(meta)
    path.unlink(missing_ok=True)
    array.save(str(path), contiguous=True)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _decode_check(path: Path, grid: np.ndarray) -> float:
    """Read ``path`` back whole and compare bit for bit; returns the decode CPU seconds (open + decompress)."""
    start = time.process_time()
    decoded = blosc2.open(str(path), mode="r", dparams=blosc2.DParams(nthreads=1))[:]
    seconds = time.process_time() - start
    if decoded.dtype != grid.dtype or not np.array_equal(decoded, grid):
        raise RuntimeError(f"{path}: the stored volume does not decode to the array written (a Blosc2 bug?)")
    return seconds


def encode_volume(path: str | os.PathLike, grid: np.ndarray, *, codec: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Store ``grid`` ((Z, Y, X) int16 HU) at ``path`` as a ``.b2nd`` file, verified lossless.

    Falls back to codec ``none`` when ``codec`` compresses by less than :data:`FALLBACK_MIN_RATIO`. Returns ``meta``
    plus ``shape``, ``dtype``, ``codec`` (as stored), ``raw_bytes``, ``stored_bytes``, ``encode_seconds``
    (compression only) and ``decode_seconds`` (open + full read-back of the file), both CPU seconds of one thread:
    what the codec costs, not how busy the machine was.
    """
    if grid.ndim != 3 or grid.dtype != np.int16:
        raise ValueError(f"expected a (Z, Y, X) int16 volume, got {grid.dtype} {grid.shape}")
    path = Path(path)
    grid = np.ascontiguousarray(grid)
    chosen = parse_codec(codec)
    array, encode_seconds = _compress(grid, chosen)
    if chosen.name != "none" and grid.nbytes / array.cbytes < FALLBACK_MIN_RATIO:
        chosen = parse_codec("none")
        array, _ = _compress(grid, chosen)
    full = {
        **meta,
        "shape": list(grid.shape),
        "dtype": "int16",
        "codec": chosen.name,
        "raw_bytes": int(grid.nbytes),
        "encode_seconds": encode_seconds,
    }
    _save_durably(array, path, full)
    return full | {"stored_bytes": path.stat().st_size, "decode_seconds": _decode_check(path, grid)}


def _z_indices(z: slice | Sequence[int], depth: int) -> np.ndarray:
    """Slice indices (any order, repeats allowed, negative from the end) as a 1-D int array within [0, depth)."""
    if isinstance(z, slice):
        return np.arange(depth)[z]
    indices = np.asarray(z, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < -depth or indices.max() >= depth):
        raise IndexError(f"slice index out of range for a volume of {depth} slices: {list(z)}")
    return np.where(indices < 0, indices + depth, indices)


def _runs(sorted_unique: np.ndarray) -> Iterable[tuple[int, int]]:
    """[start, stop) runs of consecutive integers: [1, 2, 3, 7] -> (1, 4), (7, 8)."""
    if sorted_unique.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_unique.size]])
    return [(int(sorted_unique[a]), int(sorted_unique[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def _planes_are_blocks(array: blosc2.NDArray) -> bool:
    """True for the store's layout: chunks and blocks of whole planes, so slice ``k`` is items
    ``[k * plane, (k + 1) * plane)`` of the flat super-chunk (chunk padding only ever follows the last slice)."""
    return array.ndim == 3 and array.chunks[1:] == array.shape[1:] and array.blocks == (1, *array.shape[1:])


def _read_run(array: blosc2.NDArray, start: int, stop: int, out: np.ndarray, *, flat: bool) -> None:
    """Slices [start, stop) into ``out``, decompressing only their blocks; ``flat``: the store's layout, read as
    items of the super-chunk (half the cost of NDArray slicing)."""
    if flat:
        plane = out[0].size if out.size else 0
        array.schunk.get_slice(start * plane, stop * plane, out=out)
    else:
        out[...] = array[start:stop]


def read_volume_file(path: str | os.PathLike, z: slice | Sequence[int] | None = None) -> np.ndarray:
    """(Z', Y, X) int16 from a ``.b2nd`` volume; ``z`` picks slices (a slice, or indices in any order, repeats
    allowed). Each run of consecutive slices is one Blosc2 call, which decompresses only the blocks (slices) it
    covers."""
    array = blosc2.open(os.fspath(path), mode="r", dparams=blosc2.DParams(nthreads=1))
    wanted = np.arange(array.shape[0]) if z is None else _z_indices(z, array.shape[0])
    unique = np.unique(wanted)
    out = np.empty((unique.size, *array.shape[1:]), dtype=array.dtype)
    flat, position = _planes_are_blocks(array), 0
    for start, stop in _runs(unique):
        _read_run(array, start, stop, out[position : position + stop - start], flat=flat)
        position += stop - start
    return out if np.array_equal(unique, wanted) else out[np.searchsorted(unique, wanted)]


# ------------------------------------------------------------------------------------------------------ the store


def _write_json_atomic(path: Path, data: Any) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(temp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def volume_file(root: str | os.PathLike, name: str) -> Path:
    """Where the volume ``name`` (a VolumeName, path or stem) lives in the store at ``root``."""
    stem = volume_stem(name)
    if not stem or stem.startswith("."):
        raise FinescaleError(f"{name!r} cannot name a stored volume (empty or hidden file name)")
    return Path(root) / VOLUME_DIR / f"{stem}{VOLUME_SUFFIX}"


def init_store(path: str | os.PathLike, *, spacing: Sequence[float], shape: Sequence[int]) -> VolumeStore:
    """Open the store at ``path``, creating it for this grid if new; a store of another grid is a FinescaleError."""
    root = Path(path)
    grid = {"spacing": [float(s) for s in spacing], "shape": [int(n) for n in shape]}
    info = _read_json(root / "store.json")
    if info is None:
        if root.exists() and any(p.name != ".pack.lock" for p in root.iterdir()):
            raise FinescaleError(f"{root} is a non-empty folder but not a volume store; pack into a new folder")
        (root / VOLUME_DIR).mkdir(parents=True, exist_ok=True)
        info = {"format": STORE_FORMAT, "version": STORE_VERSION, "dtype": "int16", "axes": "zyx", "units": "HU"}
        info |= grid | {"chunk_slices": CHUNK_SLICES}
        _write_json_atomic(root / "store.json", info)
    elif {k: info.get(k) for k in grid} != grid:
        raise FinescaleError(
            f"{root} holds volumes of spacing {info.get('spacing')} mm and shape {info.get('shape')}, not "
            f"{grid['spacing']} and {grid['shape']}; pack this grid into another folder"
        )
    return VolumeStore(root)


class VolumeStore:
    """Read side of a volume store (see the module docstring for the layout).

    ``names()`` lists every volume whose file is complete: pack writes each to a hidden temporary name and renames it
    into place, so a killed pack leaves nothing half-written under a listed name. Cheap to build and fork-safe (each
    ``read`` opens its file), so DataLoader workers can share one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.info = _read_json(self.path / "store.json")
        if not isinstance(self.info, dict) or self.info.get("format") != STORE_FORMAT:
            raise FinescaleError(
                f"{self.path} is not a volume store (no store.json); make one with `finescale ct pack`"
            )
        self._metas = self._load_metas()

    def _load_metas(self) -> dict[str, dict[str, Any]]:
        """{stem: meta} for the complete volume files, from index.json where it knows them, else from the file."""
        index = _read_json(self.path / "index.json")
        entries = index.values() if isinstance(index, dict) else []
        known = {volume_stem(m["name"]): m for m in entries if isinstance(m, dict) and isinstance(m.get("name"), str)}
        metas = {}
        for path in sorted((self.path / VOLUME_DIR).glob(f"[!.]*{VOLUME_SUFFIX}")):
            stem = path.name[: -len(VOLUME_SUFFIX)]
            meta = known.get(stem)
            if meta is None or meta.get("stored_bytes") != path.stat().st_size:
                meta = self._meta_from_file(path)
            if meta is not None:
                metas[stem] = meta
        return metas

    @staticmethod
    def _meta_from_file(path: Path) -> dict[str, Any] | None:
        try:
            array = blosc2.open(str(path), mode="r")  # must outlive the vlmeta read
            meta = dict(array.vlmeta[META_KEY])
        except Exception:  # not a complete finescale .b2nd (e.g. copied in by hand): not a listed volume
            return None
        return meta | {"stored_bytes": path.stat().st_size}

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Grid spacing (z, y, x) in mm."""
        return tuple(self.info["spacing"])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (Z, Y, X) of every stored volume."""
        return tuple(self.info["shape"])

    def names(self) -> list[str]:
        """The stored volumes' names (as given to pack: a VolumeName such as ``train_1_a_1.nii.gz``), sorted."""
        return sorted(meta["name"] for meta in self._metas.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and volume_stem(name) in self._metas

    def __len__(self) -> int:
        return len(self._metas)

    def _meta(self, name: str) -> dict[str, Any]:
        meta = self._metas.get(volume_stem(name))
        if meta is None:
            raise KeyError(f"{name!r} is not in the volume store {self.path}")
        return meta

    def meta(self, name: str) -> dict[str, Any]:
        """The volume's meta (spacing, shape, source, codec, raw_bytes, stored_bytes, ...; module docstring)."""
        return dict(self._meta(name))

    def file(self, name: str) -> Path:
        """The volume's ``.b2nd`` file."""
        self._meta(name)
        return volume_file(self.path, name)

    def read(self, name: str, z: slice | Sequence[int] | None = None) -> np.ndarray:
        """(Z', Y, X) int16 HU of volume ``name``: all slices, a slice, or the slices at indices ``z`` (in that
        order); only the requested slices are decompressed."""
        return read_volume_file(self.file(name), z)

    @property
    def manifest(self) -> list[dict[str, Any]]:
        """The records given to pack for the stored volumes (with their labels), in ``names()`` order; a volume
        packed from a folder has ``{"name", "volume"}`` only."""
        metas = sorted(self._metas.values(), key=lambda m: m["name"])
        return [m.get("record") or {"name": m["name"], "volume": m["source"]} for m in metas]

    def index(self) -> dict[str, dict[str, Any]]:
        """{name: meta} of every stored volume."""
        return {m["name"]: dict(m) for m in sorted(self._metas.values(), key=lambda m: m["name"])}

    def _commit(self, temp: Path, meta: dict[str, Any]) -> None:
        """Move a complete, fsynced temporary volume file into place (atomic) and list it (used by pack)."""
        final = volume_file(self.path, meta["name"])
        os.replace(temp, final)
        self._metas[volume_stem(meta["name"])] = meta | {"stored_bytes": final.stat().st_size}

    def write_index(self) -> None:
        """Rewrite ``index.json`` from the volumes found (atomic)."""
        _write_json_atomic(self.path / "index.json", self.index())


def __getattr__(name: str) -> Any:
    """``pack`` lives in ``volume_pack`` (which imports this module); importable from here too."""
    if name == "pack":
        from finescale.data.volume_pack import pack

        return pack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
