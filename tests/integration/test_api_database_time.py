"""The time a call spends in the database as a whole is bounded (api_service/database_time.py),
against the real MariaDB behind a proxy that makes it slow but answering."""

import time

from contracts.db.engine import SessionFactory
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
from tests.support.tcp_proxy import HangingProxy

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
