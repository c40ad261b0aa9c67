"""A database of a test's own, migrated by hand to the revision it needs."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from migrations.runner import alembic_config
from tests.support.infrastructure import TEST_DATABASE, Infrastructure, with_database


@asynccontextmanager
async def scratch_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """The URL of an empty database (dropped afterwards), beside the tests' own."""
    database = f"{TEST_DATABASE}_migrations"
    engine = create_async_engine(with_database(infrastructure.database_url, ""))
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
        await connection.exec_driver_sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    try:
        yield with_database(infrastructure.database_url, database)
    finally:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
        await engine.dispose()


async def migrate(url: str, direction: str, revision: str) -> None:
    """Alembic's own event loop runs in a thread of its own."""
    run = command.upgrade if direction == "up" else command.downgrade
    await asyncio.to_thread(run, alembic_config(url), revision)
