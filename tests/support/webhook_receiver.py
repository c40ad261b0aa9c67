"""A real HTTP endpoint for webhook tests: a small asyncio server on 127.0.0.1 that records every
request and answers as scripted (a status, headers such as Retry-After or Location, a delay, only
once the test says so, or never), or, told to verify, refuses what a correct Standard Webhooks
receiver refuses. Waiting for requests is event-driven with a deadline, never a blind sleep."""

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WEBHOOK_PATH = "/hooks/mypay"
REFUSED = 400  # what a verifying receiver answers to a request that fails verification


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b'{"received": true}'
    delay_seconds: float = 0.0  # answer late (still within the client's timeout)
    hang: bool = False  # never answer: the client's timeout must fire
    # Answer once this is set: the test looks at the system while the request is in flight.
    held_until: asyncio.Event | None = None


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: float  # loop time

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.default = Reply()
        self.verifying_secret: str | None = None
        self._script: deque[Reply] = deque()
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def reply_with(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order; then with `default`."""
        self._script.extend(replies)

    def always(self, reply: Reply) -> None:
        self._script.clear()
        self.default = reply

    def verify_with(self, secret: str) -> None:
        """Answer 400 to requests whose signature or timestamp a Standard Webhooks receiver with
        this secret refuses (the script and the default answer the others)."""
        self.verifying_secret = secret

    async def wait_for_requests(self, count: int, within: float = 15.0) -> list[ReceivedRequest]:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def __aenter__(self) -> "WebhookReceiver":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()  # hanging replies end now (cancelling them would log noise)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._connections:
            _, stuck = await asyncio.wait(self._connections, timeout=5)
            for task in stuck:
                task.cancel()

    def _refusal(self, request: ReceivedRequest) -> Reply | None:
        if self.verifying_secret is None:
            return None
        try:
            Webhook(self.verifying_secret).verify(request.body, request.headers)
        except WebhookVerificationError:
            return Reply(REFUSED, body=b'{"error": "signature or timestamp refused"}')
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            request = await _read_request(reader)
            if request is None:
                return
            reply = self._refusal(request) or (
                self._script.popleft() if self._script else self.default
            )
            async with self._changed:
                self.requests.append(request)
                self._changed.notify_all()
            if reply.hang:
                await self._stopping.wait()
                return
            if reply.held_until is not None:
                await reply.held_until.wait()
            if reply.delay_seconds:
                await asyncio.sleep(reply.delay_seconds)
            writer.write(_response(reply))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (its timeout): nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    received_at = asyncio.get_running_loop().time()
    return ReceivedRequest(parts[0], parts[1], headers, body, received_at)


def _response(reply: Reply) -> bytes:
    reason = (
        HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
    )
    head = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {len(reply.body)}"]
    head += [f"{name}: {value}" for name, value in reply.headers.items()]
    head += ["Content-Type: application/json", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
