"""One metric object for validation and evaluation alike: per-sample values collected over an epoch (or a test
set), then scored by the pipeline's own function from its ``metrics.py``.

Built on torchmetrics, so the collected values are gathered across DDP processes before scoring and stay on the
model's device (float32; nothing here needs float64, which Apple's MPS lacks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class CollectedScores(Metric):
    """``update(**values)`` appends per-sample tensors under the names in ``keys`` (a key may be left out, e.g. an
    optional head's output); ``compute()`` returns ``score({key: all values})``."""

    full_state_update = False

    def __init__(self, keys: Sequence[str], score: Callable[[dict[str, torch.Tensor]], dict[str, Any]]) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.score = score
        for key in self.keys:
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def update(self, **values: torch.Tensor) -> None:
        unknown = set(values) - set(self.keys)
        if unknown:
            raise KeyError(f"not collected: {sorted(unknown)}")
        for key, value in values.items():
            getattr(self, key).append(value.detach().reshape(value.shape[0], -1).squeeze(1))

    def collected(self) -> dict[str, torch.Tensor]:
        """Everything collected so far (this process's share), concatenated per key: for plots."""
        out = {}
        for key in self.keys:
            state = getattr(self, key)
            if isinstance(state, torch.Tensor) or state:
                out[key] = dim_zero_cat(state)
        return out

    def compute(self) -> dict[str, Any]:
        return self.score(self.collected())
