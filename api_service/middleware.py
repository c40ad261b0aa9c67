"""Pure ASGI middleware: request ids on every response and every log line, `Connection: close`
while the API drains, and the request body size limit."""

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.envelope import error_body
from api_service.errors import ApiError, PayloadTooLarge, ValidationFailed
from contracts.logging import bind_log_context
from contracts.wire import count_or_more

REQUEST_ID_HEADER = "x-request-id"
API_PATHS = "/api/"
# On every answer: a browser never takes a merchant's text in JSON (or a static file) for HTML.
NO_SNIFFING = {"x-content-type-options": "nosniff"}
# Printable ASCII, at most the width of the columns that carry it on (outbox correlation id).
_CLIENT_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,100}")
_REQUEST_ID_RULE = "must be 1-100 printable ASCII characters"


def is_api_call(scope: Scope, api_prefix: str, probes: frozenset[str]) -> bool:
    """An HTTP request under the API's prefix, the probes (liveness, readiness) aside."""
    path: str = scope.get("path", "")
    return scope["type"] == "http" and path.startswith(api_prefix) and path not in probes


@dataclass(frozen=True)
class HtmlPages:
    """The paths a browser reads (the dashboard's): a request refused before the application
    runs gets `render`'s page there, not the API's JSON (a payroll file over the limit)."""

    prefix: str
    render: Callable[[int, str, str], Response]  # status code, message, error code

    def refusal(self, error: ApiError) -> Response:
        """`error`'s page, with its headers (a 429's Retry-After)."""
        page = self.render(error.status_code, error.message, error.code)
        page.headers.update(error.headers or {})
        return page


class RequestContextMiddleware:
    """Echoes or assigns X-Request-ID, binds it to the request's log lines (as the correlation id
    too: the outbox messages of the request carry it on), and rejects bodies over the limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        larger_bodies: Mapping[str, int],
        probes: frozenset[str] = frozenset(),
        html_pages: HtmlPages | None = None,
    ) -> None:
        """`larger_bodies`: the limit of the paths that take more (a payroll batch). `probes`:
        /health and /ready, which no header touches: an X-Request-ID they cannot echo is
        replaced, not refused (a proxy's longer ids made a healthy API look down)."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.larger_bodies = larger_bodies
        self.probes = probes
        self.html_pages = html_pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        sent_id = headers.get(b"x-request-id")
        valid = sent_id is None or _CLIENT_REQUEST_ID.fullmatch(sent_id) is not None
        request_id = sent_id.decode() if sent_id and valid else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        api_answer = scope["path"].startswith(API_PATHS)

        async def send_stamped(message: Message) -> None:
            """Every answer names its request and forbids sniffing its type (a merchant's text
            in JSON, the dashboard's static files); the API's are not stored by any cache (a
            payout's account number and title, a new webhook secret: pii review)."""
            if message["type"] == "http.response.start":
                stamped = MutableHeaders(scope=message)
                stamped[REQUEST_ID_HEADER] = request_id
                stamped.update(NO_SNIFFING)
                if api_answer:
                    stamped.setdefault("cache-control", "no-store")
                if getattr(scope["app"].state, "draining", False):
                    # Stopping (api_service/server.py): a kept-alive client is told to connect
                    # anew, to another process. None was: at the drain's end uvicorn closed their
                    # connections under requests already sent (lifecycle review).
                    stamped["connection"] = "close"
            await send(message)

        with bind_log_context(request_id=request_id, correlation_id=request_id):
            if not valid and scope["path"] not in self.probes:
                refusal = ValidationFailed.on("X-Request-ID", _REQUEST_ID_RULE)
                await self._refuse(scope, receive, send_stamped, request_id, refusal)
                return
            await self._limited(
                scope, receive, send_stamped, request_id, headers.get(b"content-length")
            )

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, declared: bytes | None
    ) -> None:
        """The downstream call, with the body size checked."""
        # With a trailing slash too: the router sends /payouts/batch/ on to /payouts/batch.
        limit = self.larger_bodies.get(scope["path"].rstrip("/"), self.max_body_bytes)
        declared_bytes = None if declared is None else count_or_more(declared)
        if declared_bytes is not None and declared_bytes > limit:
            await self._refuse(scope, receive, send, request_id, PayloadTooLarge(_too_large(limit)))
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_limited, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, error: ApiError
    ) -> None:
        """A refusal before any route ran: a page of its own on the dashboard's paths (a
        refused X-Request-ID answered the dashboard raw JSON, without its security headers:
        dashboard review), the API's envelope elsewhere."""
        if self.html_pages and scope["path"].startswith(self.html_pages.prefix):
            await self.html_pages.refusal(error)(scope, receive, send)
        else:
            await reject(send, request_id, error)


class BodyTooLarge(HTTPException):
    """Raised while streaming a chunked body; FastAPI re-raises HTTPExceptions as they are."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_too_large(limit))


def _too_large(limit: int) -> str:
    return f"Request body exceeds {limit // 1024} KiB"


async def reject(send: Send, request_id: str, error: ApiError) -> None:
    """Answer before the application runs (the body was never read)."""
    body = error_body(error.code, error.message, request_id, error.details)
    extra_headers = [
        (name.lower().encode(), value.encode()) for name, value in (error.headers or {}).items()
    ]
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
