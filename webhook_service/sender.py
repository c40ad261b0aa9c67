"""One HTTP attempt: POST the signed body, measure it, and describe what happened.

Through webhook_service.network's connection pool (h11 over asyncio streams, kept-alive
connections by origin); redirects are not followed (a 3xx is a failed attempt: the endpoint must
be configured with its final URL); the whole attempt is bounded by the webhook timeout, and an
answer's status counts once it is in, whatever becomes of its body.
"""

import asyncio
import functools
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h11
import httpx

from contracts.webhooks import DEFAULT_PORTS
from webhook_service.network import ConnectionPool, NoAnswer, Origin, UnsupportedProtocol

EXCERPT_BYTES = 1024
MAX_ERROR_LENGTH = 500
USER_AGENT = "MyPay-Webhooks/1.0"
# What an attempt can fail with before an answer: no connection, no (complete) answer, a URL
# httpx refuses, and a request h11 refuses to send (a header value with a line break, say).
NO_ANSWER = (NoAnswer, httpx.InvalidURL, h11.LocalProtocolError, UnicodeEncodeError)


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


@dataclass(frozen=True)
class Target:
    origin: Origin
    path: bytes  # path and query, as sent in the request line
    host: bytes  # the Host header: brackets around an IPv6 address, the port unless default


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> Target:
    """Where `url` points, parsed by httpx (international host names, validation) once per
    URL."""
    parsed = httpx.URL(url)
    if parsed.scheme not in DEFAULT_PORTS:
        raise UnsupportedProtocol(f"the URL scheme must be http or https, not {parsed.scheme!r}")
    raw_host = parsed.raw_host
    host = b"[%s]" % raw_host if b":" in raw_host else raw_host
    if parsed.port is not None:  # not the scheme's default
        host += b":%d" % parsed.port
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    return Target(Origin(parsed.scheme, raw_host.decode("ascii"), port), parsed.raw_path, host)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class WebhookSender:
    def __init__(
        self,
        *,
        timeout_seconds: float,
        allow_private_urls: bool,
        ssl_context: ssl.SSLContext | None = None,  # None: the system's trusted CAs
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.pool = ConnectionPool(
            allow_private=allow_private_urls,
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            target = _target(url)
            head = h11.Request(
                method=b"POST",
                target=target.path,
                headers=[
                    (b"Host", target.host),
                    (b"User-Agent", USER_AGENT.encode()),
                    (b"Accept", b"*/*"),
                    (b"Content-Type", b"application/json"),
                    (b"Content-Length", b"%d" % len(body)),
                    *((name.encode(), value.encode()) for name, value in headers.items()),
                ],
            )
            answer = await self.pool.request(
                target.origin,
                head,
                body,
                excerpt_bytes=EXCERPT_BYTES,
                deadline=asyncio.get_running_loop().time() + self.timeout_seconds,
            )
        except TimeoutError:
            return AttemptResult(None, elapsed_ms(), f"timed out after {self.timeout_seconds:g} s")
        except NO_ANSWER as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
            return AttemptResult(None, elapsed_ms(), error)
        return AttemptResult(
            status_code=answer.status,
            latency_ms=elapsed_ms(),
            error=_failure_of(answer.status),
            response_excerpt=answer.excerpt[:EXCERPT_BYTES].decode("utf-8", errors="replace"),
            retry_after=_header(answer.headers, b"retry-after"),
        )

    async def aclose(self) -> None:
        self.pool.close_all()
