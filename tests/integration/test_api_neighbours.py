"""One merchant's burst does not hold another merchant's calls (neighbours review: behind a burst
of 1,000 creates, another merchant's create took 8.9 s, then 503 once the wait passed the pool's
timeout). Each API key runs a few requests at a time; the rest wait their turn in memory, and
past the database timeout are refused 429 (api_service/client_turns.py)."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
from sqlalchemy import func, select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import IdempotencyKey, Payout
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    payout_body,
)
from tests.support.polling import eventually

BURST = 30
PER_KEY = 2


def _capped(settings: Settings, **changes: float) -> Settings:
    return settings.model_copy(
        update={"db_pool_size": 2, "api_max_in_flight_per_key": PER_KEY, **changes}
    )


async def test_another_merchants_create_runs_beside_a_burst_not_behind_it(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    noisy, quiet = await make_merchant(), await make_merchant()
    finished: list[str] = []

    async def create(client: httpx.AsyncClient, merchant: NewMerchant, name: str) -> None:
        await create_payout(client, merchant)
        finished.append(name)

    async with in_process_api(_capped(settings)) as client:
        burst = [asyncio.create_task(create(client, noisy, "noisy")) for _ in range(BURST)]

        async def under_way() -> bool:
            return bool(finished)

        await eventually(under_way, interval=0.001, what="the burst under way")
        finished_before_quiet = len(finished)
        await create(client, quiet, "quiet")
        await asyncio.gather(*burst)

    overtaken_by = finished.index("quiet") - finished_before_quiet
    # Its turn comes after those already running: the burst's share and the pool's size.
    assert overtaken_by <= 2 * PER_KEY, finished


async def test_a_request_whose_turn_does_not_come_in_time_is_429_and_nothing_is_written(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    reading, sent = asyncio.Event(), asyncio.Event()
    body = orjson.dumps(payout_body())

    async def slow_body() -> AsyncIterator[bytes]:
        """A body sent slowly: its request holds its client's one turn meanwhile."""
        reading.set()
        await sent.wait()
        yield body

    refused_body = payout_body()
    refused_headers = auth(merchant)
    capped = _capped(settings, api_max_in_flight_per_key=1, api_database_timeout_seconds=0.2)
    async with in_process_api(capped) as client:
        holding_the_turn = asyncio.create_task(
            client.post(
                f"{API}/payouts",
                content=slow_body(),
                headers={**auth(merchant), "Content-Type": "application/json"},
            )
        )
        await asyncio.wait_for(reading.wait(), timeout=10)
        refused = await client.post(f"{API}/payouts", json=refused_body, headers=refused_headers)
        sent.set()
        assert (await holding_the_turn).status_code == 201

    assert_error(refused, 429, "RATE_LIMITED")
    assert refused.headers["Retry-After"] == "1"
    async with sessions() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(Payout)
            .where(Payout.merchant_reference == refused_body["merchantReference"])
        )
        key = await session.get(
            IdempotencyKey, (merchant.merchant_id, refused_headers["X-IDEMPOTENCY-KEY"])
        )
    assert (stored, key) == (0, None)


async def test_an_injected_latency_waits_outside_the_turns(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    """It holds no connection, yet it held its turn: a merchant testing its timeouts with more
    latency faults at once than its cap got 429s it never asked for (diff review)."""
    merchant = await make_merchant()
    capped = _capped(settings, api_max_in_flight_per_key=1, api_database_timeout_seconds=0.3)
    slow = {**auth(merchant, ""), "X-Sandbox-Fault": "latency=1000"}
    async with in_process_api(capped) as client:
        answers = await asyncio.gather(
            *(client.get(f"{API}/balance", headers=slow) for _ in range(2))
        )

    assert [answer.status_code for answer in answers] == [200, 200]
