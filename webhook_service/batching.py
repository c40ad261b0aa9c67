"""Micro-batching: each caller submits one item and awaits its own result, while one worker hands
the items that arrived within a short window (or up to a maximum count) to a batch function.

The worker runs one batch at a time: under load the next batch gathers while the current one is
in the database, so the statements per item fall as the load rises, and a batcher never holds
more than one database connection.
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Submitted(Generic[T, R]):
    item: T
    result: "asyncio.Future[R]"
    at: float  # loop time


class MicroBatcher(Generic[T, R]):
    """`handle` gets a batch and returns one result per item, in order."""

    def __init__(
        self,
        handle: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        window_seconds: float,
        max_size: int,
    ) -> None:
        if max_size < 1:
            raise ValueError("a batch holds at least one item")
        self.handle = handle
        self.window_seconds = window_seconds
        self.max_size = max_size
        self._waiting: asyncio.Queue[_Submitted[T, R]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            # An empty context: the worker serves every caller, so it must not carry the log
            # context (payout, merchant) of the first one.
            self._worker = loop.create_task(self._run(), context=contextvars.Context())
        result: asyncio.Future[R] = loop.create_future()
        self._waiting.put_nowait(_Submitted(item, result, loop.time()))
        return await result

    async def aclose(self) -> None:
        """Stop the worker; call it once no caller waits any more."""
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _run(self) -> None:
        while True:
            await self._flush(await self._next_batch())

    async def _next_batch(self) -> list[_Submitted[T, R]]:
        """The oldest item and whatever follows it within the window, up to `max_size`. Items
        that queued while the previous batch ran are taken at once."""
        first = await self._waiting.get()
        batch = [first]
        with suppress(TimeoutError):
            async with asyncio.timeout_at(first.at + self.window_seconds):
                while len(batch) < self.max_size:
                    batch.append(await self._waiting.get())
        return batch

    async def _flush(self, batch: list[_Submitted[T, R]]) -> None:
        try:
            results = await self.handle([submitted.item for submitted in batch])
        except asyncio.CancelledError:  # closing: nobody will answer these callers
            for submitted in batch:
                submitted.result.cancel()
            raise
        except Exception as exc:  # each caller gets the error, and the worker carries on
            for submitted in batch:
                if not submitted.result.done():
                    submitted.result.set_exception(exc)
            return
        for submitted, result in zip(batch, results, strict=True):
            if not submitted.result.done():  # its caller may have gone (cancelled)
                submitted.result.set_result(result)
