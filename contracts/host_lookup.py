"""Host name lookups for the webhook URLs merchants give (the API checks them, the webhook
service connects to them): on threads of their own, so that slow name servers of one merchant
never hold up another's lookups or the process's own."""

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from contracts.webhooks import AddressInfo, IPAddress, addresses_of

# Host name lookups at once (each name takes at most one: HostResolver).
LOOKUP_THREADS = 16


class HostResolver:
    """Host names looked up on threads of its own, one lookup in flight per name.

    asyncio's getaddrinfo runs on the loop's default threads (a handful), and a lookup that
    times out keeps its thread until the name servers answer: a merchant whose name servers are
    slow filled them, and every other merchant's new connection (and the process's own to MySQL
    and RabbitMQ) queued behind it: the webhook service failed their attempts as timeouts of
    their own endpoints, and the API refused their webhook URLs as names that do not resolve.
    Here each name takes at most one thread however many callers wait for it."""

    def __init__(self, threads: int = LOOKUP_THREADS) -> None:
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="host-lookup")
        self._in_flight: dict[tuple[str, int], asyncio.Future[list[AddressInfo]]] = {}

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        """The host name's addresses (public_addresses times the wait and takes IP literals);
        shielded: a waiter that gives up leaves the lookup to the others."""
        lookup = self._in_flight.get((host, port)) or self._look_up(host, port)
        return addresses_of(await asyncio.shield(lookup))

    def _look_up(self, host: str, port: int) -> asyncio.Future[list[AddressInfo]]:
        lookup = asyncio.get_running_loop().run_in_executor(
            self._threads, partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        )
        self._in_flight[(host, port)] = lookup

        def done(finished: asyncio.Future[list[AddressInfo]]) -> None:
            del self._in_flight[(host, port)]
            if not finished.cancelled():
                finished.exception()  # retrieved: every waiter may have timed out

        lookup.add_done_callback(done)
        return lookup

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
