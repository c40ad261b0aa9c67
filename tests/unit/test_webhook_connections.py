"""The webhook sender's connections (webhook_service.network): one its endpoint closed while idle
is not used again (its socket is readable), nor one idle longer than the keep-alive; TLS; the
answers HTTP/1.1 allows (chunked, `Connection: close`, 1xx, a body larger than the excerpt); one
write per request; the errors an attempt records when no answer comes."""

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator

import h11
import pytest
import trustme

import contracts.webhooks
from webhook_service import network
from webhook_service.sender import EXCERPT_BYTES, USER_AGENT, AttemptResult, WebhookSender

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OOPS = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"


class Endpoint:
    """Answers every request with `answer` on a kept connection (plain, or TLS when its server
    has a certificate); remembers each request's head and body, counts connections, and sets
    `closed` when one of them ends. Subclasses answer otherwise (`respond`)."""

    def __init__(self, answer: bytes = ANSWER) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                await self.respond(writer)
        self.closed.set()

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        writer.write(self.answer)
        await writer.drain()

    def header(self, request: int, name: bytes) -> bytes | None:
        found = re.search(rb"(?im)^" + name + rb": *([^\r]*)\r$", self.heads[request])
        return None if found is None else found.group(1)


@contextlib.asynccontextmanager
async def served(
    endpoint: Endpoint, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """The endpoint's URL, while a server on `host` serves it."""
    server = await asyncio.start_server(endpoint.serve, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    async with server:
        yield f"{'https' if tls else 'http'}://{url_host}:{port}/hook"


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    """A sender that trusts the system's CAs and may call 127.0.0.1."""
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True)
    yield sender
    await sender.aclose()


class ClosingEndpoint(Endpoint):
    """Answers each connection's first request, then closes it a moment later (no
    `Connection: close`: the client learns it only from the socket)."""

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        await super().respond(writer)
        writer.close()
        await writer.wait_closed()


async def test_a_connection_the_endpoint_closed_while_idle_is_not_reused(
    sender: WebhookSender,
) -> None:
    endpoint = ClosingEndpoint()
    async with served(endpoint) as url:
        first = await sender.post(url, b"{}", {})
        await asyncio.wait_for(endpoint.closed.wait(), timeout=5)
        second = await sender.post(url, b"{}", {})

    assert (first.status_code, second.status_code) == (200, 200), second.error
    assert endpoint.connections == 2


class KeepAliveRunsOutEndpoint(Endpoint):
    """Answers a connection's first request; closes it, unanswered, as the second one arrives:
    its own keep-alive ran out at that moment (Node's and uvicorn's is 5 s, as the sender's)."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # b"{}"
            await self.respond(writer)
            await reader.readuntil(b"\r\n\r\n")
        writer.close()


async def test_a_request_the_endpoint_closed_its_kept_connection_on_is_sent_on_a_new_one(
    sender: WebhookSender,
) -> None:
    """It was a failed attempt (RemoteProtocolError), retried minutes later, though the
    endpoint never saw it: now sent again at once on a new connection."""
    endpoint = KeepAliveRunsOutEndpoint()
    async with served(endpoint) as url:
        first = await sender.post(url, b"{}", {})
        second = await sender.post(url, b"{}", {})

    assert (first.status_code, second.status_code) == (200, 200), second.error
    assert endpoint.connections == 2


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_url(ca: trustme.CA) -> AsyncIterator[tuple[str, Endpoint]]:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    endpoint = Endpoint()
    async with served(endpoint, tls=tls) as url:
        yield url, endpoint


@pytest.mark.parametrize(
    ("host", "url_host"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")], ids=["IPv4", "IPv6"]
)
async def test_the_host_header_names_the_endpoint_as_its_url_does(
    sender: WebhookSender, host: str, url_host: str
) -> None:
    endpoint = Endpoint()
    async with served(endpoint, host) as url:
        result = await sender.post(url, b"{}", {})

    assert result.status_code == 200, result.error
    authority = url.split("/")[2]  # host and port, as the URL spells them
    assert authority.startswith(f"{url_host}:")
    assert endpoint.header(0, b"host") == authority.encode()
    assert endpoint.header(0, b"user-agent") == USER_AGENT.encode()
    assert endpoint.header(0, b"accept") == b"*/*"
    assert endpoint.header(0, b"content-type") == b"application/json"


async def test_a_connection_idle_longer_than_the_keepalive_is_not_used_again(
    monkeypatch: pytest.MonkeyPatch, sender: WebhookSender
) -> None:
    monkeypatch.setattr(network, "KEEPALIVE_SECONDS", 0.2)
    endpoint = Endpoint()
    async with served(endpoint) as url:
        await sender.post(url, b"{}", {})
        await sender.post(url, b"{}", {})  # at once: the same connection
        await asyncio.sleep(0.4)  # the idle time itself is what is tested
        await sender.post(url, b"{}", {})

    assert endpoint.connections == 2


async def test_a_tls_endpoint_gets_each_webhook_over_one_kept_connection(
    ca: trustme.CA, tls_url: tuple[str, Endpoint]
) -> None:
    url, endpoint = tls_url
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True, ssl_context=trusting)
    try:
        results = [await sender.post(url, b'{"n": %d}' % n, {}) for n in range(3)]
    finally:
        await sender.aclose()

    assert [(result.status_code, result.error) for result in results] == [(200, None)] * 3
    assert endpoint.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert endpoint.connections == 1


async def test_a_certificate_the_sender_does_not_trust_is_a_failed_attempt(
    sender: WebhookSender, tls_url: tuple[str, Endpoint]
) -> None:
    url, endpoint = tls_url
    result = await sender.post(url, b"{}", {})  # the sender trusts the system's CAs only

    assert result.status_code is None and result.error is not None
    assert result.error.startswith("ConnectError: ") and "CERTIFICATE_VERIFY_FAILED" in result.error
    assert endpoint.bodies == []


async def test_an_endpoint_that_refuses_the_connection_is_a_failed_attempt(
    sender: WebhookSender,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nobody listens on the port now
    result = await sender.post(f"http://127.0.0.1:{port}/hook", b"{}", {})

    assert result.status_code is None and result.error is not None
    assert result.error.startswith("ConnectError: ")


async def post_twice(sender: WebhookSender, endpoint: Endpoint) -> list[AttemptResult]:
    async with served(endpoint) as url:
        return [await sender.post(url, b"{}", {}) for _ in range(2)]


async def test_a_chunked_answer_is_read_whole_and_its_connection_kept(
    sender: WebhookSender,
) -> None:
    chunked = Endpoint(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n"
    )
    results = await post_twice(sender, chunked)

    assert [(r.status_code, r.response_excerpt) for r in results] == [(200, "ok!!!")] * 2
    assert chunked.connections == 1


async def test_an_answer_asking_to_close_gets_a_new_connection_next_time(
    sender: WebhookSender,
) -> None:
    closing = Endpoint(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    results = await post_twice(sender, closing)

    assert [r.status_code for r in results] == [200, 200]
    assert closing.connections == 2


async def test_the_pool_remembers_no_origin_it_keeps_no_connection_of(
    sender: WebhookSender,
) -> None:
    """Every origin ever sent to was remembered (an empty list) while no connection was idle
    anywhere, so no sweep ran to forget it: one per URL a merchant ever set."""
    closing = Endpoint(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    server = await asyncio.start_server(closing.serve, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for n in range(2, 12):  # every 127.0.0.n is this host: ten origins
            result = await sender.post(f"http://127.0.0.{n}:{port}/hook", b"{}", {})
            assert result.status_code == 200, result

    assert sender.pool._idle == {}


async def test_the_pool_keeps_at_most_its_idle_connections_in_all_whatever_the_origins(
    sender: WebhookSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One kept per origin, without a cap in all: 1,200 merchants' hosts took every open file,
    and webhooks failed with "Too many open files" (scale review)."""
    monkeypatch.setattr(network, "IDLE_IN_ALL", 3)
    endpoint = Endpoint()
    server = await asyncio.start_server(endpoint.serve, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for n in [*range(2, 8), 2, 7]:  # every 127.0.0.n is this host: six origins
            result = await sender.post(f"http://127.0.0.{n}:{port}/hook", b"{}", {})
            assert result.status_code == 200, result

    idle = [connection for connections in sender.pool._idle.values() for connection in connections]
    assert len(idle) == 3, sender.pool._idle
    assert endpoint.connections == 7  # 127.0.0.2 reused the one kept; 127.0.0.7 had none kept


async def test_a_large_answer_is_cut_to_its_excerpt_and_its_connection_not_reused(
    sender: WebhookSender,
) -> None:
    body = b"x" * (EXCERPT_BYTES * 50)
    large = Endpoint(
        b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\nRetry-After: 7\r\n\r\n%s" % (len(body), body)
    )
    results = await post_twice(sender, large)

    assert [(r.status_code, r.error, r.retry_after) for r in results] == [
        (500, "HTTP 500", "7")
    ] * 2
    assert results[0].response_excerpt == "x" * EXCERPT_BYTES
    assert large.connections == 2  # the rest of the body was not read: the connection went


async def test_an_informational_head_before_the_answer_is_skipped(sender: WebhookSender) -> None:
    results = await post_twice(sender, Endpoint(b"HTTP/1.1 100 Continue\r\n\r\n" + ANSWER))

    assert [r.status_code for r in results] == [200, 200]


async def test_a_few_informational_heads_before_the_answer_are_skipped(
    sender: WebhookSender,
) -> None:
    processing = b"HTTP/1.1 102 Processing\r\n\r\n" * network.INFORMATIONAL_HEADS
    results = await post_twice(sender, Endpoint(processing + ANSWER))

    assert [r.status_code for r in results] == [200, 200]


class InformationalFlood(Endpoint):
    """Answers with `100 Continue` heads, and never a final answer, until the client goes."""

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)
            await writer.drain()


async def test_an_endpoint_streaming_informational_heads_is_a_failed_attempt_at_once() -> None:
    """HTTP/1.1 lets an endpoint send any number of them: skipping each of a stream without
    yielding, the sender never let the attempt's timeout fire, and the worker's event loop
    stalled for seconds, every other merchant's webhooks with it (receivers review)."""
    sender = WebhookSender(timeout_seconds=2, allow_private_urls=True)
    try:
        async with served(InformationalFlood()) as url:
            result = await sender.post(url, b"{}", {})
    finally:
        await sender.aclose()

    assert result.status_code is None
    assert result.error == (
        f"RemoteProtocolError: more than {network.INFORMATIONAL_HEADS} informational (1xx) "
        "heads, no answer"
    )
    assert result.latency_ms < 1000


class CutShortEndpoint(Endpoint):
    """Answers a status and the start of the body it announces, then closes the connection."""

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        await super().respond(writer)
        writer.close()


@pytest.mark.parametrize(("status", "error"), [(b"200 OK", None), (b"503 Busy", "HTTP 503")])
async def test_an_answer_whose_body_is_cut_short_counts_by_its_status(
    sender: WebhookSender, status: bytes, error: str | None
) -> None:
    """A 2xx is a delivery whatever becomes of its body: one cut short was no answer at all,
    and the endpoint got the webhook again on every tier until it was parked."""
    cut = CutShortEndpoint(b"HTTP/1.1 %s\r\nContent-Length: 100\r\n\r\nok" % status)
    results = await post_twice(sender, cut)

    assert [(r.status_code, r.error, r.response_excerpt) for r in results] == [
        (int(status[:3]), error, "ok")
    ] * 2
    assert cut.connections == 2


async def test_a_2xx_whose_body_does_not_end_by_the_timeout_is_a_delivery() -> None:
    trickle = Endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")  # 8 bytes short
    sender = WebhookSender(timeout_seconds=0.5, allow_private_urls=True)
    try:
        results = await post_twice(sender, trickle)
    finally:
        await sender.aclose()

    assert [(r.status_code, r.delivered) for r in results] == [(200, True)] * 2
    assert trickle.connections == 2  # an answer not read to its end leaves no connection to reuse


async def test_a_2xx_without_a_length_on_a_kept_connection_is_not_waited_on_to_the_timeout(
    sender: WebhookSender,
) -> None:
    """Its body ends only when the connection closes, which the endpoint never does: the attempt
    waited the whole timeout for the excerpt, and its latency said so."""
    unbounded = Endpoint(b"HTTP/1.1 200 OK\r\n\r\nok")

    results = await post_twice(sender, unbounded)

    assert [(r.status_code, r.response_excerpt) for r in results] == [(200, "ok")] * 2
    assert sender.timeout_seconds == 5
    assert max(r.latency_ms for r in results) < 2500
    assert unbounded.connections == 2


async def test_an_endpoint_that_does_not_answer_by_the_timeout_is_a_failed_attempt() -> None:
    silent = HeldEndpoint()
    sender = WebhookSender(timeout_seconds=0.5, allow_private_urls=True)
    try:
        async with served(silent) as url:
            result = await sender.post(url, b"{}", {})
    finally:
        await sender.aclose()
        silent.release.set()

    assert (result.status_code, result.error) == (None, "timed out after 0.5 s")


class MuteEndpoint(Endpoint):
    """Closes each connection without an answer."""

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        writer.close()


async def test_an_endpoint_that_closes_without_answering_is_a_failed_attempt(
    sender: WebhookSender,
) -> None:
    async with served(MuteEndpoint()) as url:
        result = await sender.post(url, b"{}", {})

    assert result.status_code is None and result.error is not None
    assert result.error.startswith(("RemoteProtocolError: ", "ReadError: ")), result.error


async def test_idle_connections_close_after_the_keepalive_without_another_request(
    monkeypatch: pytest.MonkeyPatch, sender: WebhookSender
) -> None:
    monkeypatch.setattr(network, "KEEPALIVE_SECONDS", 0.2)
    quiet = Endpoint()
    async with served(quiet) as url:
        await sender.post(url, b"{}", {})
        await asyncio.wait_for(quiet.closed.wait(), timeout=5)  # the sweep closed it


async def test_bytes_after_an_answer_are_never_taken_for_the_next_answer(
    sender: WebhookSender,
) -> None:
    """A 500 followed by a 200 nobody asked for: the next webhook gets its own answer."""
    endpoint = Endpoint(OOPS + ANSWER)
    results = await post_twice(sender, endpoint)

    assert [r.status_code for r in results] == [500, 500]
    assert endpoint.connections == 2


class LateExtraEndpoint(Endpoint):
    """Answers 500, then a moment later sends a 200 nobody asked for on the idle connection."""

    def __init__(self) -> None:
        super().__init__(OOPS)
        self.extra_sent = asyncio.Event()

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        await super().respond(writer)
        await asyncio.sleep(0.05)
        writer.write(ANSWER)
        await writer.drain()
        self.extra_sent.set()


async def test_bytes_sent_to_an_idle_connection_retire_it(sender: WebhookSender) -> None:
    endpoint = LateExtraEndpoint()
    async with served(endpoint) as url:
        first = await sender.post(url, b"{}", {})
        await asyncio.wait_for(endpoint.extra_sent.wait(), timeout=5)
        second = await sender.post(url, b"{}", {})

    assert [first.status_code, second.status_code] == [500, 500]
    assert endpoint.connections == 2


async def test_a_header_h11_refuses_to_send_is_a_failed_attempt(sender: WebhookSender) -> None:
    endpoint = Endpoint()
    async with served(endpoint) as url:
        result = await sender.post(url, b"{}", {"X-Broken": "a\r\nb"})

    assert result.status_code is None and result.error is not None
    assert result.error.startswith("LocalProtocolError: "), result.error
    assert endpoint.connections == 0


class HeldEndpoint(Endpoint):
    """Answers each request once `release` is set; `asked` is set when a request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def respond(self, writer: asyncio.StreamWriter) -> None:
        self.asked.set()
        await self.release.wait()
        await super().respond(writer)


async def test_a_connection_in_use_when_the_sender_closes_is_closed_after_its_answer(
    sender: WebhookSender,
) -> None:
    endpoint = HeldEndpoint()
    async with served(endpoint) as url:
        attempt = asyncio.create_task(sender.post(url, b"{}", {}))
        await asyncio.wait_for(endpoint.asked.wait(), timeout=5)
        await sender.aclose()
        endpoint.release.set()
        result = await attempt
        await asyncio.wait_for(endpoint.closed.wait(), timeout=5)

    assert result.status_code == 200


class RecordingWriter:
    """A StreamWriter's surface, writes kept."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.transport = self

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, _name: str) -> None:
        return None


async def test_a_request_goes_out_in_one_write() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(ANSWER)
    writer = RecordingWriter()
    connection = network.Connection(reader, writer, 0.0)  # type: ignore[arg-type]
    head = h11.Request(
        method=b"POST", target=b"/hook", headers=[(b"Host", b"x"), (b"Content-Length", b"7")]
    )

    deadline = asyncio.get_running_loop().time() + 5
    answer, reusable = await connection.exchange(head, b'{"a":1}', EXCERPT_BYTES, deadline)

    assert (answer.status, answer.excerpt, reusable) == (200, b"ok", True)
    assert len(writer.writes) == 1
    assert writer.writes[0].startswith(b"POST /hook HTTP/1.1\r\n")
    assert writer.writes[0].endswith(b'\r\n\r\n{"a":1}')


@pytest.mark.parametrize("fast_host", ["127.0.0.1", "localhost"])
async def test_a_merchants_slow_name_servers_do_not_delay_anothers_webhooks(
    monkeypatch: pytest.MonkeyPatch, sender: WebhookSender, fast_host: str
) -> None:
    """Lookups ran on asyncio's few default threads and kept one past their timeout: twenty
    attempts to a host whose name servers take 3 s filled them, and the next merchant's attempt
    (an IP literal or a name that answers at once) queued behind, failing as its own timeout."""
    looked_up = socket.getaddrinfo

    def name_servers(host: str, *args: object, **kwargs: object) -> object:
        if host == "slow.example":
            time.sleep(3)
            raise socket.gaierror("no answer in time")
        return looked_up(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", name_servers)
    monkeypatch.setattr(contracts.webhooks, "RESOLVE_TIMEOUT_SECONDS", 1.0)
    endpoint = Endpoint()
    async with served(endpoint) as url:
        slow = [
            asyncio.create_task(sender.post("http://slow.example/hook", b"{}", {}))
            for _ in range(20)
        ]
        await asyncio.sleep(0.1)  # their lookups are under way
        answered = await sender.post(url.replace("127.0.0.1", fast_host), b"{}", {})
        refused = await asyncio.gather(*slow)

    assert answered.status_code == 200, answered.error
    assert {result.status_code for result in refused} == {None}


class TakesThenDropsEndpoint(Endpoint):
    """Answers a connection's first request; reads the second, works on it for half a second (the
    webhook is processed), then drops the connection unanswered (a crash, a proxy's timeout)."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.bodies.append(await reader.readexactly(2))  # b"{}"
                if self.connections == 1 and len(self.bodies) == 2:
                    await asyncio.sleep(0.5)
                    break
                await self.respond(writer)
        writer.close()


async def test_a_request_the_endpoint_read_before_it_dropped_the_connection_is_not_sent_again(
    sender: WebhookSender,
) -> None:
    """The endpoint got it: sent again at once on a new connection, it got it twice in one
    attempt, and the attempt log showed one call (found by the review of the day's diff)."""
    endpoint = TakesThenDropsEndpoint()
    async with served(endpoint) as url:
        await sender.post(url, b"{}", {})
        dropped = await sender.post(url, b"{}", {})

    assert dropped.status_code is None and dropped.error is not None
    assert (len(endpoint.bodies), endpoint.connections) == (2, 1)
