"""PUT /webhook-endpoint looks a URL's host up (where private URLs are refused) on threads of
its own. It used asyncio's default threads, a handful that a lookup keeps until the name servers
answer: one merchant's slow name servers filled them, and another merchant's good URL was then
refused as a name that "does not resolve"."""

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from contracts.host_lookup import LOOKUP_THREADS, LOOKUPS_PER_CALLER
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth
from tests.support.polling import eventually


@pytest.fixture
async def public_only_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API as production runs it: a webhook URL must resolve to public addresses only."""
    only_public = settings.model_copy(update={"webhook_allow_private_urls": False})
    async with in_process_api(only_public) as client:
        yield client


@dataclass
class NameServers:
    """socket.getaddrinfo as the tests' name servers answer: good.example at once (a public
    address), a `slow-` name once released (then it does not resolve), any other as the host's."""

    release: threading.Event = field(default_factory=threading.Event)
    slow_lookups: list[str] = field(default_factory=list)


@pytest.fixture
def name_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[NameServers]:
    servers, look_up = NameServers(), socket.getaddrinfo

    def answer(host: str, port: int, *args: object, **kwargs: object) -> object:
        if host.startswith("slow-"):
            servers.slow_lookups.append(host)
            servers.release.wait(30.0)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "good.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]
        return look_up(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", answer)
    yield servers
    servers.release.set()


@pytest.mark.usefixtures("name_servers")
async def test_a_good_url_is_accepted_while_the_default_threads_wait_on_name_servers(
    public_only_api: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    loop = asyncio.get_running_loop()
    release = threading.Event()
    # As many waits as the default executor has threads: each a lookup of slow name servers.
    busy = [
        loop.run_in_executor(None, release.wait, 30.0)
        for _ in range(min(32, (os.cpu_count() or 1) + 4))
    ]
    try:
        answer = await public_only_api.put(
            f"{API}/webhook-endpoint",
            json={"url": "https://good.example/hooks"},
            headers=auth(merchant, ""),
        )
    finally:
        release.set()
        await asyncio.gather(*busy)

    assert answer.status_code == 200, answer.text


async def test_one_merchants_slow_names_leave_lookup_threads_for_another_merchant(
    public_only_api: httpx.AsyncClient, make_merchant: MerchantFactory, name_servers: NameServers
) -> None:
    """Those threads are shared too: a merchant's PUTs of as many names on its own slow name
    servers took all of them, and another merchant's good URL was refused (found by the webhook
    API review). A merchant has a share of them; past it, its own next name does not resolve."""
    slow, other = await make_merchant(), await make_merchant()
    puts = [
        asyncio.create_task(
            public_only_api.put(
                f"{API}/webhook-endpoint",
                json={"url": f"https://slow-{n}.example/hook"},
                headers=auth(slow, ""),
            )
        )
        for n in range(LOOKUP_THREADS)
    ]

    async def shares_taken() -> bool:
        return (
            len(name_servers.slow_lookups) >= LOOKUPS_PER_CALLER
            and sum(put.done() for put in puts) >= len(puts) - LOOKUPS_PER_CALLER
        )

    try:
        await eventually(shares_taken, what="the slow merchant's share of lookups taken")
        answer = await public_only_api.put(
            f"{API}/webhook-endpoint",
            json={"url": "https://good.example/hooks"},
            headers=auth(other, ""),
        )
    finally:
        name_servers.release.set()
        refused = await asyncio.gather(*puts)

    assert answer.status_code == 200, answer.text
    assert all(put.status_code == 400 for put in refused)  # "does not resolve", each
