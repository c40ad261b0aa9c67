"""Host name lookups for the webhook URLs merchants give (the API checks them, the webhook
service connects to them): on threads of their own, so that slow name servers of one merchant
never hold up another's lookups or the process's own."""

import asyncio
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from contracts.webhooks import AddressInfo, IPAddress, Resolve, addresses_of

# Host name lookups at once (each name takes at most one: HostResolver).
LOOKUP_THREADS = 16


def caller_share(threads: int) -> int:
    """Lookups one caller (a merchant) may have started and still in flight: a merchant's own
    slow names never take every thread, another merchant's lookup waiting behind them."""
    return max(1, threads // 4)


LOOKUPS_PER_CALLER = caller_share(LOOKUP_THREADS)


class HostResolver:
    """Host names looked up on threads of its own, one lookup in flight per name.

    asyncio's getaddrinfo runs on the loop's default threads (a handful), and a lookup that
    times out keeps its thread until the name servers answer: a merchant whose name servers are
    slow filled them, and every other merchant's new connection (and the process's own to MySQL
    and RabbitMQ) queued behind it: the webhook service failed their attempts as timeouts of
    their own endpoints, and the API refused their webhook URLs as names that do not resolve.
    Here each name takes at most one thread however many callers wait for it, and a caller
    named (`of`) at most its share (caller_share): one merchant's PUTs of names on its own slow
    name servers took every thread, and another merchant's good URL was refused as not
    resolving."""

    def __init__(self, threads: int = LOOKUP_THREADS) -> None:
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="host-lookup")
        self._in_flight: dict[tuple[str, int], asyncio.Future[list[AddressInfo]]] = {}
        self._started_by: Counter[str] = Counter()  # lookups in flight, by the caller that began
        self._caller_share = caller_share(threads)

    async def __call__(self, host: str, port: int, *, caller: str | None = None) -> list[IPAddress]:
        """The host name's addresses (public_addresses times the wait and takes IP literals);
        shielded: a waiter that gives up leaves the lookup to the others. A caller with
        its share of lookups in flight gets a name not yet looked up refused (an
        OSError: the name does not resolve, for now)."""
        lookup = self._in_flight.get((host, port)) or self._look_up(host, port, caller)
        return addresses_of(await asyncio.shield(lookup))

    def of(self, caller: str) -> Resolve:
        """Lookups on behalf of `caller` (a merchant), counted against its share."""
        return partial(self.__call__, caller=caller)

    def _look_up(
        self, host: str, port: int, caller: str | None
    ) -> asyncio.Future[list[AddressInfo]]:
        if caller is not None and self._started_by[caller] >= self._caller_share:
            raise socket.gaierror(socket.EAI_AGAIN, "too many of the caller's lookups under way")
        lookup = asyncio.get_running_loop().run_in_executor(
            self._threads, partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        )
        self._in_flight[(host, port)] = lookup
        if caller is not None:
            self._started_by[caller] += 1

        def done(finished: asyncio.Future[list[AddressInfo]]) -> None:
            del self._in_flight[(host, port)]
            if caller is not None:
                self._started_by[caller] -= 1
                if not self._started_by[caller]:
                    del self._started_by[caller]
            if not finished.cancelled():
                finished.exception()  # retrieved: every waiter may have timed out

        lookup.add_done_callback(done)
        return lookup

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
