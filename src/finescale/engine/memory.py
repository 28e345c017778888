"""Peak memory of a piece of work: CUDA's allocator peak on a GPU, else the process's peak resident set size.

On Linux the resident peak (VmHWM) can be reset (``/proc/self/clear_refs``), so several runs in one process (a bench)
each report their own peak rather than the largest so far.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak(device: torch.device | str | None = None) -> None:
    """Start measuring a new peak (best effort: where the system allows no reset, the peak so far stays)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # Linux: reset the peak resident set size
    except OSError:
        pass


def peak_mb(device: torch.device | str | None = None) -> float:
    """MiB at the peak since the last :func:`reset_peak` (process start where it could not be reset)."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
