"""Clients that send their bodies slowly hold no database connection meanwhile: before, a
request's look-ups (its API key whenever it was not cached, a dashboard session always) kept
their connection, with its transaction open, until the body had arrived, and a few such clients
took the whole pool (two connections here)."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx

from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth
from tests.support.dashboard_client import signed_in

SLOW_CLIENTS = 3


class SlowBodies:
    """Bodies sent in two parts: the first at once, the rest once `finish()` is called."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self._rest_may_go, self._reading = asyncio.Event(), asyncio.Semaphore(0)

    async def body(self) -> AsyncIterator[bytes]:
        yield self.first
        self._reading.release()  # the app asks for more: its request is reading its body
        await self._rest_may_go.wait()
        yield self.rest

    async def all_reading(self, count: int) -> None:
        for _ in range(count):
            await self._reading.acquire()

    def finish(self) -> None:
        self._rest_may_go.set()


async def answered_meanwhile(
    bodies: SlowBodies,
    post_slowly: Callable[[], Coroutine[Any, Any, httpx.Response]],
    probe: Callable[[], Coroutine[Any, Any, httpx.Response]],
) -> tuple[httpx.Response, list[httpx.Response]]:
    """The probe's answer while SLOW_CLIENTS posts read their bodies; then their answers."""
    slow = [asyncio.create_task(post_slowly()) for _ in range(SLOW_CLIENTS)]
    try:
        async with asyncio.timeout(10):
            await bodies.all_reading(SLOW_CLIENTS)
            answer = await probe()
    finally:
        bodies.finish()
        answers = await asyncio.gather(*slow)
    return answer, answers


async def test_slow_api_bodies_leave_the_pool_to_other_requests(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    # Every request looks its API key up.
    uncached = settings.model_copy(update={"db_pool_size": 1, "api_key_cache_seconds": 0})
    bodies = SlowBodies(b'{"merchantReference": "slow", ', b'"amount": "1.00"}')
    async with in_process_api(uncached) as api:
        answer, slow_answers = await answered_meanwhile(
            bodies,
            lambda: api.post(
                f"{API}/payouts",
                content=bodies.body(),
                headers={**auth(merchant), "Content-Type": "application/json"},
            ),
            lambda: api.get(f"{API}/balance", headers=auth(merchant, "")),
        )

    assert answer.status_code == 200, answer.text
    assert [a.status_code for a in slow_answers] == [400] * SLOW_CLIENTS  # no destination


async def test_slow_dashboard_forms_leave_the_pool_to_other_requests(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    """A payroll's CSV uploaded slowly, say: the form is read after the session's lookup."""
    merchant = await make_merchant()
    async with in_process_api(settings.model_copy(update={"db_pool_size": 1})) as dashboard:
        csrf = await signed_in(dashboard, merchant)
        bodies = SlowBodies(f"csrf_token={csrf}&".encode(), b"amount=1.00")
        answer, slow_answers = await answered_meanwhile(
            bodies,
            lambda: dashboard.post(
                "/dashboard/balance/top-up",
                content=bodies.body(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            lambda: dashboard.get(f"{API}/balance", headers=auth(merchant, "")),
        )

    assert answer.status_code == 200, answer.text
    assert all(a.status_code < 500 for a in slow_answers), slow_answers
