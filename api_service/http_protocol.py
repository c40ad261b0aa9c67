"""uvicorn's httptools protocol with a deadline for each request's head (its request line and
headers), as nginx's `client_header_timeout`.

uvicorn waits for a head for ever: its keep-alive timeout runs only between requests, and the
first byte of the next one stops it. A client that opened connections and sent nothing, or a
few bytes of a request line, held each one for good; a few thousand such used up the process's
file descriptors, and then nobody could connect. Now a head not complete within
`api_header_timeout_seconds` of its connection (or of its first byte, on a kept-alive one) is
answered 408 and its connection closed."""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from contracts.settings import get_settings

TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 38\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"The request's headers came too slowly."
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = get_settings().api_header_timeout_seconds
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_the_clock()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_the_clock()

    def on_headers_complete(self) -> None:
        self._stop_the_clock()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_the_clock()
        super().connection_lost(exc)

    def _start_the_clock(self) -> None:
        if self.head_deadline is None:
            self.head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_the_clock(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_too_slow(self) -> None:
        self.head_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            # Still answering the request before it (pipelined): its answer first.
            self._start_the_clock()
            return
        self.transport.write(TIMED_OUT)
        self.transport.close()
