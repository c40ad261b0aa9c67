"""Every service stamps times on the database server's clock, whatever its host's clock says
(clock-skew review: a host 2 minutes behind fired a `0009` payout's first retry at once and
ordered `GET /payouts` by its own clock)."""

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, time, timedelta

import pytest
from sqlalchemy import select, text

from api_service.usage_limits import IDEMPOTENCY_KEYS_PER_DAY
from contracts.db import database_clock
from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    transaction,
    utcnow,
)
from contracts.db.models import Payout, ScheduledAction
from contracts.settings import Settings
from processor_service.handlers import Context, process_payout
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import new_payout_command

BEHIND = timedelta(minutes=2)


async def _database_now(sessions: SessionFactory) -> datetime:
    async with sessions() as session:
        moment: datetime = (await session.execute(text("SELECT UTC_TIMESTAMP(6)"))).scalar_one()
        return moment


@pytest.fixture
def host_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's host clock 2 minutes behind the database server's; the offset measured
    under it is put back afterwards."""
    real_host_now = database_clock.host_now
    monkeypatch.setattr(database_clock, "host_now", lambda: real_host_now() - BEHIND)
    monkeypatch.setattr(database_clock.DATABASE_CLOCK, "offset", timedelta(0))
    yield


@pytest.fixture
async def behind_sessions(settings: Settings, host_behind: None) -> AsyncIterator[SessionFactory]:
    """A new engine on the host behind: its first connection measures the database's clock."""
    engine = create_engine(settings.database_url, pool_size=2)
    yield create_session_factory(engine)
    await engine.dispose()


async def test_a_host_minutes_behind_stamps_on_the_database_clock(
    behind_sessions: SessionFactory,
) -> None:
    database_now = await _database_now(behind_sessions)

    assert abs(utcnow() - database_now) < timedelta(seconds=1)


async def test_on_the_database_host_the_offset_stays_zero(settings: Settings) -> None:
    """One clock (compose, the tests): no measurement's jitter moves the times a process stamps."""
    engine = create_engine(settings.database_url, pool_size=3, max_overflow=0)
    try:
        async with engine.connect(), engine.connect(), engine.connect():
            assert database_clock.DATABASE_CLOCK.offset == timedelta(0)
    finally:
        await engine.dispose()


async def test_a_0009_payout_created_and_processed_on_a_host_behind_retries_a_minute_later(
    settings: Settings, make_merchant: MerchantFactory, behind_sessions: SessionFactory
) -> None:
    """The first retry is due a minute after the attempt started: on the host's own clock the
    payout was stamped 2 minutes early, and its retry was due a minute before it was made."""
    merchant = await make_merchant()
    async with in_process_api(settings) as api:
        command = await new_payout_command(
            api, behind_sessions, merchant, accountNumber="03001230009"
        )
    async with transaction(behind_sessions) as session:
        await process_payout(session, command, Context(None, retry_delay_ms=1000))
    database_now = await _database_now(behind_sessions)

    async with behind_sessions() as session:
        created_at = (
            await session.execute(select(Payout.created_at).where(Payout.id == command.payout_id))
        ).scalar_one()
        [due_at] = (
            await session.execute(
                select(ScheduledAction.due_at).where(ScheduledAction.payout_id == command.payout_id)
            )
        ).scalars()

    assert abs(created_at - database_now) < timedelta(seconds=5)
    assert due_at - database_now > timedelta(seconds=50)


async def test_an_error_says_the_time_on_the_database_clock(
    settings: Settings, behind_sessions: SessionFactory
) -> None:
    await _database_now(behind_sessions)
    async with in_process_api(settings) as api:
        refused = await api.get("/api/v1/payouts", headers={"X-API-Key": "nobody"})
    database_now = await _database_now(behind_sessions)

    stamped = datetime.fromisoformat(refused.json()["error"]["timestamp"].rstrip("Z"))
    assert refused.status_code == 401
    assert abs(stamped - database_now) < timedelta(seconds=5)


async def test_the_daily_quota_waits_for_midnight_on_the_database_clock(
    behind_sessions: SessionFactory,
) -> None:
    """The quota's day is the database's (usage_limits): so is its `Retry-After`."""
    database_now = await _database_now(behind_sessions)
    midnight = datetime.combine(database_now.date() + timedelta(days=1), time())

    retry_after = IDEMPOTENCY_KEYS_PER_DAY.seconds_until_next_window()

    assert abs(retry_after - (midnight - database_now).total_seconds()) <= 2
