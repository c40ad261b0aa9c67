"""The load generator: payout creates over the real HTTP API, closed-loop (a fixed number of
clients, each sending its next request when the last one answered) or open-loop (a fixed offered
rate, each request timed from when it was due, so a slow server cannot hide its queueing)."""

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from bench.http_client import Connection, ConnectionPool, Header, HttpProtocolError

CREATE_PATH = "/api/v1/payouts"
# Suffix 0001 is the scenario table's "SUCCESS at once" row: no IPN or broker delay involved.
SUCCESS_ACCOUNT = "03001230001"
PAYOUT_AMOUNT = "100.00"
TRANSPORT_ERROR = 0  # the status recorded when no HTTP answer came back
# A create not answered by then failed (TRANSPORT_ERROR): one that never was held its phase,
# and `make bench`, for good.
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str = CREATE_PATH

    @classmethod
    def of(cls, base_url: str, path: str = CREATE_PATH) -> "Target":
        parts = urlsplit(base_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, path)


@dataclass(frozen=True)
class CreateResult:
    sent_at: float  # wall clock (time.time()) when the request was due
    latency: float  # seconds from due to answered
    status: int  # TRANSPORT_ERROR when the connection failed
    payout_id: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def answered_at(self) -> float:
        return self.sent_at + self.latency


class PayoutRequests:
    """Request bodies and headers: merchants taken in turn, references unique within the run."""

    def __init__(self, api_keys: Sequence[str], run_tag: str) -> None:
        if not api_keys:
            raise ValueError("at least one merchant is needed")
        self.api_keys = api_keys
        self.run_tag = run_tag
        self._sequence: Iterator[int] = itertools.count()

    def next(self) -> tuple[list[Header], bytes]:
        number = next(self._sequence)
        return self._headers(number), orjson.dumps(self._payout(number))

    def next_batch(self, size: int) -> tuple[list[Header], bytes]:
        """One `POST /payouts/batch` of `size` payouts, all of the merchant whose turn it is."""
        numbers = [next(self._sequence) for _ in range(size)]
        body = {"payouts": [self._payout(number) for number in numbers]}
        return self._headers(numbers[0] if numbers else 0), orjson.dumps(body)

    def _payout(self, number: int) -> dict[str, str]:
        return {
            "merchantReference": f"bench-{self.run_tag}-{number}",
            "amount": PAYOUT_AMOUNT,
            "destType": "WALLET",
            "walletCode": "JAZZCASH",
            "accountNumber": SUCCESS_ACCOUNT,
        }

    def _headers(self, number: int) -> list[Header]:
        return [
            ("Content-Type", "application/json"),
            ("X-API-KEY", self.api_keys[number % len(self.api_keys)]),
            ("X-IDEMPOTENCY-KEY", str(uuid.uuid4())),
        ]


def _payout_id(status: int, body: bytes) -> str | None:
    if status != 201:
        return None
    try:
        data = orjson.loads(body).get("data")
    except orjson.JSONDecodeError:
        return None
    payout_id = data.get("id") if isinstance(data, dict) else None
    return payout_id if isinstance(payout_id, str) else None


async def _send(
    connection: Connection, target: Target, requests: PayoutRequests, due_wall: float, due: float
) -> CreateResult:
    headers, body = requests.next()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            response = await connection.request("POST", target.path, headers, body)
    except TimeoutError:
        connection.close()  # its answer may come yet: never read as the next request's
        latency = time.perf_counter() - due
        return CreateResult(due_wall, latency, TRANSPORT_ERROR, None, "TimeoutError")
    except (OSError, asyncio.IncompleteReadError, HttpProtocolError) as failure:
        latency = time.perf_counter() - due
        return CreateResult(due_wall, latency, TRANSPORT_ERROR, None, type(failure).__name__)
    latency = time.perf_counter() - due
    error = None if response.status < 300 else response.body[:300].decode("utf-8", "replace")
    return CreateResult(
        due_wall, latency, response.status, _payout_id(response.status, response.body), error
    )


async def closed_loop(
    target: Target, requests: PayoutRequests, *, concurrency: int, duration: float
) -> list[CreateResult]:
    """`concurrency` clients, one keep-alive connection each, until `duration` seconds passed."""
    results: list[CreateResult] = []
    deadline = time.perf_counter() + duration

    async def client() -> None:
        connection = Connection(target.host, target.port)
        try:
            while time.perf_counter() < deadline:
                results.append(
                    await _send(connection, target, requests, time.time(), time.perf_counter())
                )
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


async def open_loop(
    target: Target,
    requests: PayoutRequests,
    *,
    rate: float,
    duration: float,
    max_in_flight: int = 256,
) -> list[CreateResult]:
    """`rate` requests per second for `duration` seconds, each on an idle connection.

    A request whose slot comes while `max_in_flight` are outstanding is still sent when one
    finishes, and its latency counts from when it was due.
    """
    results: list[CreateResult] = []
    pool = ConnectionPool(target.host, target.port)
    slots = asyncio.Semaphore(max_in_flight)
    start, start_wall = time.perf_counter(), time.time()
    tasks: list[asyncio.Task[None]] = []

    async def one(offset: float) -> None:
        async with slots:
            connection = pool.acquire()
            try:
                results.append(
                    await _send(connection, target, requests, start_wall + offset, start + offset)
                )
            finally:
                pool.release(connection)

    total = int(rate * duration)
    for index in range(total):
        offset = index / rate
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(offset)))
    await asyncio.gather(*tasks)
    pool.close()
    return results
