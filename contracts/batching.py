"""Micro-batching: each caller submits one item and awaits its own result, while one worker hands
the items that arrived within a short window (or up to a maximum count) to a batch function.

Each worker runs one batch at a time: under load the next batch gathers while the current ones
are in the database, so the statements per item fall as the load rises, and a batcher never
holds more database connections than it has workers. The webhook service batches its leases and
its attempt records this way (one worker each); the processor, its payout commands (two workers:
a batch waiting for a merchant's balance row, which each create takes too, does not stop the
next one).
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Generic, TypeVar

from contracts.stopping import being_cancelled

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
        workers: int = 1,
    ) -> None:
        if max_size < 1 or workers < 1:
            raise ValueError("a batch holds at least one item, and one worker runs it")
        self.handle = handle
        self.window_seconds = window_seconds
        self.max_size = max_size
        self.workers = workers
        self._waiting: asyncio.Queue[_Submitted[T, R]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if not self._workers:
            # An empty context: a worker serves every caller, so it must not carry the log
            # context (payout, merchant) of the first one.
            self._workers = [
                loop.create_task(self._run(), context=contextvars.Context())
                for _ in range(self.workers)
            ]
        result: asyncio.Future[R] = loop.create_future()
        self._waiting.put_nowait(_Submitted(item, result, loop.time()))
        return await result

    async def aclose(self) -> None:
        """Stop the workers; call it once no caller waits any more. A caller still waiting is
        cancelled (left waiting, its task hung until the loop closed)."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        while not self._waiting.empty():
            self._waiting.get_nowait().result.cancel()

    async def _run(self) -> None:
        while True:
            await self._flush(await self._next_batch())

    async def _next_batch(self) -> list[_Submitted[T, R]]:
        """The oldest item and whatever follows it within the window, up to `max_size`. Items
        that queued while the previous batch ran are taken at once."""
        first = await self._waiting.get()
        batch = [first]
        try:
            with suppress(TimeoutError):
                async with asyncio.timeout_at(first.at + self.window_seconds):
                    while len(batch) < self.max_size:
                        batch.append(await self._waiting.get())
        except asyncio.CancelledError:  # closing while gathering: nobody will handle these
            for submitted in batch:
                submitted.result.cancel()
            raise
        return batch

    async def _flush(self, batch: list[_Submitted[T, R]]) -> None:
        try:
            results = await self.handle([submitted.item for submitted in batch])
        except asyncio.CancelledError as cancelled:
            if being_cancelled():  # closing: nobody will answer these callers
                for submitted in batch:
                    submitted.result.cancel()
                raise
            # A CancelledError the batch met, not this worker's (a driver's future cancelled
            # as its connection closed): an error of the batch. The worker died of it, and
            # every later caller waited for ever (cancellation review).
            self._fail(batch, BatchInterrupted(repr(cancelled)))
            return
        except Exception as exc:  # each caller gets the error, and the worker carries on
            self._fail(batch, exc)
            return
        for submitted, result in zip(batch, results, strict=True):
            if not submitted.result.done():  # its caller may have gone (cancelled)
                submitted.result.set_result(result)

    @staticmethod
    def _fail(batch: list[_Submitted[T, R]], error: Exception) -> None:
        for submitted in batch:
            if not submitted.result.done():  # its caller may have gone (cancelled)
                submitted.result.set_exception(error)


class BatchInterrupted(Exception):
    """The batch function was interrupted by a cancellation that was not its worker's."""
