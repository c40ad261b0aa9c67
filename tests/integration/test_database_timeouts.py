"""A database that hangs rather than fails (its network drops packets, the server stops
answering): the API answers 503 within its database timeout instead of holding the request for
as long as the database hangs, and serves again once it answers."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncmy
import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError

from contracts.db.engine import create_engine
from contracts.db.outages import is_outage
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.integration.test_api_unexpected_error_log import database_refusals
from tests.support.amqp import eventually
from tests.support.api_helpers import API, auth, payout_body
from tests.support.blackhole import require_iptables, silenced
from tests.support.dashboard_client import signed_in
from tests.support.tcp_proxy import HangingProxy

TIMEOUT_SECONDS = 2.0


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[HangingProxy]:
    async with HangingProxy.in_front_of(settings.database_url) as proxy:
        yield proxy


@pytest.fixture
async def api(settings: Settings, proxy: HangingProxy) -> AsyncIterator[httpx.AsyncClient]:
    quick = settings.model_copy(
        update={
            "database_url": proxy.url_through(settings.database_url),
            "api_lock_wait_seconds": 1,
            "api_database_timeout_seconds": TIMEOUT_SECONDS,
            "db_pool_size": 1,  # two connections with the overflow
        }
    )
    async with in_process_api(quick) as client:
        yield client
        proxy.resume()  # whatever the test's end: the app's shutdown writes its request log


async def test_a_hanging_database_is_a_503_within_the_timeout_and_then_served_again(
    api: httpx.AsyncClient, proxy: HangingProxy, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    assert (await api.get(f"{API}/balance", headers=auth(merchant, ""))).status_code == 200
    key = str(uuid.uuid4())
    body = payout_body()

    proxy.hang()
    for method, path, headers, json in (
        ("GET", "/balance", auth(merchant, ""), None),
        ("POST", "/payouts", auth(merchant, key), body),
        ("GET", "/payouts", auth(merchant, ""), None),
    ):
        # The pool's connection times out, then (the pool invalidated) a new one's greeting.
        async with asyncio.timeout(3 * TIMEOUT_SECONDS):
            answer = await api.request(method, f"{API}{path}", headers=headers, json=json)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    proxy.resume()

    async def created() -> httpx.Response:
        answer = await api.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
        assert answer.status_code == 201, answer.text
        return answer

    payout = (await eventually(created, timeout=15)).json()["data"]
    listed = await api.get(f"{API}/payouts", headers=auth(merchant, ""))
    assert [p["id"] for p in listed.json()["data"]["payouts"]] == [payout["id"]]


async def test_requests_queued_for_the_pool_get_their_503_within_the_timeout_too(
    api: httpx.AsyncClient, proxy: HangingProxy, make_merchant: MerchantFactory
) -> None:
    """Ten requests, two connections: the ones waiting for a connection waited behind the hung
    ones up to the pool's own timeout (SQLAlchemy's 30 s); answers came after 2, 4, 6 ... 18 s."""
    merchant = await make_merchant()
    assert (await api.get(f"{API}/balance", headers=auth(merchant, ""))).status_code == 200

    proxy.hang()
    # A wait for a connection, then its read, then (the pool invalidated) a new one's greeting.
    async with asyncio.timeout(3 * TIMEOUT_SECONDS + 1):
        answers = await asyncio.gather(
            *(api.get(f"{API}/balance", headers=auth(merchant, "")) for _ in range(10))
        )

    assert {answer.status_code for answer in answers} == {503}


@pytest.mark.parametrize("keys", ["one-known-key", "keys-new-to-the-process"])
async def test_calls_queued_in_their_clients_turn_behind_a_hanging_database_get_503_not_429(
    settings: Settings, proxy: HangingProxy, make_merchant: MerchantFactory, keys: str
) -> None:
    """A call whose turn did not come because the calls ahead of it were refused by the database
    is refused for the database too: eight calls of one key at one in flight answered four 503s
    and four 429 RATE_LIMITED (truth review), the merchant told to slow down for our outage. So
    did eight keys new to the process, looked up in their address's turn (fixes review)."""
    one_at_a_time = settings.model_copy(
        update={
            "database_url": proxy.url_through(settings.database_url),
            "api_database_timeout_seconds": 1.5,  # past the lock wait: the turn wait is 5.5 s
            "api_lock_wait_seconds": 1,
            "api_max_in_flight_per_key": 1,
        }
    )
    merchant = await make_merchant()
    if keys == "one-known-key":
        calls = [auth(merchant, "")] * 8
    else:
        calls = [{"X-API-KEY": f"mpk_test_{uuid.uuid4().hex}"} for _ in range(8)]
    outages = database_refusals("unavailable")
    async with in_process_api(one_at_a_time) as api:
        assert (await api.get(f"{API}/balance", headers=auth(merchant, ""))).status_code == 200
        proxy.hang()
        answers = await asyncio.gather(
            *(api.get(f"{API}/balance", headers=headers) for headers in calls)
        )
        proxy.resume()

    assert [answer.status_code for answer in answers] == [503] * 8, [a.text for a in answers]
    assert {answer.json()["error"]["message"] for answer in answers} == {
        "Database unavailable; retry later"
    }
    # Counted as the database's refusals: only the calls the database refused.
    assert 1 <= database_refusals("unavailable") - outages < 8


async def test_a_connection_whose_database_went_silent_mid_statement_is_dropped_in_seconds(
    settings: Settings,
) -> None:
    """A network that drops packets sends no RST: a worker waited on such a connection for its
    whole read timeout (120 s) after the network came back (half-open connections review)."""
    require_iptables()
    engine = create_engine(settings.database_url, timeout_seconds=60, dead_peer_seconds=2)
    try:
        async with engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            local_port = raw._transport.get_extra_info("socket").getsockname()[1]
            statement = asyncio.ensure_future(connection.execute(text("SELECT SLEEP(30)")))
            with silenced(local_port, make_url(settings.database_url).port or 3306):
                async with asyncio.timeout(10):
                    with pytest.raises(OperationalError) as dropped:
                        await statement
    finally:
        await engine.dispose()

    assert is_outage(dropped.value)


async def test_a_connection_closed_as_it_is_made_is_an_outage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the server's connection limit, asyncmy sometimes found the transport closed before it
    read the refusal, and raised RuntimeError: a bug to every service (500s, dead letters: idle
    connections review)."""

    async def closed_at_once(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Transport does not expose socket instance")

    monkeypatch.setattr(asyncmy, "connect", closed_at_once)
    engine = create_engine(settings.database_url)
    try:
        with pytest.raises(OperationalError) as refused:
            await engine.connect()
    finally:
        await engine.dispose()

    assert is_outage(refused.value)


@pytest.mark.parametrize("path", ["/dashboard/payouts", "/dashboard/balance"])
async def test_a_dashboard_page_on_a_hanging_database_is_a_503_page(
    settings: Settings, proxy: HangingProxy, make_merchant: MerchantFactory, path: str
) -> None:
    """It was the API's JSON, which the browser showed as the page, without the dashboard's
    security headers (dashboard outages review)."""
    quick = settings.model_copy(
        update={
            "database_url": proxy.url_through(settings.database_url),
            "api_database_timeout_seconds": TIMEOUT_SECONDS,
            "api_lock_wait_seconds": 1,
        }
    )
    merchant = await make_merchant()
    async with in_process_api(quick) as client:
        await signed_in(client, merchant)
        proxy.hang()
        page = await client.get(path)
        proxy.resume()

    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "Database unavailable; retry later" in page.text
    assert page.headers["cache-control"] == "no-store"
    # The request's id, for support: only its header had it (dashboard outages review).
    assert f"<code data-reference>{page.headers['x-request-id']}</code>" in page.text


async def test_a_list_read_first_on_a_connection_the_server_closed_is_no_500(
    settings: Settings, proxy: HangingProxy, make_merchant: MerchantFactory
) -> None:
    """A list sets its snapshot's isolation level first, and SQLAlchemy let the driver's error
    through from it: after a database restart, an unhandled 500 (dashboard outages review),
    and, the connection kept in the pool, 500s after it (third fixes review)."""
    through_the_proxy = settings.model_copy(
        update={"database_url": proxy.url_through(settings.database_url), "db_pool_size": 1}
    )
    merchant = await make_merchant()
    answers: list[int] = []
    async with in_process_api(through_the_proxy) as api:
        for _ in range(2):  # the pool's connections in use once
            await api.get(f"{API}/payouts", headers=auth(merchant, ""))
        proxy.sever()  # the server closed them: a restart
        while 200 not in answers and len(answers) < 10:
            answers.append(
                (await api.get(f"{API}/payouts", headers=auth(merchant, ""))).status_code
            )

    assert set(answers) <= {200, 503} and answers[-1] == 200, answers
