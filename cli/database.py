"""The database engine of an operator command: one connection, and a bound on each wait for
the server (PAYOUTS_COMMAND_DATABASE_TIMEOUT_SECONDS), past which the command says in one line
that MySQL does not answer (cli.outages)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.db.database_locks import database_lock
from contracts.db.engine import create_engine
from contracts.settings import Settings

LOCK_WAIT_SECONDS = 120  # for another run of a command that runs in turn (in_turn)


def command_engine(settings: Settings) -> AsyncEngine:
    return create_engine(
        settings.database_url,
        pool_size=1,
        timeout_seconds=settings.command_database_timeout_seconds,
    )


@asynccontextmanager
async def in_turn(engine: AsyncEngine, settings: Settings, lock: str) -> AsyncIterator[None]:
    """One run of the command at a time on the database: another run started meanwhile waits
    for this one's block to end (contracts.db.database_locks), on a connection of its own."""
    # Within the wait for any one answer of the database: past it, a wait for the lock read as
    # "MySQL does not answer".
    wait_seconds = min(LOCK_WAIT_SECONDS, int(settings.command_database_timeout_seconds * 0.8))
    async with engine.connect() as holder, database_lock(holder, lock, wait_seconds=wait_seconds):
        yield
