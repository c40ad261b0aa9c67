"""Clients that send their bodies slowly hold no database connection meanwhile: before, the
request's API key lookup (whenever the key was not cached) kept its connection, with its
transaction open, until the body had arrived, and a few such clients took the whole pool."""

import asyncio
from collections.abc import AsyncIterator

import httpx

from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth


async def test_slow_bodies_leave_the_pool_to_other_requests(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    # A pool of 2 (one in overflow), and every request looks its API key up.
    uncached = settings.model_copy(update={"db_pool_size": 1, "api_key_cache_seconds": 0})
    rest_of_body, reading_bodies = asyncio.Event(), asyncio.Semaphore(0)

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"merchantReference": "slow", '
        reading_bodies.release()  # the API asks for more: its request is reading its body
        await rest_of_body.wait()
        yield b'"amount": "1.00"}'

    async with in_process_api(uncached) as api:
        slow = [
            asyncio.create_task(
                api.post(
                    f"{API}/payouts",
                    content=slow_body(),
                    headers={**auth(merchant), "Content-Type": "application/json"},
                )
            )
            for _ in range(3)
        ]
        try:
            async with asyncio.timeout(10):
                for _ in slow:
                    await reading_bodies.acquire()
                answer = await api.get(f"{API}/balance", headers=auth(merchant, ""))
            assert answer.status_code == 200, answer.text
        finally:
            rest_of_body.set()
            answers: list[httpx.Response] = await asyncio.gather(*slow)
    assert [answer.status_code for answer in answers] == [400] * 3  # no destination given
