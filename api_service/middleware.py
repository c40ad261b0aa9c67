"""Pure ASGI middleware: request ids on every response and every log line, and the request body
size limit."""

import uuid

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.envelope import error_body
from contracts.logging import bind_log_context

REQUEST_ID_HEADER = "x-request-id"


class RequestContextMiddleware:
    """Echoes or assigns X-Request-ID, binds it to the request's log lines (as the correlation id
    too: the outbox messages of the request carry it on), and rejects bodies over the limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        sent_id = headers.get(b"x-request-id", b"").decode("latin-1")[:100]
        request_id = sent_id or f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        with bind_log_context(request_id=request_id, correlation_id=request_id):
            await self._limited(scope, receive, send, request_id, headers.get(b"content-length"))

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, declared: bytes | None
    ) -> None:
        """The downstream call, with the request id on the response and the body size checked."""

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reject_too_large(send_with_request_id, request_id)
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        await self.app(scope, receive_limited, send_with_request_id)


class BodyTooLarge(HTTPException):
    """Raised while streaming a chunked body; FastAPI re-raises HTTPExceptions as they are."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="Request body exceeds 64 KiB")


async def _reject_too_large(send: Send, request_id: str) -> None:
    body = error_body("PAYLOAD_TOO_LARGE", "Request body exceeds 64 KiB", request_id)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
