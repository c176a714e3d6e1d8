"""What the master's tables share: records by id, in the order they came, read as a Mapping."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

R = TypeVar("R")


class Table(Mapping[str, R]):
    """Records by id, in insertion order; a subclass decides how they come and go."""

    def __init__(self) -> None:
        self._rows: dict[str, R] = {}

    def __getitem__(self, key: str) -> R:
        return self._rows[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)
