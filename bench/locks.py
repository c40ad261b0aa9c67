"""Who waits for whose row lock, sampled during a phase (MariaDB's information_schema; MySQL 8
moved these tables, so there it reports nothing). Each sample lists every current wait in the
bench's database as (table, mode, waiting statement, blocking statement)."""

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

WAITS = text(
    """
    SELECT l.lock_table, l.lock_mode, r.trx_query, b.trx_query
    FROM information_schema.INNODB_LOCK_WAITS w
    JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
    JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
    JOIN information_schema.INNODB_LOCKS l ON l.lock_id = w.blocking_lock_id
    WHERE l.lock_table LIKE :tables
    """
)
LITERALS = re.compile(r"'(?:[^'\\]|\\.)*'|\b\d+(?:\.\d+)?\b")


def statement_shape(sql: str | None) -> str:
    """The statement with its literals replaced, cut short; None: the blocker is between
    statements, its transaction open while the service does something else."""
    if not sql:
        return "(between statements, transaction open)"
    return " ".join(LITERALS.sub("?", sql).split())[:90]


@dataclass
class LockWaitSampler:
    engine: AsyncEngine
    database: str
    interval: float = 0.1
    waits: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    samples: int = 0
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        tables = f"`{self.database}`.%"
        while True:
            try:
                async with self.engine.connect() as connection:
                    rows = await connection.execute(WAITS, {"tables": tables})
                    for table, mode, waiting, blocking in rows:
                        self.waits[
                            (table, mode, statement_shape(waiting), statement_shape(blocking))
                        ] += 1
            except DBAPIError:
                return  # no such tables (MySQL 8): nothing to report
            self.samples += 1
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[dict[str, Any]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return [
            {
                "table": table,
                "mode": mode,
                "waiting": waiting,
                "blocking": blocking,
                "seenInSamples": count,
                "samples": self.samples,
            }
            for (table, mode, waiting, blocking), count in self.waits.most_common(10)
        ]
