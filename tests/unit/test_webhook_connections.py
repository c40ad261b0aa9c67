"""The webhook sender's connections (webhook_service.network): one its endpoint closed while idle
is not used again (the pool asks the stream whether its socket is readable); TLS; the errors an
attempt records when a connection cannot be made."""

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from webhook_service.sender import WebhookSender

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ClosingEndpoint:
    """Answers each connection's first request, then closes it a moment later (no
    `Connection: close`: the client learns it only from the socket)."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self.closed = asyncio.Event()  # a connection was closed (after its answer)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        self.closed.set()


@pytest.fixture
async def endpoint() -> AsyncIterator[ClosingEndpoint]:
    closing = ClosingEndpoint()
    server = await asyncio.start_server(closing.serve, "127.0.0.1", 0)
    closing.port = server.sockets[0].getsockname()[1]
    async with server:
        yield closing


async def test_a_connection_the_endpoint_closed_while_idle_is_not_reused(
    endpoint: ClosingEndpoint,
) -> None:
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True)
    url = f"http://127.0.0.1:{endpoint.port}/hook"
    try:
        first = await sender.post(url, b"{}", {}, pool_key="m1")
        await asyncio.wait_for(endpoint.closed.wait(), timeout=5)
        second = await sender.post(url, b"{}", {}, pool_key="m1")
    finally:
        await sender.aclose()

    assert (first.status_code, second.status_code) == (200, 200), second.error
    assert endpoint.connections == 2


class TlsEndpoint:
    """Answers every request on a TLS connection, with a certificate for 127.0.0.1 from a test
    CA, and remembers the request bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                self.bodies.append(await reader.readexactly(length))
                writer.write(ANSWER)
                await writer.drain()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_url(ca: trustme.CA) -> AsyncIterator[tuple[str, TlsEndpoint]]:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    endpoint = TlsEndpoint()
    server = await asyncio.start_server(endpoint.serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"https://127.0.0.1:{port}/hook", endpoint


async def test_a_tls_endpoint_gets_each_webhook_over_one_kept_connection(
    ca: trustme.CA, tls_url: tuple[str, TlsEndpoint]
) -> None:
    url, endpoint = tls_url
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True, ssl_context=trusting)
    try:
        results = [await sender.post(url, b'{"n": %d}' % n, {}, pool_key="m1") for n in range(3)]
    finally:
        await sender.aclose()

    assert [(result.status_code, result.error) for result in results] == [(200, None)] * 3
    assert endpoint.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


async def test_a_certificate_the_sender_does_not_trust_is_a_failed_attempt(
    tls_url: tuple[str, TlsEndpoint],
) -> None:
    url, endpoint = tls_url
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True)  # the system's CAs
    try:
        result = await sender.post(url, b"{}", {}, pool_key="m1")
    finally:
        await sender.aclose()

    assert result.status_code is None and result.error is not None
    assert result.error.startswith("ConnectError: ") and "CERTIFICATE_VERIFY_FAILED" in result.error
    assert endpoint.bodies == []


async def test_an_endpoint_that_refuses_the_connection_is_a_failed_attempt() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nobody listens on the port now
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True)
    try:
        result = await sender.post(f"http://127.0.0.1:{port}/hook", b"{}", {}, pool_key="m1")
    finally:
        await sender.aclose()

    assert result.status_code is None and result.error is not None
    assert result.error.startswith("ConnectError: ")
