"""The statement-building probe of the statement-budget tests counts the block's own work: what
a background task (the API's request-log writer) builds meanwhile is not the block's."""

import asyncio
import contextvars

from sqlalchemy import column, select, table

from tests.support.statements import statements_built

_TABLE = table("t", column("id"))


def _build(name: str) -> None:
    str(select(_TABLE.c.id).where(_TABLE.c.id == name))


async def test_what_the_block_builds_is_counted_and_what_its_tasks_build_too() -> None:
    with statements_built() as built:
        _build("mine")
        await asyncio.create_task(_build_soon("started inside"))

    assert len(built) == 2, built
    assert all(entry.startswith("compiled: SELECT t.id") for entry in built), built


async def test_a_task_started_before_the_block_builds_nothing_of_the_block() -> None:
    go, done = asyncio.Event(), asyncio.Event()

    async def background() -> None:
        await go.wait()
        _build("background")
        done.set()

    task = asyncio.create_task(background())
    with statements_built() as built:
        go.set()
        await done.wait()
    await task

    assert built == []


async def _build_soon(name: str) -> None:
    await asyncio.sleep(0)
    _build(name)


async def test_every_task_counts_a_worker_that_runs_in_a_context_of_its_own() -> None:
    """contracts.batching's workers run in an empty context: only `every_task` sees them."""
    for every_task, expected in ((False, 0), (True, 1)):
        with statements_built(every_task=every_task) as built:
            await asyncio.get_running_loop().create_task(
                _build_soon("worker"), context=contextvars.Context()
            )

        assert len(built) == expected, (every_task, built)
