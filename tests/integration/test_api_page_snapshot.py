"""A page's `total` and the rows it lists come from one snapshot. Under READ COMMITTED the count
and the rows were two snapshots: a payout failed between them was listed under a `total` that
did not count it, while the payout counted was on no page and `hasMore` said there was none."""

import asyncio
import threading
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    read_one_snapshot,
)
from contracts.settings import Settings
from tests.support.api_helpers import API, auth, create_payout, fail_payout, new_merchant


def _fail_elsewhere(database_url: str, payout_id: str) -> None:
    """Fails the payout on a connection of another engine and commits, as the processor would,
    while the API's request waits on this thread."""

    async def fail() -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            await fail_payout(create_session_factory(engine), payout_id)
        finally:
            await engine.dispose()

    worker = threading.Thread(target=lambda: asyncio.run(fail()))
    worker.start()
    worker.join(timeout=30)


async def test_a_page_lists_what_its_total_counted(
    api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    merchant = await new_merchant(sessions)
    counted = await create_payout(api_client, merchant, merchantReference="snapshot-1")
    changed_meanwhile = await create_payout(api_client, merchant, merchantReference="snapshot-2")
    await fail_payout(sessions, counted["id"])
    interleaved: list[str] = []

    def after_the_count(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not interleaved and "count(*)" in statement and "FROM payouts" in statement:
            interleaved.append(statement)
            _fail_elsewhere(settings.database_url, changed_meanwhile["id"])

    event.listen(Engine, "after_cursor_execute", after_the_count)
    try:
        response = await api_client.get(
            f"{API}/payouts?status=FAILED&limit=1", headers=auth(merchant, "")
        )
    finally:
        event.remove(Engine, "after_cursor_execute", after_the_count)

    assert interleaved
    data = response.json()["data"]
    listed = [payout["merchantReference"] for payout in data["payouts"]]
    assert (listed, data["pagination"]["total"], data["pagination"]["hasMore"]) == (
        ["snapshot-1"],
        1,
        False,
    )


async def test_the_connection_reads_committed_again_once_the_page_is_read(
    settings: Settings,
) -> None:
    """The pool's connections serve the write paths, whose locking assumes READ COMMITTED."""
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    sessions = create_session_factory(engine)
    isolation = text("SELECT @@tx_isolation")
    try:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))  # a read already begun, as the API key's
            await read_one_snapshot(session)
            assert await session.scalar(isolation) == "REPEATABLE-READ"
        async with sessions() as session:
            assert await session.scalar(isolation) == "READ-COMMITTED"
    finally:
        await engine.dispose()
