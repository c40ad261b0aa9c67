"""Alembic environment: async engine from PAYOUTS_DATABASE_URL (or the config's URL)."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.db.database_locks import database_lock
from contracts.db.models import Base
from contracts.settings import get_settings
from migrations.runner import NewerThanThisCode, is_a_newer_codes

target_metadata = Base.metadata
MIGRATION_WAIT_SECONDS = 600


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    # Alembic cannot go on from a revision it does not know, and said so with a traceback.
    current = context.get_context().get_current_revision()
    if is_a_newer_codes(current):
        raise NewerThanThisCode(str(current))
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = create_async_engine(url)
    # One migration at a time: a second `payouts migrate` started meanwhile (two compose projects,
    # a rollout) applied the same revisions and died half-way through one. It now waits, then
    # finds the database at head.
    async with (
        engine.connect() as holder,
        database_lock(holder, "payouts migrate", wait_seconds=MIGRATION_WAIT_SECONDS),
        engine.connect() as connection,
    ):
        await connection.run_sync(_run)
    await engine.dispose()


asyncio.run(_run_online())
