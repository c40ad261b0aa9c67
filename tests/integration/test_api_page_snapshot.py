"""A page's `total` and the rows it lists come from one snapshot. Under READ COMMITTED the count
and the rows were two snapshots: a payout failed between them was listed under a `total` that
did not count it, while the payout counted was on no page and `hasMore` said there was none."""

import asyncio
import threading
from typing import Any

import httpx
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine

from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    read_one_snapshot,
)
from contracts.db.models import Merchant
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
    settings: Settings, sessions: SessionFactory
) -> None:
    """The page reads one snapshot; the pool's connections then serve the write paths, whose
    locking assumes READ COMMITTED (the snapshot's level is the next transaction's only)."""
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    reads = create_session_factory(engine)
    merchants = select(func.count()).select_from(Merchant)
    try:
        async with reads() as session:
            await session.execute(text("SELECT 1"))  # a read already begun, as the API key's
            await read_one_snapshot(session)
            seen = await session.scalar(merchants)
            await new_merchant(sessions)  # committed meanwhile
            assert await session.scalar(merchants) == seen  # one snapshot
        async with reads() as session:  # the same connection
            seen = await session.scalar(merchants)
            await new_merchant(sessions)
            assert await session.scalar(merchants) == (seen or 0) + 1  # read committed
    finally:
        await engine.dispose()
