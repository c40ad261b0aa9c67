"""A lock of one database that processes take turns on: MySQL's GET_LOCK (server-wide, so its
name carries the database's), held by a connection of its own for a block. The work of the block
runs on other connections and may commit: the lock outlives their transactions, so the next
holder sees what this one committed (`payouts migrate`, `payouts seed`)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# MySQL refuses a lock name over 64 characters: a long database name is cut (two databases whose
# names share their first 40-odd characters would take turns with each other, nothing worse).
_NAME = "LEFT(CONCAT(:name, ':', DATABASE()), 64)"
_TAKE = text(f"SELECT GET_LOCK({_NAME}, :wait_seconds)")
# The holder's connection says nothing while the block runs on others: a server's wait_timeout
# (minutes, on hosted databases) closed it mid-migration, the lock free for a second
# `payouts migrate`, and the release failed ("MySQL does not answer", exit 1, after a migration
# that had reached head: idle connections review).
_OUTLAST_THE_BLOCK = text("SET SESSION wait_timeout = 86400")
_LET_GO = text(f"SELECT RELEASE_LOCK({_NAME})")


class DatabaseLockTimeout(TimeoutError):
    pass


@asynccontextmanager
async def database_lock(
    connection: AsyncConnection, name: str, *, wait_seconds: int
) -> AsyncIterator[None]:
    """`name` (a few words) locked on this database for the block; DatabaseLockTimeout when
    another holder keeps it past `wait_seconds`."""
    await connection.execute(_OUTLAST_THE_BLOCK)
    taken = await connection.scalar(_TAKE, {"name": name, "wait_seconds": wait_seconds})
    await connection.commit()  # the lock is the connection's, not its transaction's
    if taken != 1:
        raise DatabaseLockTimeout(f"{name}: another process held the lock for {wait_seconds} s")
    try:
        yield
    finally:
        await connection.execute(_LET_GO, {"name": name})
        await connection.commit()
