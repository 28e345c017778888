"""Plain-dict registries for the blocks a config string selects.

Each table lives in the module that defines its entries and is filled there explicitly (``FUSIONS`` in
:mod:`finescale.nn.fusion` for ``length``'s ``fusion``, ``ATTENTIONS`` in :mod:`finescale.nn.attention` for
``dims``' ``attention``), so importing a table always gives it full, never depending on some other module having been
imported first. Adding a name twice is a bug and raises. A table nothing looks up by name does not belong here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from finescale.errors import FinescaleError


class Registry:
    """A named mapping from short names to builders (classes or functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def add(self, name: str, builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = builder
        return builder

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(sorted(self._entries)) or "none"
            raise FinescaleError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
