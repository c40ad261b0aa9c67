"""The scheduler's idle poll costs the same however many merchants once advanced their sandbox
clocks (a shared sandbox: every integrator that tested a queue's expiry or a retry ladder did, and
an offset only grows): counted in rows read (Handler_read_*) on one connection."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.db.engine import SessionFactory, create_engine, create_session_factory
from contracts.settings import Settings
from processor_service.schedule import Timetable
from processor_service.scheduler import Scheduler

FEW, MANY = 50, 2_000
# 0..9,999 without MariaDB's sequence engine (MySQL 8 has none).
_NUMBERS = (
    "(SELECT a.n + 10 * b.n + 100 * c.n + 1000 * d.n AS n FROM "
    + ", ".join(
        "(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 "
        f"UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 "
        f"UNION ALL SELECT 9) {alias}"
        for alias in "abcd"
    )
    + ")"
)


async def advanced_clocks(sessions: SessionFactory, count: int) -> None:
    """`count` merchants with nothing scheduled, each with its clock an hour ahead."""
    tag = uuid.uuid4().hex
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO merchants (id, name, api_key_hash, is_active, webhook_url, "
                "webhook_secret, created_at) "
                "SELECT UUID(), CONCAT(:tag, '-', n), SHA2(CONCAT(:tag, '-', n), 256), 1, NULL, "
                f"'unused', NOW(6) FROM {_NUMBERS} numbers WHERE n < :count"
            ),
            {"tag": tag, "count": count},
        )
        await session.execute(
            text(
                "INSERT INTO sandbox_clocks (merchant_id, offset_seconds, updated_at) "
                "SELECT id, 3600, NOW(6) - INTERVAL 1 MINUTE FROM merchants "
                "WHERE name LIKE CONCAT(:tag, '-%')"
            ),
            {"tag": tag},
        )


@asynccontextmanager
async def one_connection(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, SessionFactory]]:
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    try:
        yield engine, create_session_factory(engine)
    finally:
        await engine.dispose()


async def rows_read(engine: AsyncEngine, work: Callable[[], Awaitable[object]]) -> int:
    async def handler_reads() -> int:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SHOW SESSION STATUS LIKE 'Handler_read%'"))
            return sum(int(value) for _, value in rows)

    before = await handler_reads()
    await work()
    return await handler_reads() - before


async def idle_poll_reads(settings: Settings) -> int:
    async with one_connection(settings) as (engine, sessions):
        scheduler = Scheduler(sessions, Timetable(), poll_interval_seconds=0.25)
        await scheduler.apply_next()  # warm: plans, statistics
        return await rows_read(engine, scheduler.apply_next)


async def test_an_idle_poll_reads_no_more_rows_for_more_advanced_clocks(
    settings: Settings, sessions: SessionFactory
) -> None:
    """It read every clock ever advanced and probed its merchant's actions, four times a second
    per processor: 20,202 rows a poll at 10,000 clocks (scale review)."""
    await advanced_clocks(sessions, FEW)
    with_few = await idle_poll_reads(settings)
    await advanced_clocks(sessions, MANY - FEW)
    with_many = await idle_poll_reads(settings)

    assert with_many - with_few < (MANY - FEW) / 10, (with_few, with_many)
