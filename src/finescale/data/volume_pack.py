"""``pack``: CT volumes from a manifest, a folder or any fsspec URL -> a :class:`VolumeStore` of fixed-grid int16 HU.

Each volume is streamed through read -> ``to_grid`` -> compress -> write -> drop, so the raw volumes never need disk
space: a local file is read by the worker; a remote one (``hf://``, ``s3://``, ``memory://``) is fetched into memory by
the main process and handed to a worker. At most ``workers + 1`` volumes are in flight.

Guarantees:
- atomic: a worker writes a hidden temporary file, fsyncs it and verifies it decodes bit-exact; the main process
  renames it into place, so a killed pack leaves no half volume under a listed name (stale temporaries are removed by
  the next pack);
- resumable: a volume already in the store is skipped;
- budget: volumes are committed in source order while the store's total size stays within ``max_storage_gb``; the
  first one that does not fit stops the pack, so the stored set is a prefix of the source order, whatever the
  workers' finishing order;
- corrupt, truncated or missing inputs are skipped and counted by reason (``missing_file``, ``missing_field``,
  ``unreadable_volume``, ``bad_metadata``, ``bad_volume``, ``bad_name``, ``duplicate_name``, ``fetch_error``).

``STORE/pack_stats.json`` (also returned): volume counts, bytes (``raw_bytes`` = int16 grid, ``stored_bytes`` = files,
``source_bytes`` = the input files), ``ratio`` = raw / stored (compression alone), ``source_to_stored_ratio``, encode
and decode MB/s (10^6 grid bytes per CPU second of one thread; decode = open + full read-back) overall and per
codec, and with a budget the seed's **data utilisation**: volumes stored / volumes whose source files (.nii.gz) would
have fit in the same budget, both counted in source order.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from finescale.data.ct_grid import to_grid
from finescale.data.ct_io import read_volume, volume_stem
from finescale.data.pack_stats import Tally, pack_stats, summary_line
from finescale.data.volume_sources import PackItem, _is_url, discover
from finescale.data.volume_store import (
    DEFAULT_CODEC,
    TEMP_MARK,
    VOLUME_DIR,
    VOLUME_SUFFIX,
    VolumeStore,
    encode_volume,
    init_store,
    parse_codec,
    volume_file,
)
from finescale.errors import FinescaleError, ImageReadError

__all__ = ["pack"]

log = logging.getLogger(__name__)

INDEX_EVERY_SECONDS = 30.0  # index.json is a cache of the files' own meta: rewriting it now and then is enough


# ------------------------------------------------------------------------------------------------------- workers


@dataclass
class PackJob:
    """What a worker needs to pack one volume (picklable)."""

    item: PackItem
    temp_path: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    codec: str
    data: bytes | None = None  # the fetched file of a remote source; None: the worker reads item.location


@dataclass
class PackOutcome:
    """A worker's answer: a verified temporary file and its meta, or a skip reason."""

    item: PackItem
    temp_path: str | None = None
    meta: dict[str, Any] | None = None
    reason: str | None = None
    error: str | None = None


def _read_job_volume(job: PackJob):
    item = job.item
    if job.data is not None:
        return read_volume(io.BytesIO(job.data), metadata=item.metadata, name=item.name)
    return read_volume(item.location.removeprefix("file://"), metadata=item.metadata, name=item.name)


def pack_one(job: PackJob) -> PackOutcome:
    """Read, grid and encode one volume into ``job.temp_path`` (runs in a worker process)."""
    try:
        volume = _read_job_volume(job)
    except ImageReadError as e:
        return PackOutcome(job.item, reason="unreadable_volume", error=str(e))
    except FinescaleError as e:
        return PackOutcome(job.item, reason="bad_metadata", error=str(e))
    try:
        grid = to_grid(volume, spacing=job.spacing, shape=job.shape)
    except FinescaleError as e:
        return PackOutcome(job.item, reason="bad_volume", error=str(e))
    item = job.item
    meta = {
        "name": item.name,
        "spacing": list(job.spacing),
        "source": item.location,
        "source_bytes": item.source_bytes,
        "source_shape": list(volume.hu.shape),
        "source_spacing": list(volume.spacing),
        "scaling": volume.scaling,
        "record": item.record,
    }
    del volume  # the float32 volume is the big one: drop it before compressing
    meta = encode_volume(job.temp_path, grid, codec=job.codec, meta=meta)
    return PackOutcome(item, temp_path=job.temp_path, meta=meta)


def _fetch(job: PackJob) -> PackJob | PackOutcome:
    """Fetch a remote source into memory (main process); local files are read by the worker itself."""
    if not _is_url(job.item.location):
        return job
    try:
        fs, path = fsspec.core.url_to_fs(job.item.location)
        job.data = fs.cat_file(path)
    except FileNotFoundError as e:
        return PackOutcome(job.item, reason="missing_file", error=str(e))
    except Exception as e:  # network errors arrive as many types, by backend: skip the volume, count it
        return PackOutcome(job.item, reason="fetch_error", error=f"{type(e).__name__}: {e}")
    return job


def _run_in_order(jobs: Iterator[PackJob], workers: int) -> Iterator[PackOutcome]:
    """Outcomes in job order; ``workers`` processes (spawned: no fork of a threaded parent), ``workers + 1`` in
    flight. Closing the generator cancels the jobs not started and waits for the running ones."""
    if workers <= 1:
        for job in jobs:
            fetched = _fetch(job)
            yield fetched if isinstance(fetched, PackOutcome) else pack_one(fetched)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    pending: deque[Future | PackOutcome] = deque()
    try:
        for job in jobs:
            fetched = _fetch(job)
            pending.append(fetched if isinstance(fetched, PackOutcome) else pool.submit(pack_one, fetched))
            while len(pending) > workers:
                head = pending.popleft()
                yield head if isinstance(head, PackOutcome) else head.result()
        while pending:
            head = pending.popleft()
            yield head if isinstance(head, PackOutcome) else head.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -------------------------------------------------------------------------------------------------- bookkeeping


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One pack per store at a time (an OS lock: released even when the process is killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent packs into one store are the user's to avoid
        yield
        return
    with open(root / ".pack.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FinescaleError(
                f"another pack is writing to {root}; wait for it or pack into another folder"
            ) from None
        yield


def _remove_temporaries(root: Path, token: str = "") -> None:
    for temp in (root / VOLUME_DIR).glob(f".*{TEMP_MARK}{token}*{VOLUME_SUFFIX}"):
        temp.unlink(missing_ok=True)


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from finescale.console import stderr_console

    progress = Progress(
        TextColumn("[bold]pack"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stored]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
    )
    progress.add_task("pack", total=total, stored="")
    return progress


# ---------------------------------------------------------------------------------------------------------- pack


def _select(items: Sequence[PackItem], store: VolumeStore, tally: Tally) -> list[PackItem]:
    """Items still to pack: not stored yet, listed correctly, existing, and the first of their name."""
    todo, seen = [], set()
    for item in items:
        stem = volume_stem(item.name)
        if item.problem:
            tally.skip(item, item.problem)
        elif not stem or stem.startswith("."):
            tally.skip(item, "bad_name", "an empty or hidden file name cannot name a stored volume")
        elif item.name in store:
            tally.already_stored += 1
        elif stem in seen:
            tally.skip(item, "duplicate_name", f"another source already gave {stem}")
        elif item.source_bytes is None:
            tally.skip(item, "missing_file", "file not found")
        else:
            seen.add(stem)
            todo.append(item)
    return todo


def _commit_in_order(
    outcomes: Iterator[PackOutcome],
    store: VolumeStore,
    tally: Tally,
    budget: int | None,
    on_done: Callable[[int], None],
) -> None:
    """Commit each verified volume in source order until the budget; skipped ones are counted."""
    used = sum(m["stored_bytes"] for m in store.index().values())
    last_index_write = time.monotonic()
    for outcome in outcomes:
        if outcome.meta is None:
            tally.skip(outcome.item, outcome.reason or "unknown", outcome.error or "")
        elif budget is not None and used + outcome.meta["stored_bytes"] > budget:
            Path(outcome.temp_path).unlink(missing_ok=True)
            tally.budget_reached = True
            return
        else:
            store._commit(Path(outcome.temp_path), outcome.meta)
            used += outcome.meta["stored_bytes"]
            tally.packed += 1
        on_done(used)
        if time.monotonic() - last_index_write > INDEX_EVERY_SECONDS:
            store.write_index()
            last_index_write = time.monotonic()


def pack(
    source: str | os.PathLike | Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    *,
    spacing: Sequence[float],
    shape: Sequence[int],
    codec: str = DEFAULT_CODEC,
    max_storage_gb: float | None = None,
    workers: int = 2,
    metadata_csv: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess every volume of ``source`` onto the (``spacing``, ``shape``) grid and store it in ``out``.

    Args:
        source: manifest records (``{"volume", "name", "labels", "metadata", ...}``), a JSON/JSONL manifest path, or
            a folder / fsspec URL (``memory://...``, ``hf://datasets/...``) searched recursively for volumes.
        out: the store folder (created, or resumed when it holds the same grid).
        spacing: grid spacing (z, y, x) mm. shape: grid shape (Z, Y, X).
        codec: store codec (``volume_store.parse_codec``); the default is the codec bench's pick.
        max_storage_gb: stop before the store's volume files exceed this many GB (10^9 bytes).
        workers: processes (1 = in this process).
        metadata_csv: CT-RATE metadata CSV for HU scaling and spacing (overrides the records' own).
        progress: a rich progress bar on stderr.

    Returns:
        The statistics also written to ``out/pack_stats.json`` (module docstring).
    """
    started = time.perf_counter()
    codec = parse_codec(codec).name
    if max_storage_gb is not None and max_storage_gb <= 0:
        raise FinescaleError(f"--max-storage-gb must be positive, got {max_storage_gb}")
    if workers < 1:
        raise FinescaleError(f"--workers must be at least 1, got {workers}")
    budget = int(max_storage_gb * 1e9) if max_storage_gb is not None else None
    items = discover(source, metadata_csv)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    grid_spacing = tuple(float(s) for s in spacing)
    grid_shape = tuple(int(n) for n in shape)
    with _exclusive(root):
        store = init_store(root, spacing=grid_spacing, shape=grid_shape)
        _remove_temporaries(root)  # left by a killed pack
        tally = Tally()
        todo = _select(items, store, tally)
        token = uuid.uuid4().hex[:12]
        jobs = (
            PackJob(item, str(_temp_path(root, item.name, token)), grid_spacing, grid_shape, codec) for item in todo
        )
        outcomes = _run_in_order(jobs, min(workers, len(todo)))  # a pool only pays for 2+ volumes
        try:
            with _progress_bar(progress, len(todo)) as bar:

                def advance(used_bytes: int) -> None:
                    if bar is not None:
                        limit = f" / {max_storage_gb:g}" if max_storage_gb is not None else ""
                        bar.update(bar.task_ids[0], advance=1, stored=f"{used_bytes / 1e9:.3f}{limit} GB")

                _commit_in_order(outcomes, store, tally, budget, advance)
        finally:
            outcomes.close()  # stops the pool; then no worker writes any more
            _remove_temporaries(root, token)
            store.write_index()
        done = tally.packed + sum(tally.skipped.values()) + tally.already_stored
        tally.not_packed = len(items) - done
        stats = pack_stats(store, items, tally, budget, codec) | {"seconds": round(time.perf_counter() - started, 2)}
        (root / "pack_stats.json").write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    if progress:
        from finescale.console import stderr_console

        stderr_console().print(summary_line(stats), highlight=False)
    else:
        log.info(summary_line(stats))
    return stats


def _temp_path(root: Path, name: str, token: str) -> Path:
    final = volume_file(root, name)
    return final.with_name(f".{final.name[: -len(VOLUME_SUFFIX)]}{TEMP_MARK}{token}{VOLUME_SUFFIX}")
