"""Outgoing HTTP/1.1 for webhooks: kept-alive connections by origin, h11 for the protocol,
asyncio's streams for the bytes.

Every TCP connection goes to an address checked the moment it is opened, so neither a changed URL
nor DNS rebinding between the check and the connect can point the webhook service at our own
network. Connections are kept by origin (scheme, host name, port), so TLS keeps its SNI and
certificate check against that name.

Why not httpcore's pool: it scans every connection of a pool each time it places a request, under
AnyIO locks and cancellation shields, and sends a request's head and body in two writes; at the
bench's peak that was a quarter of the webhook service's CPU. Here a request takes the last idle
connection of its origin (or opens one), sends the whole request in one write, and reads the
answer; nothing else looks at the other connections but a sweep of the expired ones every few
seconds while any is idle.
"""

import asyncio
import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import h11

from contracts.host_lookup import HostResolver
from contracts.webhooks import UnsafeDestination, public_addresses

# An idle connection is closed after this long (as httpx had it): before the endpoint's own idle
# timeout can close it under a request, and DNS changes are picked up.
KEEPALIVE_SECONDS = 5.0
# Idle connections kept per origin; one closed after a burst is one connected (and its address
# checked) again at the next.
IDLE_PER_ORIGIN = 100
# Idle connections kept in all, whatever the origins: each is an open file, and a container's
# soft limit is often 1,024. With one kept per merchant host reached in the last keep-alive
# (merchants' own tunnels give each its host), 1,200 merchants' webhooks failed at the limit,
# "Too many open files", connections to the database and the broker too (scale review). Past it,
# a connection is closed after its answer, as one past IDLE_PER_ORIGIN is.
IDLE_IN_ALL = 256
READ_BYTES = 64 * 1024
# A kept connection closed without a byte of answer this soon after the request went out (or
# within the time the connection took to open, if longer: a round trip or two) was closed by the
# endpoint as the request went out, not after it read it: the request is sent again.
CLOSED_AT_ONCE_SECONDS = 0.05
# Once the status is in, the body (read only for its excerpt) gets at most this long: an answer
# with neither a length nor chunks ends only when its connection closes, and an endpoint that
# kept it open held the attempt, and the worker, for the whole webhook timeout.
BODY_SECONDS = 1.0
# Informational heads (100 Continue, 102 Processing, 103 Early Hints) skipped before an answer.
# HTTP/1.1 sets no limit, but an endpoint streaming them never let the attempt's timeout fire: a
# read of buffered bytes does not yield to the event loop, which stalled for seconds, holding
# every other merchant's webhooks of the worker and overrunning the attempt's lease (receivers
# review).
INFORMATIONAL_HEADS = 32


class NoAnswer(Exception):
    """The attempt got no (complete) answer. The subclasses' names are what an attempt records."""


class ConnectError(NoAnswer):
    """No connection: refused, unreachable, an unsafe destination, a failed TLS handshake."""


class WriteError(NoAnswer):
    pass


class ReadError(NoAnswer):
    pass


class RemoteProtocolError(NoAnswer):
    """The endpoint broke HTTP/1.1, or closed the connection before its answer ended."""


class UnsupportedProtocol(NoAnswer):
    pass


@contextlib.contextmanager
def raising_as(error: type[NoAnswer]) -> Iterator[None]:
    """An OSError (ssl.SSLError included) as `error`; h11's complaints about the endpoint as
    RemoteProtocolError. TimeoutError passes through: the sender bounds the whole attempt."""
    try:
        yield
    except TimeoutError:
        raise
    except OSError as exc:
        raise error(str(exc) or type(exc).__name__) from exc
    except h11.RemoteProtocolError as exc:
        raise RemoteProtocolError(str(exc)) from exc


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http" or "https"
    host: str  # a name or an IP address, without brackets
    port: int


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Sequence[tuple[bytes, bytes]]  # names lowercased
    excerpt: bytes  # the start of the body, at most `excerpt_bytes` of it


def is_readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once: data, or the b"" of a connection the peer closed (a
    socket that is gone counts as readable)."""
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class Connection:
    """One connection and its HTTP/1.1 state; one request at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect_seconds: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.connect_seconds = connect_seconds
        # Typed as a WriteTransport; a connection's transport reads too.
        self.transport = cast(asyncio.Transport, writer.transport)
        self.protocol = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = time.monotonic()  # meaningful while idle
        self.answer_bytes = 0  # of the request under way
        self.sent_at: float | None = None  # when it went out (monotonic), once it did

    def expired(self, now: float) -> bool:
        return now - self.idle_since >= KEEPALIVE_SECONDS

    def idle(self) -> None:
        """Between requests the transport does not read: whatever the endpoint sends meanwhile
        (its close, or bytes no request asked for) stays in the socket, for `usable` to see."""
        self.idle_since = time.monotonic()
        self.transport.pause_reading()

    def usable(self, now: float) -> bool:
        """Not expired, and nothing to read while idle: an idle connection has nothing to read
        unless its endpoint closed it or sent what no request asked for. Reading resumes."""
        socket_ = self.writer.get_extra_info("socket")
        if self.expired(now) or self.transport.is_closing() or is_readable(socket_):
            return False
        self.transport.resume_reading()
        return True

    def closed_as_sent(self) -> bool:
        """The request under way got no byte of answer, and its connection failed before it was
        written or at once after: the endpoint did not take it."""
        if self.answer_bytes:
            return False
        if self.sent_at is None:
            return True
        window = max(CLOSED_AT_ONCE_SECONDS, self.connect_seconds)
        return time.monotonic() - self.sent_at <= window

    def close(self) -> None:
        # At once, without TLS's close_notify exchange: a graceful close would keep the socket
        # until a peer that never answers times out.
        self.transport.abort()

    async def exchange(
        self, head: h11.Request, body: bytes, excerpt_bytes: int, deadline: float
    ) -> tuple[Answer, bool]:
        """Send the request in one write and read the answer by `deadline` (the event loop's
        time; TimeoutError), up to `excerpt_bytes` of its body. Also whether the connection can
        take another request (the whole answer was read and neither side asked to close).

        The status is the answer: once it is in, a body that ends early, or not by the
        deadline or within BODY_SECONDS, is cut where it stopped (as a large body is never read
        past its excerpt); a 2xx whose body was cut short counted as no answer, and the delivery
        was retried and parked although the endpoint had taken it every time."""
        self.answer_bytes, self.sent_at = 0, None
        request = b"".join(
            self.protocol.send(event) or b""
            for event in (head, h11.Data(data=body), h11.EndOfMessage())
        )
        async with asyncio.timeout_at(deadline):
            with raising_as(WriteError):
                self.writer.write(request)
                if self.transport.get_write_buffer_size():
                    await self.writer.drain()
            self.sent_at = time.monotonic()
            response = await self._next_event()
        if isinstance(response, h11.ConnectionClosed):
            raise RemoteProtocolError("the endpoint closed the connection without an answer")
        if not isinstance(response, h11.Response):
            raise RemoteProtocolError(f"unexpected in an answer: {response!r}")
        excerpt = bytearray()
        body_deadline = min(deadline, asyncio.get_running_loop().time() + BODY_SECONDS)
        with contextlib.suppress(TimeoutError, NoAnswer):
            async with asyncio.timeout_at(body_deadline):
                await self._read_body(excerpt, excerpt_bytes)
        answer = Answer(response.status_code, list(response.headers), bytes(excerpt))
        # Reused only after a whole answer with nothing after it: bytes beyond the answer would
        # be read as the next request's answer.
        reusable = (self.protocol.our_state, self.protocol.their_state) == (h11.DONE, h11.DONE)
        reusable = reusable and self.protocol.trailing_data == (b"", False)
        if reusable:
            self.protocol.start_next_cycle()
        return answer, reusable

    async def _read_body(self, excerpt: bytearray, excerpt_bytes: int) -> None:
        """The answer's body into `excerpt`, until its end or `excerpt_bytes` of it (a large body
        is not downloaded); RemoteProtocolError when it does not end as announced."""
        while len(excerpt) < excerpt_bytes:
            event = await self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return
            if not isinstance(event, h11.Data):
                raise RemoteProtocolError(f"the answer's body ended with {event!r}")
            excerpt += event.data

    async def _next_event(self) -> object:
        """The next event of the answer, informational (1xx) heads skipped: at most
        INFORMATIONAL_HEADS of them, then RemoteProtocolError."""
        informational = 0
        while True:
            with raising_as(ReadError):
                event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                with raising_as(ReadError):
                    data = await self.reader.read(READ_BYTES)
                    self.answer_bytes += len(data)
                    self.protocol.receive_data(data)
            elif not isinstance(event, h11.InformationalResponse):
                return event
            else:
                informational += 1
                if informational > INFORMATIONAL_HEADS:
                    raise RemoteProtocolError(
                        f"more than {INFORMATIONAL_HEADS} informational (1xx) heads, no answer"
                    )


class ConnectionPool:
    """Idle connections by origin, the most recently used first."""

    def __init__(self, *, allow_private: bool, ssl_context: ssl.SSLContext) -> None:
        self.allow_private = allow_private
        self.ssl_context = ssl_context
        self.resolve = HostResolver()
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0  # of every origin
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self, origin: Origin, head: h11.Request, body: bytes, *, excerpt_bytes: int, deadline: float
    ) -> Answer:
        """The answer by `deadline` (the event loop's time), else TimeoutError."""
        kept = self._idle_connection(origin)
        if kept is not None:
            try:
                return await self._exchange(origin, kept, head, body, excerpt_bytes, deadline)
            except NoAnswer:
                if not kept.closed_as_sent():
                    raise
                # The endpoint closed the kept connection as the request went out (its own
                # keep-alive ran out then: Node's and uvicorn's is 5 s, as ours is), and had not
                # taken it. Sent again on a new connection, as a browser does; it was a failed
                # attempt and a retry minutes later. One it read and worked on, then dropped,
                # is a failed attempt still: sent again here, it reached the endpoint twice.
        async with asyncio.timeout_at(deadline):
            connection = await self._connect(origin)
        return await self._exchange(origin, connection, head, body, excerpt_bytes, deadline)

    async def _exchange(
        self,
        origin: Origin,
        connection: Connection,
        head: h11.Request,
        body: bytes,
        excerpt_bytes: int,
        deadline: float,
    ) -> Answer:
        try:
            answer, reusable = await connection.exchange(head, body, excerpt_bytes, deadline)
        except BaseException:
            connection.close()
            raise
        # An origin's list is made only for a connection kept: the sweep that forgets empty
        # lists runs only while some connection is idle.
        if reusable and self._keeps_one_more(origin):
            connection.idle()
            self._idle.setdefault(origin, []).append(connection)
            self._idle_count += 1
            self._sweep_later()
        else:
            connection.close()
        return answer

    def _keeps_one_more(self, origin: Origin) -> bool:
        return (
            not self._closed
            and self._idle_count < IDLE_IN_ALL
            and len(self._idle.get(origin, ())) < IDLE_PER_ORIGIN
        )

    def close_all(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        self._closed = True
        self.resolve.close()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    def _idle_connection(self, origin: Origin) -> Connection | None:
        now = time.monotonic()
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _sweep_later(self) -> None:
        if self._sweep_timer is None:
            loop = asyncio.get_running_loop()
            self._sweep_timer = loop.call_later(KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close every connection idle longer than the keep-alive, of any origin; again a
        keep-alive later while any connection is idle."""
        self._sweep_timer, now = None, time.monotonic()
        for origin, connections in list(self._idle.items()):
            for connection in connections:
                if connection.expired(now):
                    connection.close()
            kept = [connection for connection in connections if not connection.expired(now)]
            self._idle_count -= len(connections) - len(kept)
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._sweep_later()

    async def _connect(self, origin: Origin) -> Connection:
        """A connection to the first address of the origin's host that takes it, every address
        checked first; TLS against the host's name."""
        try:
            addresses = await public_addresses(
                origin.host, origin.port, allow_private=self.allow_private, resolve=self.resolve
            )
        except UnsafeDestination as exc:
            raise ConnectError(str(exc)) from exc
        tls = origin.scheme == "https"
        failure: ConnectError | None = None
        for address in addresses:
            try:
                started = time.monotonic()
                with raising_as(ConnectError):
                    reader, writer = await asyncio.open_connection(
                        str(address),
                        origin.port,
                        ssl=self.ssl_context if tls else None,
                        server_hostname=origin.host if tls else None,
                    )  # TCP_NODELAY set by asyncio
                return Connection(reader, writer, time.monotonic() - started)
            except ConnectError as exc:
                failure = exc
        assert failure is not None  # public_addresses never returns an empty list
        raise failure
