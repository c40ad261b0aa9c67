"""A map whose entries live a fixed time: what a process may remember of the database for a
couple of seconds (the merchant of an API key, a merchant's webhook endpoint)."""

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class ExpiringMap(Generic[K, V]):
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    # Oldest first: every entry lives equally long, so the expired ones are at the front.
    _entries: OrderedDict[K, tuple[float, V]] = field(default_factory=OrderedDict)

    def get(self, key: K) -> V | None:
        self._forget_expired()
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: K, value: V) -> None:
        """Nothing is kept when `ttl_seconds` is 0."""
        if self.ttl_seconds > 0:
            self._entries.pop(key, None)
            self._entries[key] = (self.clock(), value)

    def remove(self, key: K) -> None:
        self._entries.pop(key, None)

    def discard(self, matches: Callable[[V], bool]) -> None:
        for key in [key for key, (_, value) in self._entries.items() if matches(value)]:
            del self._entries[key]

    def _forget_expired(self) -> None:
        oldest_kept = self.clock() - self.ttl_seconds
        while self._entries and next(iter(self._entries.values()))[0] <= oldest_kept:
            self._entries.popitem(last=False)
