"""Bookkeeping of one ``pack`` run (``data/volume_pack.py``): what was packed, skipped or left out, and the statistics
written to ``pack_stats.json``: compression ratio and encode/decode speed per codec, and the seed's "data
utilisation" (stored volumes against the raw volumes the same storage budget would have held)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finescale.data.volume_sources import PackItem
from finescale.data.volume_store import VolumeStore

__all__ = ["Tally", "pack_stats", "summary_line"]

log = logging.getLogger("finescale.data.volume_pack")

MAX_LISTED_SKIPS = 50
MB = 1e6


@dataclass
class Tally:
    """Counts of one pack run."""

    packed: int = 0
    already_stored: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    bad_names: set[str] = field(default_factory=set)
    budget_reached: bool = False
    not_packed: int = 0

    def skip(self, item: PackItem, reason: str, error: str = "") -> None:
        self.skipped[reason] += 1
        self.bad_names.add(item.name)
        if len(self.skipped_files) < MAX_LISTED_SKIPS:
            self.skipped_files.append({"name": item.name, "source": item.location, "reason": reason, "error": error})
        log.warning("skipped %s (%s)%s", item.location or item.name, reason, f": {error}" if error else "")


def _rate(nbytes: float, seconds: float) -> float | None:
    return round(nbytes / MB / seconds, 1) if seconds > 0 else None


def _timed_rate(metas: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """MB/s over the volumes that carry a ``key`` time (a volume whose index entry was lost lacks decode_seconds)."""
    timed = [m for m in metas if m.get(key) is not None]
    return _rate(sum(m["raw_bytes"] for m in timed), sum(m[key] for m in timed))


def _codec_stats(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    raw = sum(m["raw_bytes"] for m in metas)
    stored = sum(m["stored_bytes"] for m in metas)
    return {
        "volumes": len(metas),
        "raw_bytes": raw,
        "stored_bytes": stored,
        "ratio": round(raw / stored, 3) if stored else None,
        "encode_mb_s": _timed_rate(metas, "encode_seconds"),
        "decode_mb_s": _timed_rate(metas, "decode_seconds"),
    }


def _raw_volumes_in_budget(items: Sequence[PackItem], tally: Tally, budget: int) -> int:
    """How many usable source files, in source order, fit in ``budget`` bytes as they are (e.g. .nii.gz)."""
    used, count = 0, 0
    for item in items:
        if item.name in tally.bad_names or item.source_bytes is None:
            continue
        used += item.source_bytes
        if used > budget:
            break
        count += 1
    return count


def pack_stats(store: VolumeStore, items: Sequence[PackItem], tally: Tally, budget: int | None, codec: str) -> dict:
    metas = list(store.index().values())
    by_codec: dict[str, list] = {}
    for meta in metas:
        by_codec.setdefault(meta["codec"], []).append(meta)
    overall = _codec_stats(metas)
    del overall["volumes"]  # = volumes_stored
    source_bytes = sum(m.get("source_bytes") or 0 for m in metas)
    raw_in_budget = _raw_volumes_in_budget(items, tally, budget) if budget is not None else None
    return {
        "store": str(store.path),
        "spacing": list(store.spacing),
        "shape": list(store.shape),
        "codec": codec,
        "volumes_stored": len(metas),
        "volumes_packed": tally.packed,
        "volumes_already_stored": tally.already_stored,
        "volumes_skipped": sum(tally.skipped.values()),
        "skipped": dict(sorted(tally.skipped.items())),
        "skipped_files": tally.skipped_files,
        "volumes_not_packed": tally.not_packed,
        "budget_bytes": budget,
        "budget_reached": tally.budget_reached,
        **overall,
        "source_bytes": source_bytes,
        "source_to_stored_ratio": round(source_bytes / overall["stored_bytes"], 3) if overall["stored_bytes"] else None,
        "raw_volumes_in_budget": raw_in_budget,
        "data_utilisation": round(len(metas) / raw_in_budget, 3) if raw_in_budget else None,
        "codecs": {name: _codec_stats(group) for name, group in sorted(by_codec.items())},
    }


def summary_line(stats: Mapping[str, Any]) -> str:
    text = (
        f"packed {stats['volumes_packed']} volumes into {stats['store']} ({stats['volumes_stored']} stored, "
        f"{stats['volumes_already_stored']} already there, {stats['volumes_skipped']} skipped); ratio {stats['ratio']}"
    )
    if stats["budget_bytes"] is not None:
        text += (
            f"; budget {'reached' if stats['budget_reached'] else 'not reached'}: {stats['volumes_stored']} stored "
            f"volumes vs {stats['raw_volumes_in_budget']} raw, data utilisation {stats['data_utilisation']}"
        )
    return text
