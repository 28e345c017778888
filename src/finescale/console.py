"""The one stderr console that finescale's log lines, progress bars and summaries go to (stdout carries results)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

# columns of a log written to a file or a pipe (a cluster job's log, `2> train.log`): rich's default there is 80,
# which breaks paths and JSON in the middle; a terminal keeps its own width, and COLUMNS, when set, wins
LOG_WIDTH = 200


def stderr_options() -> dict[str, Any]:
    """Keyword arguments for a rich ``Console`` (or ``rich.reconfigure``) that writes to stderr."""
    wide = not sys.stderr.isatty() and "COLUMNS" not in os.environ
    return {"stderr": True, "width": LOG_WIDTH if wide else None}


def stderr_console() -> Console:
    return Console(**stderr_options())
