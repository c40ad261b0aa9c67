"""The statement-building probe of the statement-budget tests counts the block's own work: what
a background task (the API's request-log writer) builds meanwhile is not the block's."""

import asyncio

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
