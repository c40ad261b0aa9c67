"""One HTTP attempt: POST the signed body, measure it, and describe what happened.

A few connection pools per process (httpcore's, below httpx: the client's request and response
models were a tenth of the service's CPU and a webhook needs none of them); redirects are not
followed (a 3xx is a failed attempt: the endpoint must be configured with its final URL); the
whole attempt, not only each socket operation, is bounded by the webhook timeout.
"""

import asyncio
import functools
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import httpcore
import httpx

from webhook_service.network import public_only_pool

EXCERPT_BYTES = 1024
MAX_ERROR_LENGTH = 500
USER_AGENT = "MyPay-Webhooks/1.0"
# Every connection kept alive: one closed after a burst is one connected (and its address
# checked) again at the next.
CONNECTIONS_PER_POOL = 100
# What an attempt can fail with before an answer: httpcore's errors, and a URL httpx refuses.
NO_ANSWER = (
    httpcore.NetworkError,  # connect, read, write; a refused destination is a ConnectError
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpx.InvalidURL,
)


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None  # None when no response arrived
    latency_ms: int
    error: str | None
    response_excerpt: str | None = None
    retry_after: str | None = None  # the raw Retry-After header, if any

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _failure_of(status_code: int) -> str | None:
    if 200 <= status_code < 300:
        return None
    if 300 <= status_code < 400:
        return f"HTTP {status_code}: redirects are not followed"
    return f"HTTP {status_code}"


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[httpcore.URL, bytes]:
    """The endpoint's URL as httpcore takes it and its Host header, parsed by httpx
    (international host names, validation) once per URL. The Host header is ours: httpcore's
    leaves the brackets off an IPv6 address."""
    parsed = httpx.URL(url)
    host = b"[%s]" % parsed.raw_host if b":" in parsed.raw_host else parsed.raw_host
    if parsed.port is not None:  # not the scheme's default
        host += b":%d" % parsed.port
    target = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    return target, host


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _excerpt(response: httpcore.Response) -> str:
    """The start of the response body, without downloading a large one."""
    received = bytearray()
    async for chunk in response.aiter_stream():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    return bytes(received[:EXCERPT_BYTES]).decode("utf-8", errors="replace")


class WebhookSender:
    """POSTs through POOLS connection pools, a merchant's calls always through the same one.

    httpcore scans every connection of a pool each time it places a request (and asks each idle
    one whether its socket is readable): with a hundred calls in flight in one pool, that scan was
    most of the service's CPU. Spread over pools, each scan sees a fraction of the connections:
    with 8 pools the HTTP call was 28 % of the service's profile at the bench's peak, with 64
    it is 18 %. (A pool holds only the connections it opened; each closes after 5 idle seconds.)
    """

    POOLS = 64

    def __init__(
        self,
        *,
        timeout_seconds: float,
        allow_private_urls: bool,
        ssl_context: ssl.SSLContext | None = None,  # None: the system's trusted CAs
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.pools = [
            public_only_pool(
                allow_private=allow_private_urls,
                connections=CONNECTIONS_PER_POOL,
                ssl_context=ssl_context,
            )
            for _ in range(self.POOLS)
        ]
        self._timeouts = {
            "timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout_seconds)
        }

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, pool_key: str = ""
    ) -> AttemptResult:
        """`pool_key` (the merchant) picks the connection pool."""
        pool = self.pools[zlib.crc32(pool_key.encode()) % self.POOLS]
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            target, host = _target(url)
            sent_headers: list[tuple[bytes | str, bytes | str]] = [
                ("Host", host),
                ("User-Agent", USER_AGENT),
                ("Accept", "*/*"),
                ("Content-Type", "application/json"),
                *headers.items(),
            ]
            async with (
                asyncio.timeout(self.timeout_seconds),
                pool.stream(
                    "POST",
                    target,
                    headers=sent_headers,
                    content=body,
                    extensions=self._timeouts,
                ) as response,
            ):
                excerpt = await _excerpt(response)
        except (TimeoutError, httpcore.TimeoutException):
            return AttemptResult(None, elapsed_ms(), f"timed out after {self.timeout_seconds:g} s")
        except NO_ANSWER as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
            return AttemptResult(None, elapsed_ms(), error)
        return AttemptResult(
            status_code=response.status,
            latency_ms=elapsed_ms(),
            error=_failure_of(response.status),
            response_excerpt=excerpt,
            retry_after=_header(response, b"retry-after"),
        )

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
