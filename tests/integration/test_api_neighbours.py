"""One merchant's burst does not hold another merchant's calls (neighbours review: behind a burst
of 1,000 creates, another merchant's create took 8.9 s, then 503 once the wait passed the pool's
timeout). Each API key runs a few requests at a time; the rest wait their turn in memory, and
past the database timeout are refused 429 (api_service/client_turns.py)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

import api_service.deps
import api_service.sandbox.fault_settings
from api_service.app import create_app
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import IdempotencyKey, Merchant, Payout
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    new_key,
    payout_body,
)
from tests.support.dashboard_client import signed_in
from tests.support.polling import eventually

BURST = 30
PER_KEY = 2
# The quiet request's turn comes after those already running (the burst's share, on the pool's
# two connections); while it runs on one, the burst goes on on the other, and a stall of its own
# statements on a loaded host lets a few more finish (2 * PER_KEY failed once in a full tier,
# never alone). Behind the burst, with no turns, 29 of 30 creates and 18 pages finished first.
OVERTAKEN_AT_MOST = 3 * PER_KEY


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
    assert overtaken_by <= OVERTAKEN_AT_MOST, finished


async def _known(client: httpx.AsyncClient, merchant: NewMerchant) -> None:
    """The merchant's key known to the process: a request of it takes its turn at once, before
    its body is read (a key new to the process is looked up first, its body read meanwhile)."""
    assert (await client.get(f"{API}/balance", headers=auth(merchant, ""))).is_success


@asynccontextmanager
async def _its_one_turn_held(
    client: httpx.AsyncClient, merchant: NewMerchant
) -> AsyncIterator[None]:
    """The merchant's one turn held, meanwhile, by a create whose body comes slowly; it is
    created once the body is sent, on leaving."""
    reading, sent = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        reading.set()
        await sent.wait()
        yield orjson.dumps(payout_body())

    await _known(client, merchant)
    holding_the_turn = asyncio.create_task(
        client.post(
            f"{API}/payouts",
            content=slow_body(),
            headers={**auth(merchant), "Content-Type": "application/json"},
        )
    )
    await asyncio.wait_for(reading.wait(), timeout=10)
    try:
        yield
    finally:
        sent.set()
    assert (await holding_the_turn).status_code == 201


async def test_a_request_whose_turn_does_not_come_in_time_is_429_and_nothing_is_written(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    refused_body = payout_body()
    refused_headers = auth(merchant)
    capped = _capped(settings, api_max_in_flight_per_key=1, api_database_timeout_seconds=0.2)
    async with in_process_api(capped) as client, _its_one_turn_held(client, merchant):
        refused = await client.post(f"{API}/payouts", json=refused_body, headers=refused_headers)

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


async def test_a_request_that_waited_its_turn_is_refused_if_its_key_was_deactivated_meanwhile(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A request carried the merchant its turns read from the key's cache on arrival, and ran
    on it once its turn came, up to 10 s later: a payout was created for a key deactivated
    (and refused everywhere else) long before (found by the API keys review). A request that
    waited looks its key up again once its turn comes."""
    merchant, body = await make_merchant(), payout_body()
    waiting = "payouts_api_requests_waiting_for_their_turn"
    async with _api_app(_capped(settings, api_max_in_flight_per_key=1)) as app:
        async with _client_at(app, "10.0.0.7") as client, _its_one_turn_held(client, merchant):
            before = REGISTRY.get_sample_value(waiting) or 0.0
            queued = asyncio.create_task(
                client.post(f"{API}/payouts", json=body, headers=auth(merchant))
            )

            async def in_line() -> bool:
                return (REGISTRY.get_sample_value(waiting) or 0.0) > before

            await eventually(in_line, what="the create waiting for its turn")
            async with transaction(sessions) as session:
                await session.execute(
                    update(Merchant)
                    .where(Merchant.id == merchant.merchant_id)
                    .values(is_active=False)
                )
            app.state.merchants.forget(merchant.merchant_id)  # as 2 s later
        answer = await queued

    assert_error(answer, 401, "INVALID_API_KEY")
    async with sessions() as session:
        made = await session.scalar(
            select(func.count())
            .select_from(Payout)
            .where(Payout.merchant_reference == body["merchantReference"])
        )
    assert made == 0


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


# --- what runs before a request has its turn -------------------------------------------------

SLOW_READ = 0.05
SLOW_BURST = 40


@dataclass
class InFlight:
    """How many calls of a function run at once, and the most that ever did."""

    now: int = 0
    most: int = 0


def _slowed(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> InFlight:
    """A database read that holds its connection SLOW_READ longer; how many run at once."""
    read = getattr(module, name)
    in_flight = InFlight()

    async def slow_read(*args: Any, **kwargs: Any) -> Any:
        in_flight.now += 1
        in_flight.most = max(in_flight.most, in_flight.now)
        try:
            result = await read(*args, **kwargs)
            await asyncio.sleep(SLOW_READ)
            return result
        finally:
            in_flight.now -= 1

    monkeypatch.setattr(module, name, slow_read)
    return in_flight


async def _quiet_call_beside_a_burst(
    client: httpx.AsyncClient, noisy: dict[str, str], quiet: dict[str, str]
) -> None:
    """The quiet merchant's balance while the noisy one's burst is on."""
    burst = [
        asyncio.create_task(client.get(f"{API}/balance", headers=noisy)) for _ in range(SLOW_BURST)
    ]
    await asyncio.sleep(0)  # the burst's requests are in before the quiet one
    answer = await client.get(f"{API}/balance", headers=quiet)
    assert answer.status_code == 200, answer.text
    await asyncio.gather(*burst)


async def test_a_merchant_with_a_fault_setting_reads_it_in_its_turns(
    settings: Settings, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault middleware reads the merchant-wide setting on each call of a merchant that has
    one: outside the turns, a burst's reads queued for the pool ahead of other merchants."""
    noisy, quiet = await make_merchant(), await make_merchant()
    reads = _slowed(monkeypatch, api_service.sandbox.fault_settings, "load_fault_share")
    async with in_process_api(_capped(settings)) as client:
        saved = await client.put(
            f"{API}/sandbox/faults", json={"fault": "latency=1", "percent": 1}, headers=auth(noisy)
        )
        assert saved.status_code == 200, saved.text
        for merchant in (noisy, quiet):  # each key known to the process
            assert (await client.get(f"{API}/balance", headers=auth(merchant, ""))).is_success
        await _quiet_call_beside_a_burst(client, auth(noisy, ""), auth(quiet, ""))

    # The burst reads in its turns, so it holds at most their connections: the quiet call finds
    # another at once. (Counted, not timed: a wall-clock bound failed on a loaded host.)
    assert reads.most <= PER_KEY, reads


async def test_a_burst_with_a_new_key_looks_its_merchant_up_in_its_turns(
    settings: Settings, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    noisy, quiet = await make_merchant(), await make_merchant()
    reads = _slowed(monkeypatch, api_service.deps, "active_merchant")
    async with in_process_api(_capped(settings)) as client:
        assert (await client.get(f"{API}/balance", headers=auth(quiet, ""))).is_success
        await _quiet_call_beside_a_burst(client, auth(noisy, ""), auth(quiet, ""))

    assert reads.most <= PER_KEY, reads


# --- whose line a request waits in -------------------------------------------------------------


@asynccontextmanager
async def _api_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def _client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


async def test_requests_with_made_up_api_keys_wait_in_their_addresss_line(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    """A made-up X-API-KEY on each request got each its own line: a burst of them was not
    capped, and queued for the pool ahead of a merchant's create."""
    quiet = await make_merchant()
    finished: list[str] = []

    async def made_up_key_call(client: httpx.AsyncClient) -> None:
        answer = await client.post(
            f"{API}/payouts",
            json=payout_body(),
            headers={"X-API-KEY": f"mpk_test_{uuid.uuid4().hex}", "X-IDEMPOTENCY-KEY": new_key()},
        )
        assert answer.status_code == 401, answer.text
        finished.append("made-up")

    async with (
        _api_app(_capped(settings)) as app,
        _client_at(app, "192.0.2.1") as stranger,
        _client_at(app, "192.0.2.2") as merchant,
    ):
        burst = [asyncio.create_task(made_up_key_call(stranger)) for _ in range(3 * BURST)]

        async def under_way() -> bool:
            return bool(finished)

        await eventually(under_way, interval=0.001, what="the burst under way")
        finished_before_quiet = len(finished)
        await create_payout(merchant, quiet)  # its key new to the process too
        finished.append("quiet")
        await asyncio.gather(*burst)

    # Beside them, not behind them: two of the made-up keys' lookups run at a time, and a few
    # finish while the create runs (each costs one read; the create, several).
    overtaken_by = finished.index("quiet") - finished_before_quiet
    assert overtaken_by < BURST, (overtaken_by, len(finished))


async def test_a_keyless_caller_stays_in_its_addresss_line_whatever_api_key_it_adds(
    settings: Settings,
) -> None:
    """A PSP's callback waits in its address's line; the same callback with a made-up X-API-KEY
    (which the callback's route ignores) left it."""
    reading, sent = asyncio.Event(), asyncio.Event()
    body = orjson.dumps({"eventId": "evt-x", "payoutId": "po_x", "status": "SUCCESS"})

    async def slow_body() -> AsyncIterator[bytes]:
        reading.set()
        await sent.wait()
        yield body

    capped = _capped(settings, api_max_in_flight_per_key=1, api_database_timeout_seconds=0.3)
    unsigned = {"X-PSP-Signature": "00", "Content-Type": "application/json"}
    async with in_process_api(capped) as client:
        holding_the_turn = asyncio.create_task(
            client.post(f"{API}/ipn/psp", content=slow_body(), headers=unsigned)
        )
        await asyncio.wait_for(reading.wait(), timeout=10)
        with_a_made_up_key = await client.post(
            f"{API}/ipn/psp", content=body, headers={**unsigned, "X-API-KEY": "anything"}
        )
        sent.set()
        await holding_the_turn

    assert_error(with_a_made_up_key, 429, "RATE_LIMITED")


async def test_a_merchants_dashboard_pages_take_its_turns(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    """The dashboard never took a turn: a merchant's burst of pages held the pool ahead of
    another merchant's API call."""
    noisy, quiet = await make_merchant(), await make_merchant()
    finished: list[str] = []

    async def page(client: httpx.AsyncClient) -> None:
        answer = await client.get("/dashboard/payouts")
        assert answer.status_code == 200, answer.status_code
        finished.append("page")

    async with in_process_api(_capped(settings)) as client:
        await signed_in(client, noisy)
        await page(client)
        assert (await client.get(f"{API}/balance", headers=auth(quiet, ""))).is_success
        finished.clear()
        burst = [asyncio.create_task(page(client)) for _ in range(BURST)]

        async def under_way() -> bool:
            return bool(finished)

        await eventually(under_way, interval=0.001, what="the burst under way")
        finished_before_quiet = len(finished)
        await create_payout(client, quiet)
        finished.append("quiet")
        await asyncio.gather(*burst)

    overtaken_by = finished.index("quiet") - finished_before_quiet
    assert overtaken_by <= OVERTAKEN_AT_MOST, (overtaken_by, len(finished))


async def test_a_dashboard_page_whose_turn_does_not_come_is_refused_with_a_page(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    capped = _capped(settings, api_max_in_flight_per_key=1, api_database_timeout_seconds=0.2)
    async with in_process_api(capped) as client:
        await signed_in(client, merchant)
        async with _its_one_turn_held(client, merchant):
            refused = await client.get("/dashboard/payouts")

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["content-type"].startswith("text/html")
