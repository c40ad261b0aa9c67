"""The webhook sender's connections: one its endpoint closed while idle is not used again (the
pool asks SocketLookupOnce whether the socket is readable)."""

import asyncio
from collections.abc import AsyncIterator

import pytest

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
