"""Recording each merchant API call for the request log: what was asked and answered, how long
it took, whether its idempotency key replayed an earlier answer, and what fault (if any) was
injected. A call is recorded once its merchant is known (set on the scope by the fault middleware
or the authentication dependency): calls with no valid key belong to no one and are not kept."""

import asyncio
import contextlib
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.idempotency import (
    FINGERPRINT_STATE,
    REPLAYED_HEADER,
    is_idempotency_key,
    request_fingerprint,
)
from api_service.middleware import BodyTooLarge
from api_service.request_log.masking import MAX_KEPT_CHARS, kept_body, kept_query
from api_service.request_log.writer import RequestLogWriter
from api_service.sandbox.faults import LOST_STATUS, FaultKind
from contracts.db.engine import utcnow
from contracts.logging import redact, redact_secrets
from contracts.wire import whole_number

METHOD_LENGTH = 10  # the width of api_requests.method
REQUEST_ID_LENGTH = 100  # of api_requests.request_id: a masked id is longer than the one sent
READ_THE_REST_SECONDS = 2.0


class RequestRecorderMiddleware:
    def __init__(self, app: ASGIApp, *, api_prefix: str, unrecorded: frozenset[str]) -> None:
        """`unrecorded`: paths never recorded (the request log's own, whose answers hold it)."""
        self.app = app
        self.api_prefix = api_prefix
        self.unrecorded = unrecorded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"  # a lifespan scope has no path
            or not scope["path"].startswith(self.api_prefix)
            or scope["path"] in self.unrecorded
        ):
            await self.app(scope, receive, send)
            return
        started_at, started = utcnow(), time.perf_counter()
        asked, answered = bytearray(), bytearray()  # the request's body: whole (within its limit)
        answer: dict[str, Any] = {}
        more_body = [True]

        async def receive_kept() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                asked.extend(message.get("body", b""))
                more_body[0] = message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                more_body[0] = False
            return message

        async def send_kept(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = Headers(raw=message.get("headers", []))
                if _refused_unread(scope):
                    # Refused before the body was read (a rate limit): its digest must be the
                    # whole body's, as its retry's is. Read before the answer goes: once it is
                    # complete, uvicorn's receive() says only that the client is gone.
                    await _read_the_rest(receive_kept, more_body)
            elif message["type"] == "http.response.body" and len(answered) <= MAX_KEPT_CHARS * 4:
                answered.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_kept, send_kept)
        finally:
            merchant_id = scope["state"].get("merchant_id")
            if merchant_id is not None:
                writer: RequestLogWriter = scope["app"].state.request_log
                writer.add(
                    _row(scope, merchant_id, started_at, started, bytes(asked), answer, answered)
                )


def _refused_unread(scope: Scope) -> bool:
    """A call of a known merchant answered before idempotency read (and fingerprinted) its body."""
    state = scope["state"]
    return state.get("merchant_id") is not None and FINGERPRINT_STATE not in state


async def _read_the_rest(receive: Receive, more_body: list[bool]) -> None:
    """The body the application left unread, within the body limit and a short wait."""
    with contextlib.suppress(BodyTooLarge, TimeoutError, OSError):
        async with asyncio.timeout(READ_THE_REST_SECONDS):
            while more_body[0]:
                await receive()


def _row(
    scope: Scope,
    merchant_id: str,
    started_at: Any,
    started: float,
    asked: bytes,
    answer: dict[str, Any],
    answered: bytearray,
) -> dict[str, Any]:
    request_headers = Headers(scope=scope)
    response_headers: Headers = answer.get("headers", Headers())
    fault: str | None = scope["state"].get("fault")
    dropped = fault == FaultKind.DROP_CONNECTION
    retry_after = response_headers.get("retry-after")
    # An api_key or an account number sent in the query was kept whole for the log's 7 days;
    # so was one in the path (`/payouts/mpk_test_...`), or sent as the idempotency key.
    query = kept_query(scope.get("query_string", b"").decode("latin-1"))
    # The key the API read: none when the header came twice (it refused the request for it).
    idempotency_keys = request_headers.getlist("x-idempotency-key")
    idempotency_key = idempotency_keys[0] if len(idempotency_keys) == 1 else None
    return {
        "merchant_id": merchant_id,
        # The client's X-Request-ID, secrets masked: an API key sent as one was kept whole for
        # the log's 7 days, and shown on the dashboard (reqlog review).
        "request_id": redact_secrets(scope["state"]["request_id"])[:REQUEST_ID_LENGTH],
        "method": scope["method"][:METHOD_LENGTH],  # the parser takes UNSUBSCRIBE (11)
        "path": (redact(scope["path"]) + (f"?{query}" if query else ""))[:500],
        "status": None if dropped else answer.get("status"),
        "latency_ms": round((time.perf_counter() - started) * 1000),
        "idempotency_key": _kept_key(idempotency_key) if idempotency_key else None,
        "replayed": response_headers.get(REPLAYED_HEADER) == "true",
        "fault": fault,
        "lost_status": scope["state"].get(LOST_STATUS),
        "retry_after_seconds": whole_number(retry_after, max_digits=9),
        "request_body": kept_body(asked),
        # Idempotency's fingerprint (key order and spacing aside), computed here for a request
        # refused before idempotency saw it: of an empty body too, as idempotency's is (a
        # reinitiation refused 429 was not "the same request" as its retry).
        "request_digest": scope["state"].get(FINGERPRINT_STATE) or request_fingerprint(asked),
        "response_body": None if dropped else kept_body(bytes(answered)),
        "started_at": started_at,
    }


def _kept_key(key: str) -> str:
    """A key as sent: the readiness report tells a retry by it, and a UUID written as 32 digits
    masked as an account number made two keys one. Anything else (refused), masked: a webhook
    secret pasted in the wrong header was kept whole."""
    return key[:100] if is_idempotency_key(key) else redact(key)[:100]
