"""contracts.batching.MicroBatcher: items that arrive while a batch runs form the next one, each
caller gets its own item's result (or the batch's error), and with several workers a batch that
waits does not stop the next."""

import asyncio
from collections.abc import Sequence

import pytest

from contracts.batching import BatchInterrupted, MicroBatcher


class Recorder:
    """A batch handler that doubles each item, records every batch, and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.running = 0
        self.most_running = 0
        self.two_running = asyncio.Event()

    async def handle(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if self.running >= 2:
            self.two_running.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [item * 2 for item in items]


async def test_items_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = MicroBatcher(recorder.handle, window_seconds=0, max_size=10)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the worker starts and takes item 1 alone
    await asyncio.sleep(0)
    later = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await asyncio.gather(first, *later) == [2, 4, 6, 8]
    assert recorder.batches == [[1], [2, 3, 4]]
    await batcher.aclose()


async def test_a_batch_never_holds_more_than_max_size() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder.handle, window_seconds=0.05, max_size=3)

    assert await asyncio.gather(*(batcher.submit(n) for n in range(7))) == [n * 2 for n in range(7)]
    assert [len(batch) for batch in recorder.batches] == [3, 3, 1]
    await batcher.aclose()


async def test_with_two_workers_a_held_batch_does_not_stop_the_next() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = MicroBatcher(recorder.handle, window_seconds=0, max_size=1, workers=2)
    held = [asyncio.create_task(batcher.submit(n)) for n in (1, 2)]

    await asyncio.wait_for(recorder.two_running.wait(), timeout=5)
    recorder.release.set()
    assert await asyncio.gather(*held) == [2, 4]
    assert recorder.most_running == 2
    await batcher.aclose()


async def test_one_worker_runs_one_batch_at_a_time() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder.handle, window_seconds=0, max_size=1)

    await asyncio.gather(*(batcher.submit(n) for n in range(5)))

    assert recorder.most_running == 1
    await batcher.aclose()


async def test_a_failed_batch_fails_each_of_its_callers_and_the_worker_carries_on() -> None:
    calls = 0

    async def failing_once(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return list(items)

    batcher = MicroBatcher(failing_once, window_seconds=0.05, max_size=10)
    failed = await asyncio.gather(*(batcher.submit(n) for n in (1, 2)), return_exceptions=True)

    assert [str(error) for error in failed] == ["database down", "database down"]
    assert await batcher.submit(3) == 3
    await batcher.aclose()


async def test_a_cancelled_error_the_batch_met_fails_its_callers_and_the_worker_carries_on() -> (
    None
):
    """A CancelledError not of the worker's own cancellation (aiormq cancels the futures of a
    channel that closes) was taken for the batcher closing: its callers were cancelled, the
    worker died, and every later caller waited for ever (cancellation review)."""
    calls = 0

    async def interrupted_once(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError("the channel closed")
        return list(items)

    batcher = MicroBatcher(interrupted_once, window_seconds=0.05, max_size=10)
    failed = await asyncio.gather(*(batcher.submit(n) for n in (1, 2)), return_exceptions=True)

    assert [type(error) for error in failed] == [BatchInterrupted, BatchInterrupted]
    assert await asyncio.wait_for(batcher.submit(3), timeout=5) == 3
    await batcher.aclose()


def test_a_batcher_needs_a_worker_and_room_for_an_item() -> None:
    async def handle(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError):
        MicroBatcher(handle, window_seconds=0, max_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(handle, window_seconds=0, max_size=1, workers=0)


async def test_closing_cancels_the_callers_it_will_not_answer() -> None:
    """An item the worker had taken while it gathered a batch, and one still queued behind a
    running batch: their callers waited for ever once the batcher closed."""
    running = asyncio.Event()

    async def hold(items: Sequence[int]) -> list[int]:
        running.set()
        await asyncio.Event().wait()  # never answers
        return list(items)

    gathering = MicroBatcher(Recorder().handle, window_seconds=60, max_size=10)
    taken = asyncio.create_task(gathering.submit(1))
    held: MicroBatcher[int, int] = MicroBatcher(hold, window_seconds=0, max_size=1)
    handled = asyncio.create_task(held.submit(1))
    await running.wait()
    queued = asyncio.create_task(held.submit(2))
    for _ in range(1000):  # until the worker took item 1 (white box), and item 2 is queued
        if gathering._waiting.empty() and not held._waiting.empty():
            break
        await asyncio.sleep(0)
    assert gathering._waiting.empty() and not held._waiting.empty()

    await gathering.aclose()
    await held.aclose()

    results = await asyncio.wait_for(
        asyncio.gather(taken, handled, queued, return_exceptions=True), timeout=5
    )
    assert all(isinstance(result, asyncio.CancelledError) for result in results), results
