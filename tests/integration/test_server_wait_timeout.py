"""A server whose wait_timeout is short (minutes, on hosted databases) closes the connections that
say nothing that long: the pool's in a quiet spell, and the one holding a database lock while
the block runs on others (idle connections review)."""

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.db.database_locks import database_lock
from contracts.db.engine import create_engine
from tests.support.private_mariadb import private_mariadb

WAIT_TIMEOUT_SECONDS = 1
# Waiting out the server's own timeout, on purpose: there is nothing to poll for.
QUIET_SECONDS = WAIT_TIMEOUT_SECONDS + 1.5


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with private_mariadb(f"--wait-timeout={WAIT_TIMEOUT_SECONDS}") as url:
        yield url


async def test_a_pooled_connection_outlasts_a_quiet_spell(server_url: str) -> None:
    """The first call after the quiet met the closed connection: a PSP's callback, a create or
    /ready answered 503 on a database that was up."""
    engine = create_engine(server_url, pool_size=1, max_overflow=0, timeout_seconds=5)
    try:
        async with engine.connect() as connection:
            await connection.scalar(text("SELECT 1"))
        await asyncio.sleep(QUIET_SECONDS)
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


async def test_a_lock_outlasts_the_servers_wait_timeout(server_url: str) -> None:
    """Closed mid-migration, the lock was free for a second `payouts migrate`, and the release
    failed ("MySQL does not answer", exit 1) after a migration that had reached head."""
    engine = create_async_engine(server_url)  # as `payouts migrate`'s (migrations/env.py)
    try:
        async with engine.connect() as holder, database_lock(holder, "a block", wait_seconds=1):
            await asyncio.sleep(QUIET_SECONDS)
            async with engine.connect() as other:
                held = await other.scalar(text("SELECT IS_USED_LOCK('a block:mysql')"))
        # The block's end released it on the same connection: it raised had it been closed.
    finally:
        await engine.dispose()

    assert held is not None
