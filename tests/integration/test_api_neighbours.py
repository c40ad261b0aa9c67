"""One merchant's burst does not hold another merchant's calls (neighbours review: behind a burst
of 1,000 creates, another merchant's create took 8.9 s, then 503 once the wait passed the pool's
timeout). Each API key runs a few requests at a time; the rest wait their turn in memory, and
past the database timeout are refused 429 (api_service/client_turns.py)."""

import asyncio

import httpx
from prometheus_client import REGISTRY

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    footprint,
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


def _latency_faults_injected() -> float:
    return (
        REGISTRY.get_sample_value(
            "payouts_api_injected_faults_total", {"fault": "latency", "source": "header"}
        )
        or 0.0
    )


async def test_a_request_whose_turn_does_not_come_in_time_is_429_and_nothing_is_written(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    faults_before = _latency_faults_injected()
    slow_call = {**auth(merchant, ""), "X-Sandbox-Fault": "latency=1000"}
    capped = _capped(settings, api_max_in_flight_per_key=1, api_database_timeout_seconds=0.2)
    async with in_process_api(capped) as client:
        holding_the_turn = asyncio.create_task(client.get(f"{API}/balance", headers=slow_call))

        async def its_latency_under_way() -> bool:
            return _latency_faults_injected() > faults_before

        await eventually(its_latency_under_way, what="the slow call running")
        refused = await client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant))
        assert (await holding_the_turn).status_code == 200

    assert_error(refused, 429, "RATE_LIMITED")
    assert refused.headers["Retry-After"] == "1"
    assert await footprint(sessions, merchant.merchant_id) == before
