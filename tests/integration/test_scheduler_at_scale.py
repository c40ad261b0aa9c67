"""The scheduler's idle poll costs the same however many merchants once advanced their sandbox
clocks (a shared sandbox: every integrator that tested a queue's expiry or a retry ladder did, and
an offset only grows), and however many have actions days ahead (a queued payout's expiry):
counted in rows read (Handler_read_*) on one connection."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.db.engine import SessionFactory, create_engine, create_session_factory
from contracts.settings import Settings
from processor_service.schedule import Timetable
from processor_service.scheduler import ListedFrom, Scheduler, merchants_with_actions_due_ahead

FEW, MANY = 50, 2_000
TAG = "at-scale-"  # the names of this module's merchants start so
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
    await merchants_each_with(
        sessions,
        count,
        "INSERT INTO sandbox_clocks (merchant_id, offset_seconds, updated_at) "
        "SELECT id, 3600, NOW(6) - INTERVAL 1 MINUTE",
    )


async def actions_days_ahead(sessions: SessionFactory, count: int) -> None:
    """`count` merchants with no clock advanced, each with an action three days ahead."""
    await merchants_each_with(
        sessions,
        count,
        "INSERT INTO scheduled_actions (merchant_id, payout_id, hold_cycle, action, "
        "expected_status, due_at, created_at) SELECT id, UUID(), 1, 'EXPIRE_QUEUE', 'QUEUED', "
        "UTC_TIMESTAMP(6) + INTERVAL 3 DAY, UTC_TIMESTAMP(6)",
    )


async def merchants_each_with(sessions: SessionFactory, count: int, insert_select: str) -> None:
    """`count` merchants, and for each a row of `insert_select` (`INSERT ... SELECT id, ...`,
    completed with the merchants it reads from)."""
    tag = f"{TAG}{uuid.uuid4().hex}"
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
            text(f"{insert_select} FROM merchants WHERE name LIKE CONCAT(:tag, '-%')"),
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


@pytest.fixture(autouse=True)
async def none_left(sessions: SessionFactory) -> AsyncIterator[None]:
    """Each test counts from the merchants it makes: those of the one before are gone."""
    yield
    async with sessions() as session, session.begin():
        mine = f"(SELECT id FROM merchants WHERE name LIKE '{TAG}%')"
        for table in ("scheduled_actions", "sandbox_clocks"):
            await session.execute(text(f"DELETE FROM {table} WHERE merchant_id IN {mine}"))
        await session.execute(text(f"DELETE FROM merchants WHERE name LIKE '{TAG}%'"))


@pytest.mark.parametrize(
    "more",
    [advanced_clocks, actions_days_ahead],
    ids=["advanced-clocks", "merchants-with-actions-ahead"],
)
async def test_an_idle_poll_reads_no_more_rows_for_more_merchants_of_either_kind(
    settings: Settings,
    sessions: SessionFactory,
    more: Callable[[SessionFactory, int], Awaitable[None]],
) -> None:
    """From the clocks, it read every clock ever advanced and probed its merchant's actions,
    four times a second per processor: 20,202 rows a poll at 10,000 clocks (scale review); from
    the merchants with actions to apply, every one of them: 15,005 rows at 3,000 with actions
    days ahead and no clock advanced (scheduler review). It lists from the smaller side."""
    await advanced_clocks(sessions, FEW)
    await actions_days_ahead(sessions, FEW)
    with_few = await idle_poll_reads(settings)
    await more(sessions, MANY - FEW)
    with_many = await idle_poll_reads(settings)

    # Two reads or more per merchant added before; what other tests left in the database may
    # change the side it lists from between the two counts (CI: 224 then 497 reads).
    assert with_many - with_few < (MANY - FEW) / 2, (with_few, with_many)


async def test_either_side_lists_the_same_merchants_in_the_same_order(
    sessions: SessionFactory,
) -> None:
    # (clock offset or None, actions due this many minutes ahead of real time, applied or not)
    merchants_made: list[tuple[int | None, list[tuple[int, bool]]]] = [
        (3600, [(30, False)]),  # due on its clock: listed
        (3600, [(90, False)]),  # beyond its clock
        (None, [(30, False)]),  # no clock
        (0, [(30, False)]),  # a clock not ahead
        (3600, [(30, True)]),  # applied already
        (7200, [(100, False), (30, False)]),  # its first due on its clock: listed
        (3600, []),  # nothing scheduled
    ]
    ids = []
    async with sessions() as session, session.begin():
        for offset, actions in merchants_made:
            merchant_id = str(uuid.uuid4())
            ids.append(merchant_id)
            await session.execute(
                text(
                    "INSERT INTO merchants (id, name, api_key_hash, is_active, webhook_secret, "
                    "created_at) VALUES (:id, CONCAT(:tag, :id), SHA2(:id, 256), 1, 'unused', "
                    "NOW(6))"
                ),
                {"id": merchant_id, "tag": TAG},
            )
            if offset is not None:
                await session.execute(
                    text(
                        "INSERT INTO sandbox_clocks (merchant_id, offset_seconds, updated_at) "
                        "VALUES (:id, :offset, NOW(6) - INTERVAL :age SECOND)"
                    ),
                    {"id": merchant_id, "offset": offset, "age": len(ids)},
                )
            for minutes, applied in actions:
                await session.execute(
                    text(
                        "INSERT INTO scheduled_actions (merchant_id, payout_id, hold_cycle, "
                        "action, expected_status, due_at, created_at, applied_at) VALUES (:id, "
                        "UUID(), 1, 'SCRIPT_STEP', 'PROCESSING', UTC_TIMESTAMP(6) + INTERVAL "
                        ":minutes MINUTE, UTC_TIMESTAMP(6), IF(:applied, UTC_TIMESTAMP(6), NULL))"
                    ),
                    {"id": merchant_id, "minutes": minutes, "applied": applied},
                )

    async with sessions() as session:
        listed = {
            side: [
                merchant_id
                for merchant_id in await session.scalars(
                    merchants_with_actions_due_ahead(listed_from=side)
                )
                if merchant_id in ids
            ]
            for side in ListedFrom
        }

    assert listed[ListedFrom.CLOCKS] == listed[ListedFrom.PENDING] == [ids[5], ids[0]]
