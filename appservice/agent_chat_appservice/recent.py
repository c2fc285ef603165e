"""A map of per-caller state that cannot grow without bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar
import time

K = TypeVar("K")
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """Values with the time each was last set, oldest first. An entry older than ``max_age``
    seconds is forgotten (its owner must then be treated as new), and beyond ``cap`` entries
    the oldest goes even if younger: memory stays bounded whoever calls.

    Every operation is O(1) amortised: entries are kept in the order they were set, so the
    ones to forget are always at the front.
    """

    def __init__(
        self, max_age: float, cap: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self.cap = cap
        self.clock = clock
        self._entries: dict[K, tuple[V, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> tuple[V, float] | None:
        """The value and when it was set, or None if absent or forgotten."""
        entry = self._entries.get(key)
        if entry is None or self.clock() - entry[1] >= self.max_age:
            return None
        return entry

    def set(self, key: K, value: V) -> None:
        now = self.clock()
        self._entries.pop(key, None)  # re-inserted at the end: the newest
        self._entries[key] = (value, now)
        self._forget(now)

    def drop_where(self, unwanted: Callable[[K, V], bool]) -> None:
        """Forget every entry for which ``unwanted(key, value)`` holds (O(n): rare calls)."""
        for key in [k for k, (v, _) in self._entries.items() if unwanted(k, v)]:
            del self._entries[key]

    def _forget(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if len(entries) <= self.cap and now - entries[oldest][1] < self.max_age:
                break
            del entries[oldest]
