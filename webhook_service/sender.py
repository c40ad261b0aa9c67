"""One HTTP attempt: POST the signed body, measure it, and describe what happened.

A few shared httpx clients (connection pools, see WebhookSender) per process; redirects are not
followed (a 3xx is a failed attempt: the endpoint must be configured with its final URL); the
whole attempt, not only each socket operation, is bounded by the webhook timeout.
"""

import asyncio
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from webhook_service.network import PublicOnlyTransport

EXCERPT_BYTES = 1024
MAX_ERROR_LENGTH = 500
USER_AGENT = "MyPay-Webhooks/1.0"


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


async def _excerpt(response: httpx.Response) -> str:
    """The start of the response body, without downloading a large one."""
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    return bytes(received[:EXCERPT_BYTES]).decode("utf-8", errors="replace")


class WebhookSender:
    """POSTs through POOLS connection pools, a merchant's calls always through the same one.

    httpcore scans every connection of a pool each time it places a request (and asks each idle
    one whether its socket is readable): with a hundred calls in flight in one pool, that scan was
    most of the service's CPU. Spread over pools, each scan sees a fraction of the connections.
    """

    POOLS = 8

    def __init__(
        self,
        *,
        timeout_seconds: float,
        allow_private_urls: bool,
        ssl_context: ssl.SSLContext | None = None,  # None: the system's trusted CAs
    ) -> None:
        self.timeout_seconds = timeout_seconds
        # Every connection kept alive: one closed after a burst is one connected (and its
        # address checked) again at the next.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self.clients = [
            httpx.AsyncClient(
                transport=PublicOnlyTransport(
                    allow_private=allow_private_urls, limits=limits, ssl_context=ssl_context
                ),
                timeout=httpx.Timeout(timeout_seconds),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            )
            for _ in range(self.POOLS)
        ]

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, pool_key: str = ""
    ) -> AttemptResult:
        """`pool_key` (the merchant) picks the connection pool."""
        client = self.clients[zlib.crc32(pool_key.encode()) % self.POOLS]
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            async with (
                asyncio.timeout(self.timeout_seconds),
                client.stream("POST", url, content=body, headers=dict(headers)) as response,
            ):
                excerpt = await _excerpt(response)
        except (TimeoutError, httpx.TimeoutException):
            return AttemptResult(None, elapsed_ms(), f"timed out after {self.timeout_seconds:g} s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
            return AttemptResult(None, elapsed_ms(), error)
        return AttemptResult(
            status_code=response.status_code,
            latency_ms=elapsed_ms(),
            error=_failure_of(response.status_code),
            response_excerpt=excerpt,
            retry_after=response.headers.get("retry-after"),
        )

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
