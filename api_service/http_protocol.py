"""uvicorn's httptools protocol with the limits nginx puts in front of a server: a deadline for
each request's head (its request line and headers, as `client_header_timeout`) and for its
body (`client_body_timeout`), a size for its head (`large_client_header_buffers`), and one Host
header on HTTP/1.1 (RFC 9112 §3.2). What it refuses is answered in the API's error envelope,
with an X-Request-ID, and its connection closed.

uvicorn waits for a head for ever: its keep-alive timeout runs only between requests, and the
first byte of the next one stops it. A client that opened connections and sent nothing, or a
few bytes of a request line, held each one for good; a few thousand such used up the process's
file descriptors, and then nobody could connect. A body that stopped coming did the same, and
anyone may start one (POST /ipn/psp reads its body before it judges the signature). A head had
no size: a header line of a mebibyte, or twenty thousand lines, was read and served. And what
uvicorn's parser refused (a space in a path, an unknown method) was plain text with no id.

A body's clock runs from its last bytes, and only while the server reads (not while the
application answers a request before it, or has not asked for more of the body); a refusal of
a pipelined request waits for the answers before it; a kept-alive connection whose client sent
a blank line, or the rest of a body answered already, is closed as uvicorn's keep-alive closes
an idle one (each of these went wrong in this module's first version: diff review)."""

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from api_service.envelope import error_body
from api_service.metrics import ANSWERED_BY_THE_SERVER, count_refused_before_routing
from contracts.settings import get_settings

MAX_HEAD_BYTES = 32 * 1024  # nginx's default: four buffers of 8 KiB
MAX_HEADER_LINES = 100  # as Apache's LimitRequestFields


class _Refused(Exception):
    """Raised inside a parser callback once the request is answered: the parser stops there."""


def refusal(status: int, code: str, message: str) -> bytes:
    """A whole HTTP answer in the error envelope, which closes its connection."""
    request_id = f"req_{uuid.uuid4().hex}"
    body = error_body(code, message, request_id)
    head = (
        f"content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "x-content-type-options: nosniff\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head.encode() + body


class _WatchedFlow(FlowControl):
    """uvicorn's flow control, which tells its protocol when it stops and starts reading: while
    it does not read (the application has not asked for more of the body, or is answering a
    request before this one), a client cannot be slow."""

    def __init__(self, transport: asyncio.Transport, on_change: Callable[[], None]) -> None:
        super().__init__(transport)
        self._on_change = on_change

    def pause_reading(self) -> None:
        super().pause_reading()
        self._on_change()

    def resume_reading(self) -> None:
        super().resume_reading()
        self._on_change()


class HeadDeadlineProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.head_timeout = settings.api_header_timeout_seconds
        self.body_timeout = settings.api_body_timeout_seconds
        self.deadline: asyncio.TimerHandle | None = None
        self.head_bytes = 0  # of the head being read, as far as counted (data_received)
        self.head_complete = False
        self.head_begun = False  # a request's first bytes came, and not yet all of its head
        self.reading_body = False  # a body the parser has not seen the end of
        self.messages_begun = 0
        self.answered = False  # refused here: nothing more is read
        self.refusal_waiting: bytes | None = None  # until the answers before it are out
        self.cycle_before: RequestResponseCycle | None = None  # the request's before this one

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _WatchedFlow(transport, self._body_clock)
        self._start_the_clock(self.head_timeout, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        begun = self.messages_begun
        super().data_received(data)  # uvicorn's own keep-alive timer stops here, at any byte
        if self.answered:
            return
        if self.deadline is None and (self.cycle is None or self.cycle.response_complete):
            # Between requests, bytes that begin none (a blank line), or the rest of a body
            # answered already: the connection waits for a head again, on the head's clock.
            self._start_the_clock(self.head_timeout, self._head_too_slow)
        if self.head_complete or self.messages_begun != begun:
            return
        # All of this chunk is the head being read: a line too long to be parsed into headers
        # (httptools holds it whole until it ends) is refused as it comes, not once it ends.
        self.head_bytes += len(data)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, "HEADERS_TOO_LARGE", self._too_large)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.messages_begun += 1
        self.head_bytes, self.head_complete, self.head_begun = 0, False, True
        self._stop_the_clock()
        self._start_the_clock(self.head_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._stop_the_clock()
        self.head_complete, self.head_begun = True, False
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > MAX_HEAD_BYTES or len(self.headers) > MAX_HEADER_LINES:
            self._refuse(431, "HEADERS_TOO_LARGE", self._too_large)
            raise _Refused
        hosts = sum(name == b"host" for name, _ in self.headers)
        if self.parser.get_http_version() == "1.1" and hosts != 1:
            self._refuse(400, "BAD_REQUEST", "an HTTP/1.1 request carries one Host header")
            raise _Refused
        self.cycle_before = self.cycle
        super().on_headers_complete()
        self.reading_body = True  # until on_message_complete, which may come at once
        self._body_clock()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._stop_the_clock()  # a body's clock runs from its last bytes (client_body_timeout)
        self._body_clock()

    def on_message_complete(self) -> None:
        self.reading_body = False
        self._stop_the_clock()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        waiting, cycle = self.refusal_waiting, self.cycle
        if waiting is not None and cycle is not None and cycle.response_complete:
            self._write_and_close(waiting)  # every answer before it is out

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_the_clock()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """What the parser refused (or a callback that answered already, _Refused)."""
        if not self.answered:
            self._refuse(400, "BAD_REQUEST", "the request is not HTTP this server can read")

    @property
    def _too_large(self) -> str:
        return (
            f"the request line and headers exceed {MAX_HEAD_BYTES // 1024} KiB "
            f"or {MAX_HEADER_LINES} header lines"
        )

    def _start_the_clock(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        if self.deadline is None:
            self.deadline = self.loop.call_later(seconds, on_expiry)

    def _stop_the_clock(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _body_clock(self) -> None:
        """Runs while a body is being read: stopped while the server reads nothing."""
        if not self.reading_body or self.answered:
            return
        if self.flow.read_paused:
            self._stop_the_clock()
        else:
            self._start_the_clock(self.body_timeout, self._body_too_slow)

    def _head_too_slow(self) -> None:
        self.deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            # Still answering the request before it (pipelined): its answer first.
            self._start_the_clock(self.head_timeout, self._head_too_slow)
            return
        if self.cycle is not None and not self.head_begun:
            # Kept alive after its requests, and no other begun: closed, as uvicorn's own
            # keep-alive timeout closes it (a blank line, or the rest of a body answered early,
            # stopped that timer, and then nothing did: held for ever, the diff review found).
            self.answered = True
            self.transport.close()
            return
        self._refuse(408, "REQUEST_TIMEOUT", "the request's headers came too slowly")

    def _body_too_slow(self) -> None:
        """The application waits for the rest of the body: it is told the client is gone (as
        the connection closes), and answers nobody. Answered already (before its body), the
        connection is closed once that answer is out."""
        self.deadline = None
        if self.cycle is None or not self.cycle.response_started:
            # Its own answer (the earlier ones are out: this body is read only then).
            self.answered, self.reading_body = True, False
            self._answer_for_the_app(
                408, refusal(408, "REQUEST_TIMEOUT", "the request's body came too slowly")
            )
        elif self.cycle.response_complete:
            self.answered = True
            self.transport.close()
        else:  # its answer is being written
            self._start_the_clock(self.body_timeout, self._body_too_slow)

    def _queued_behind_another(self) -> bool:
        """Whether the request being read waits, pipelined, for the answer of one before it."""
        return any(queued is self.cycle for queued, _ in self.pipeline)

    def _answer_for_the_app(self, status: int, answer: bytes) -> None:
        """The answer to the request whose body the app reads: the app, told its client is
        gone as the connection closes, answers nobody, and its metrics count `status` (not a
        client gone first)."""
        if self.cycle is not None:
            scope: dict[str, Any] = cast(dict[str, Any], self.cycle.scope)
            scope[ANSWERED_BY_THE_SERVER] = status
        self._write_and_close(answer)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answered after the answers of the requests before it (pipelined), then closed. A body
        the parser refuses while the app reads it (a chunk size that is not hex) is answered at
        once: parked behind the app's answer, it waited for ever with the app, which waited for
        the rest of the body (diff review)."""
        its_body = self.reading_body
        self.answered = True
        self.reading_body = False
        self._stop_the_clock()
        answer = refusal(status, code, message)
        if its_body and self._queued_behind_another():
            # Pipelined: its app never starts, and its answer waits for the one before it (it
            # was written at once, and the answer of the request before it never went out).
            self.pipeline = deque(queued for queued in self.pipeline if queued[0] is not self.cycle)
            assert self.cycle_before is not None, "queued behind the request before it"
            self.cycle, its_body = self.cycle_before, False
        if its_body and self.cycle is not None and not self.cycle.response_started:
            self._answer_for_the_app(status, answer)
            return
        if not its_body:  # a request no app saw (the app counts its own)
            count_refused_before_routing(status)
        if self.cycle is not None and not self.cycle.response_complete:
            self.refusal_waiting = answer
            return
        self._write_and_close(answer)

    def _write_and_close(self, answer: bytes) -> None:
        self.refusal_waiting = None
        self.transport.write(answer)
        self.transport.close()
