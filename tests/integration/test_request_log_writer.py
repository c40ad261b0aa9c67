"""The request log's writer against the real database: a flush returns only once every row added
before it is committed, those a flush already under way took included (the dashboard's
readiness page reads them right after)."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from asyncmy.errors import OperationalError as DriverError
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session

from api_service.app import create_app
from api_service.metrics import REQUEST_LOG_ROWS_LEFT_OUT
from api_service.request_log import writer as request_log_writer
from api_service.request_log.writer import RequestLogWriter
from contracts.db.engine import SessionFactory, create_session_factory, utcnow
from contracts.db.models import ApiRequestRecord
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth


def call_of(merchant_id: str) -> dict[str, object]:
    return {
        "merchant_id": merchant_id,
        "request_id": f"req_{uuid.uuid4().hex}",
        "method": "POST",
        "path": "/api/v1/payouts",
        "status": 201,
        "latency_ms": 3,
        "idempotency_key": None,
        "replayed": False,
        "fault": None,
        "retry_after_seconds": None,
        "request_body": None,
        "response_body": None,
        "started_at": utcnow(),
    }


async def recorded(sessions: SessionFactory, merchant_id: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(ApiRequestRecord.merchant_id == merchant_id)
        )
        return int(count or 0)


async def test_a_flush_returns_once_the_rows_a_flush_under_way_took_are_written(
    sessions: SessionFactory,
) -> None:
    writer = RequestLogWriter(sessions)
    merchant_id = str(uuid.uuid4())
    writer.add(call_of(merchant_id))
    under_way = asyncio.create_task(writer.flush())  # the timer's flush, say
    await asyncio.sleep(0)  # it took the row and is writing it

    await writer.flush()

    assert under_way.done(), "flush returned while the rows it was asked for were being written"
    assert await recorded(sessions, merchant_id) == 1


class SlowToInsert(RequestLogWriter):
    """Each write takes a slow round trip, and says when it starts."""

    def __init__(self, sessions: SessionFactory) -> None:
        super().__init__(sessions)
        self.inserting = asyncio.Event()

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        self.inserting.set()
        await asyncio.sleep(0.05)
        await super()._insert(rows)


async def test_a_graceful_stop_during_a_timed_flush_writes_the_rows_it_had_taken(
    sessions: SessionFactory,
) -> None:
    """close() cancelled the timer's loop in its flush: the rows that flush had taken were lost,
    the last calls before a deploy."""
    writer = SlowToInsert(sessions)
    merchant_id = str(uuid.uuid4())
    writer.start()
    writer.add(call_of(merchant_id))
    await asyncio.wait_for(writer.inserting.wait(), timeout=10)  # the timer's flush is writing
    writer.add(call_of(merchant_id))

    await writer.close()

    assert await recorded(sessions, merchant_id) == 2


class AwayAtFirst(RequestLogWriter):
    """The database answers its first `away` writes with a lost connection, an outage."""

    def __init__(self, sessions: SessionFactory, away: int) -> None:
        super().__init__(sessions)
        self.away = away

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self.away:
            self.away -= 1
            raise OperationalError("INSERT", {}, DriverError(2013, "Lost connection"))
        await super()._insert(rows)


async def test_the_calls_answered_while_the_database_was_away_are_written_once_it_is_back(
    sessions: SessionFactory,
) -> None:
    """A flush that met an outage dropped its rows: the 503s a merchant most needs to see, and
    the evidence the readiness report reads (reqlog review)."""
    writer = AwayAtFirst(sessions, away=2)
    merchant_id = str(uuid.uuid4())
    writer.add(call_of(merchant_id))
    await writer.flush()
    writer.add(call_of(merchant_id))
    await writer.flush()
    assert await recorded(sessions, merchant_id) == 0

    await writer.flush()

    assert await recorded(sessions, merchant_id) == 2


def sessions_whose_commit(when: str, code: int, said: str) -> type[Session]:
    """Sessions whose COMMIT fails with the server's error `code`, before it goes out or once
    it went through (`when`: a Session event, before_commit or after_commit)."""

    class Failing(Session):
        pass

    def fail(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, DriverError(code, said))

    event.listen(Failing, when, fail)
    return Failing


# The COMMIT goes through, then the connection is lost before its answer.
LostAfterCommit = sessions_whose_commit("after_commit", 2013, "Lost connection")
# The server answers the COMMIT with a deadlock: the transaction rolled back.
RefusedAtCommit = sessions_whose_commit("before_commit", 1213, "Deadlock found")


async def test_rows_whose_commit_went_unanswered_are_not_written_again(
    engine: AsyncEngine,
) -> None:
    """Sent again at the next flush, as after any outage: written twice (diff review)."""
    writer = RequestLogWriter(async_sessionmaker(engine, sync_session_class=LostAfterCommit))
    merchant_id = str(uuid.uuid4())
    writer.add(call_of(merchant_id))
    await writer.flush()

    await writer.flush()

    assert await recorded(create_session_factory(engine), merchant_id) == 1


async def test_rows_whose_commit_the_server_refused_are_written_at_the_next_flush(
    engine: AsyncEngine,
) -> None:
    """Taken for a COMMIT gone unanswered, they were dropped: certainly not written (diff
    review)."""
    refused = RequestLogWriter(async_sessionmaker(engine, sync_session_class=RefusedAtCommit))
    merchant_id = str(uuid.uuid4())
    refused.add(call_of(merchant_id))
    await refused.flush()
    writer = RequestLogWriter(create_session_factory(engine))
    writer.add(refused._rows.pop())  # what waits in memory, written once the database takes it

    await writer.flush()

    assert await recorded(create_session_factory(engine), merchant_id) == 1


async def test_a_commit_unanswered_row_by_row_does_not_stop_the_flush(
    engine: AsyncEngine,
) -> None:
    """Row by row (a row the database refused), an unanswered COMMIT escaped the flush: the
    rows after it were not tried, and the timer's task died (diff review)."""
    writer = RequestLogWriter(async_sessionmaker(engine, sync_session_class=LostAfterCommit))
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    writer.add(call_of(good))
    writer.add({**call_of(bad), "method": "UNSUBSCRIBED"})  # wider than the column
    writer.add(call_of(good))

    await writer.flush()

    assert await recorded(create_session_factory(engine), good) == 2


async def test_a_call_left_out_of_a_full_queue_is_counted(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left out without a word (reqlog review)."""
    monkeypatch.setattr(request_log_writer, "MAX_QUEUED", 2)
    writer = AwayAtFirst(sessions, away=1)
    merchant_id = str(uuid.uuid4())
    left_out_before = REQUEST_LOG_ROWS_LEFT_OUT._value.get()
    writer.add(call_of(merchant_id))
    writer.add(call_of(merchant_id))
    await writer.flush()  # the database away: the two wait
    writer.add(call_of(merchant_id))  # no room

    await writer.flush()

    assert await recorded(sessions, merchant_id) == 2
    assert REQUEST_LOG_ROWS_LEFT_OUT._value.get() - left_out_before == 1


async def test_a_row_the_database_refuses_does_not_take_the_others_with_it(
    sessions: SessionFactory,
) -> None:
    """Written one statement per flush, a row too wide for a column failed the whole flush:
    every merchant's calls of those 200 ms were lost."""
    writer = RequestLogWriter(sessions)
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    writer.add(call_of(good))
    writer.add({**call_of(bad), "method": "UNSUBSCRIBED"})  # wider than the column
    writer.add(call_of(good))

    await writer.flush()

    assert (await recorded(sessions, good), await recorded(sessions, bad)) == (2, 0)


async def test_an_odd_method_is_recorded_cut_to_the_columns_width(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The server's parser takes UNSUBSCRIBE (11 letters); the method column holds 10."""
    merchant = await make_merchant()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            odd = await client.request("UNSUBSCRIBE", f"{API}/balance", headers=auth(merchant, ""))
            assert odd.status_code == 405
            await app.state.request_log.flush()
    async with sessions() as session:
        methods = await session.scalars(
            select(ApiRequestRecord.method).where(
                ApiRequestRecord.merchant_id == merchant.merchant_id
            )
        )
        assert list(methods) == ["UNSUBSCRIB"]
