"""The time a call spends in the database as a whole is bounded (api_service/database_time.py),
against the real MariaDB behind a proxy that makes it slow but answering."""

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from asyncmy.errors import OperationalError as DriverError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

import api_service.dashboard.pages.webhooks as webhook_pages
import api_service.database_time as database_time
import api_service.sandbox.clock as clock_routes
from contracts.db.engine import SessionFactory, create_engine, transaction
from contracts.db.models import Balance
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    footprint,
    get_balance,
    new_key,
    payout_body,
)
from tests.support.dashboard_client import signed_in
from tests.support.tcp_proxy import HangingProxy

T = TypeVar("T")

TIMEOUT_SECONDS = 1.0  # each statement answers well within it: 0.4 s a round trip
LAG_SECONDS = 0.2


async def test_a_create_on_a_slow_database_answers_503_in_three_timeouts_and_writes_nothing(
    settings: Settings, sessions: SessionFactory, make_merchant: MerchantFactory
) -> None:
    """Each statement answered within the timeout, so none failed: one create took 147 s on a
    database answering in 6 s (slow dependencies review), and the merchant's client had given
    up on a payout then created."""
    merchant = await make_merchant()
    async with HangingProxy.in_front_of(settings.database_url) as database:
        slow = settings.model_copy(
            update={
                "database_url": database.url_through(settings.database_url),
                "api_database_timeout_seconds": TIMEOUT_SECONDS,
            }
        )
        async with in_process_api(slow) as api:
            await get_balance(api, merchant)  # a connection in the pool, the merchant known
            key = new_key()
            database.lag(LAG_SECONDS)
            started = time.monotonic()
            slowed = await api.post(
                f"{API}/payouts", json=payout_body(), headers=auth(merchant, key)
            )
            took = time.monotonic() - started
            database.lag(0)

            assert_error(slowed, 503, "SERVICE_UNAVAILABLE")
            assert 2 * TIMEOUT_SECONDS < took < 3 * TIMEOUT_SECONDS + LAG_SECONDS, took
            assert (await footprint(sessions, merchant.merchant_id)).payouts == 0
            again = await api.post(
                f"{API}/payouts", json=payout_body(), headers=auth(merchant, key)
            )

    assert again.status_code == 201, again.text  # the 503 was not stored under its key
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 1


async def test_a_clock_advance_whose_time_ran_out_once_committed_answers_its_200(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its wait for what it made due, after its commit, was refused: a 503 "retry later" for an
    advance made (fixes review)."""
    merchant = await make_merchant()
    monkeypatch.setattr(
        clock_routes,
        "_wait_until_settled",
        _with_the_calls_time_used_up(clock_routes._wait_until_settled),
    )
    advanced = await api_client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 60}, headers=auth(merchant, new_key())
    )

    assert advanced.status_code == 200, advanced.text


async def test_a_clock_advance_whose_wait_met_the_database_down_answers_its_200(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 for an advance made, and the dashboard's form sent again (a new key) advanced the
    clock twice (dashboard outages review)."""
    merchant = await make_merchant()

    async def database_gone(*_args: object) -> bool:
        raise OperationalError("SELECT", None, DriverError(2013, "Lost connection"))

    monkeypatch.setattr(clock_routes, "_wait_until_settled", database_gone)
    advanced = await api_client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 60}, headers=auth(merchant, new_key())
    )

    assert advanced.status_code == 200, advanced.text
    assert advanced.headers["sandbox-clock-settled"] == "false"


async def test_a_statement_that_failed_counts_its_time(
    settings: Settings, sessions: SessionFactory, make_merchant: MerchantFactory
) -> None:
    """A lock wait that timed out took its time all the same: uncounted, a call going through
    lock waits and deadlock retries went on past its time (fixes review)."""
    merchant = await make_merchant()
    balance_row = select(Balance.merchant_id).where(Balance.merchant_id == merchant.merchant_id)
    engine = create_engine(settings.database_url, pool_size=1, lock_wait_seconds=1)
    database_time.count_database_time(engine)
    call = database_time._CallsDatabaseTime(allowed=60.0)
    token = database_time._CALL.set(call)
    try:
        async with transaction(sessions) as holder:
            await holder.execute(balance_row.with_for_update())
            with pytest.raises(DBAPIError):
                async with engine.connect() as waiting:
                    await waiting.execute(balance_row.with_for_update())
    finally:
        database_time._CALL.reset(token)
        await engine.dispose()

    assert call.spent >= 1.0, call


def _with_the_calls_time_used_up(
    step: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """`step`, the call's database time used up as it starts (a slow database's)."""

    async def used_up(*args: Any, **kwargs: Any) -> T:
        call = database_time._CALL.get()
        if call is not None:
            call.spent = call.allowed + 1
        return await step(*args, **kwargs)

    return used_up


async def _database_gone(*_args: object, **_kwargs: object) -> None:
    raise OperationalError("SELECT", None, DriverError(2013, "Lost connection"))


@pytest.mark.parametrize(
    "page_reads",
    [
        # Its time used up: a 503 there, and the new secret, shown once, never seen (fixes
        # review).
        pytest.param(_with_the_calls_time_used_up, id="its-time-used-up"),
        # The database gone: an error page, the secret lost, and a second rotation retired the
        # secret in use (dashboard outages review).
        pytest.param(lambda _page: _database_gone, id="the-database-gone"),
    ],
)
async def test_a_dashboard_rotation_whose_page_failed_once_committed_shows_its_secret(
    settings: Settings,
    make_merchant: MerchantFactory,
    monkeypatch: pytest.MonkeyPatch,
    page_reads: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]],
) -> None:
    """The page after the rotation committed reads again, and those reads fail."""
    merchant = await make_merchant()
    monkeypatch.setattr(webhook_pages, "_webhooks_page", page_reads(webhook_pages._webhooks_page))
    async with in_process_api(settings) as client:
        token = await signed_in(client, merchant)
        rotated = await client.post(
            "/dashboard/webhooks/secret/rotate",
            data={"csrf_token": token, "idempotency_key": new_key()},
        )

    assert rotated.status_code == 200, rotated.text
    assert 'class="secret" data-secret>whsec_' in rotated.text
