"""A private MariaDB whose InnoDB system tablespace cannot grow (one tablespace for all tables, of
a fixed size): once a filler table takes the room, writes fail with 1114 "The table is full",
while reads still work; dropping the filler gives the room back."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts.db.engine import create_engine
from migrations.runner import upgrade_to_head
from tests.support.polling import eventually
from tests.support.private_mariadb import private_mariadb

TABLE_FULL = 1114
SMALL_TABLESPACE = ("--innodb-file-per-table=0", "--innodb-data-file-path=ibdata1:12M;ibdata2:32M")
PADDED = "CREATE TABLE {} (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(4000))"


@dataclass
class FullableDatabase:
    url: str
    engine: AsyncEngine

    async def fill(self) -> None:
        """Filler rows, big then ever smaller, until even a small one is refused."""
        async with self.engine.begin() as connection:
            await connection.execute(text(PADDED.format("filler")))
        for rows, size in ((200, 3000), (1, 3000), (1, 200), (1, 20)):
            while await self._room_for(rows, size, "filler"):
                pass

    async def free(self) -> None:
        """The filler dropped; returns once its room is handed out again (InnoDB frees it a
        moment later)."""

        async def dropped() -> bool:
            try:  # a DROP needs a page or two too
                async with self.engine.begin() as connection:
                    await connection.execute(text("DROP TABLE IF EXISTS filler"))
            except OperationalError:
                return False
            return True

        await eventually(dropped, within=30, interval=0.2, what="the filler dropped")
        await eventually(
            lambda: self._room_for(100, 3000, "room_probe"), within=30, interval=0.2, what="room"
        )

    async def _room_for(self, rows: int, size: int, table: str) -> bool:
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    text(
                        f"INSERT INTO {table} (pad) SELECT REPEAT('x', {size}) FROM seq_1_to_{rows}"
                    )
                )
        except OperationalError as refused:
            assert refused.orig is not None and refused.orig.args[0] == TABLE_FULL, refused
            return False
        return True


@asynccontextmanager
async def fullable_database(name: str) -> AsyncIterator[FullableDatabase]:
    """A migrated database `name` on a private server whose tablespace cannot grow."""
    with private_mariadb(*SMALL_TABLESPACE) as server_url:
        admin = create_async_engine(server_url)
        async with admin.begin() as connection:
            await connection.execute(text(f"CREATE DATABASE {name}"))
        await admin.dispose()
        url = server_url.rsplit("/", 1)[0] + f"/{name}"
        await asyncio.to_thread(upgrade_to_head, url)
        engine = create_engine(url, pool_size=2)
        async with engine.begin() as connection:
            await connection.execute(text(PADDED.format("room_probe")))
        try:
            yield FullableDatabase(url, engine)
        finally:
            await engine.dispose()
