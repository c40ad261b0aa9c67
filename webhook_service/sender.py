"""One HTTP attempt: POST the signed body, measure it, and describe what happened.

One shared httpx client (connection pooling) per process; redirects are not followed (a 3xx is a
failed attempt: the endpoint must be configured with its final URL); the whole attempt, not only
each socket operation, is bounded by the webhook timeout.
"""

import asyncio
import time
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
    def __init__(self, *, timeout_seconds: float, allow_private_urls: bool) -> None:
        self.timeout_seconds = timeout_seconds
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.client = httpx.AsyncClient(
            transport=PublicOnlyTransport(allow_private=allow_private_urls, limits=limits),
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            async with (
                asyncio.timeout(self.timeout_seconds),
                self.client.stream("POST", url, content=body, headers=dict(headers)) as response,
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
        await self.client.aclose()
