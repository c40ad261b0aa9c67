"""The database at its limits (database limits review): an account out of connections is an
outage, never a bug; and readiness asks the database, not the requests' pool."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from api_service.app import create_app
from api_service.errors import database_refusal
from contracts.db.engine import SessionFactory, create_engine
from contracts.db.models import Balance
from contracts.db.outages import database_error_code, is_outage
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, footprint, payout_body
from tests.support.infrastructure import database_account
from tests.support.polling import eventually

CONNECTIONS_ALLOWED = 2


@pytest.fixture
async def limited_url(settings: Settings, sessions: SessionFactory) -> AsyncIterator[str]:
    """The tests' database through an account of its own, allowed 2 connections at once."""
    limited = database_account(
        sessions,
        settings.database_url,
        "payouts_limited",
        granted="ALL ON *",
        limits=f"MAX_USER_CONNECTIONS {CONNECTIONS_ALLOWED}",
    )
    async with limited as url:
        yield url


@asynccontextmanager
async def every_connection_taken(url: str) -> AsyncIterator[None]:
    """Every connection the account may open, held by someone else."""
    engine = create_engine(url, pool_size=CONNECTIONS_ALLOWED, max_overflow=0)
    try:
        async with AsyncExitStack() as held:
            for _ in range(CONNECTIONS_ALLOWED):
                await held.enter_async_context(engine.connect())
            yield
    finally:
        await engine.dispose()


@asynccontextmanager
async def api(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process; an error it lets escape is the 500 a server would send."""
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as c:
            yield c


async def test_an_account_out_of_connections_is_an_outage(limited_url: str) -> None:
    """MariaDB's 1226 (the account's MAX_USER_CONNECTIONS): the API answered 500, the processor
    dead-lettered valid commands and the webhook service parked webhooks."""
    async with every_connection_taken(limited_url):
        engine = create_engine(limited_url, pool_size=1)
        try:
            with pytest.raises(DBAPIError) as refused:
                async with engine.connect():
                    pass
        finally:
            await engine.dispose()

    assert database_error_code(refused.value) == 1226, refused.value
    assert is_outage(refused.value)
    assert database_refusal(refused.value) is not None


async def test_the_api_answers_503_while_its_account_is_out_of_connections(
    settings: Settings, limited_url: str, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    key, body = str(uuid.uuid4()), payout_body()
    async with api(settings, database_url=limited_url, db_pool_size=1) as client:
        async with every_connection_taken(limited_url):
            refused = await client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
            balance = await client.get(f"{API}/balance", headers=auth(merchant, ""))
        written = await footprint(sessions, merchant.merchant_id)
        created = await client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))

    assert (refused.status_code, balance.status_code) == (503, 503), refused.text
    assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert (written.payouts, written.outbox) == (0, 0)
    assert created.status_code == 201, created.text


async def test_ready_while_the_requests_pool_waits_on_a_row_lock(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The database answers at once: a pool busy with creates waiting on one merchant's balance
    row is no reason to take the API out of its load balancer (it said `unavailable`)."""
    merchant = await make_merchant(balance="1000.00")
    database = urlsplit(settings.database_url).path.lstrip("/")
    async with (
        api(settings, db_pool_size=1, api_lock_wait_seconds=8) as client,
        sessions() as locker,
        locker.begin(),
    ):
        await locker.execute(
            select(Balance.available)
            .where(Balance.merchant_id == merchant.merchant_id)
            .with_for_update()
        )
        creates = [  # the pool's one connection and its one in overflow
            asyncio.create_task(
                client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant))
            )
            for _ in range(2)
        ]

        async def both_waiting() -> bool:
            async with sessions() as probe:
                waiting = await probe.scalar(
                    text(
                        "SELECT COUNT(*) FROM information_schema.processlist"
                        " WHERE db = :db AND info LIKE 'UPDATE balances%'"
                    ),
                    {"db": database},
                )
            return waiting == 2

        await eventually(both_waiting, within=10, what="both creates waiting on the lock")
        ready = await client.get(f"{API}/ready")
        await locker.rollback()
        answers = await asyncio.gather(*creates)

    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"
    assert [answer.status_code for answer in answers] == [201, 201]
