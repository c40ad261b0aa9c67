"""Copies of a keyed request in one API process wait for the first in memory, not in MySQL.

A copy of a request whose idempotency key is in use waits for the key's row lock (up to the
lock-wait limit) and replays the first's answer. Waiting in MySQL, each copy held a pooled
connection all that time: a client retrying a slow request every few hundred milliseconds used
up the pool, and every other merchant's requests on that API process waited for a connection.
Here a copy waits on the first's event, holding none, then claims the key in MySQL as before (and
replays). Copies sent to different API processes still meet at the row lock.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from api_service.errors import IdempotencyKeyInUse

KeyOfMerchant = tuple[str, str]  # (merchant id, canonical idempotency key)


@dataclass
class KeysInFlight:
    """The keys this API process is running a request with, each with the event its end sets."""

    wait_seconds: float
    _running: dict[KeyOfMerchant, asyncio.Event] = field(default_factory=dict)

    @asynccontextmanager
    async def first(
        self, key: KeyOfMerchant, *, before_waiting: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[None]:
        """Hold `key` in this process for the body's run. While another request holds it,
        `before_waiting` (release the database connection) runs once, then this waits for that
        request's end, at most `wait_seconds` in all (IdempotencyKeyInUse past them)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.wait_seconds
        released = False
        while (running := self._running.get(key)) is not None:
            if not released:
                await before_waiting()
                released = True
            try:
                await asyncio.wait_for(running.wait(), give_up_at - loop.time())
            except TimeoutError:
                raise IdempotencyKeyInUse from None
        ended = self._running[key] = asyncio.Event()
        try:
            yield
        finally:
            del self._running[key]
            ended.set()
