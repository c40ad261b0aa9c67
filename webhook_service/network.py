"""Outgoing connections for webhooks: every TCP connection goes to an address checked the moment
it is opened, so neither a changed URL nor DNS rebinding between the check and the connect can
point the webhook service at our own network.

The check sits in httpcore's network backend, below the connection pool: the pool stays keyed by
the endpoint's host name, so TLS keeps its SNI and certificate check against that name.

The backend's streams are asyncio's own (StreamReader/StreamWriter), not httpcore's AnyIO
streams: those open a cancel scope around every read and write, most of the HTTP stack's CPU in
the webhook service's profile. They also answer the pool's "is this idle connection's socket
readable?" cheaply: the pool asks it of every idle connection each time it places a request.
"""

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpcore
import httpx

from contracts.webhooks import UnsafeDestination, public_addresses

KEEPALIVE_SECONDS = 5.0

# httpcore's exceptions for what asyncio raises; TimeoutError first, it is an OSError too.
ON_CONNECT: Mapping[type[Exception], type[Exception]] = {
    TimeoutError: httpcore.ConnectTimeout,
    OSError: httpcore.ConnectError,  # ssl.SSLError included
}
ON_READ: Mapping[type[Exception], type[Exception]] = {
    TimeoutError: httpcore.ReadTimeout,
    OSError: httpcore.ReadError,
}
ON_WRITE: Mapping[type[Exception], type[Exception]] = {
    TimeoutError: httpcore.WriteTimeout,
    OSError: httpcore.WriteError,
}


@contextlib.contextmanager
def raising_as(mapping: Mapping[type[Exception], type[Exception]]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for raised, replacement in mapping.items():
            if isinstance(exc, raised):
                raise replacement(str(exc) or type(exc).__name__) from exc
        raise


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await public_addresses(host, port, allow_private=self.allow_private)
        except UnsafeDestination as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                with raising_as(ON_CONNECT):
                    async with asyncio.timeout(timeout):
                        reader, writer = await asyncio.open_connection(
                            str(address),
                            port,
                            local_addr=None if local_address is None else (local_address, 0),
                        )  # TCP_NODELAY set by asyncio
                for option in socket_options or ():
                    writer.get_extra_info("socket").setsockopt(*option)
                return AsyncioStream(reader, writer)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # public_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never sent to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def is_readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once: data, or the b"" of a connection the peer closed (a
    socket that is gone counts as readable, as in httpcore)."""
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection, over asyncio's streams. A timeout of None means none (the whole attempt
    is bounded by the sender anyway); a write waits only when the socket's buffer is full."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._socket: socket.socket | None = writer.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        with raising_as(ON_READ):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        with raising_as(ON_WRITE):
            if self._writer.transport.is_closing():  # asyncio would drop the bytes silently
                raise ConnectionResetError("the connection is closed")
            self._writer.write(buffer)
            if self._writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeout):
                    await self._writer.drain()

    async def aclose(self) -> None:
        # At once, without TLS's close_notify exchange (as httpcore's own streams do): a graceful
        # close would keep the socket until a peer that never answers times out (30 s).
        self._writer.transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        try:
            with raising_as(ON_CONNECT):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except Exception:
            await self.aclose()
            raise
        return self  # the writer now speaks TLS; the socket underneath is the same

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._socket
        if info == "is_readable":
            return is_readable(self._socket)
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        return None


def public_only_pool(
    *, allow_private: bool, connections: int, ssl_context: ssl.SSLContext | None
) -> httpcore.AsyncConnectionPool:
    """A pool that connects only through PublicOnlyBackend. No proxies and no environment: a
    proxy would connect on our behalf, unchecked. `ssl_context` None: the system's CAs."""
    return httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
        max_connections=connections,
        max_keepalive_connections=connections,
        # As httpx had it: an idle connection is closed after this long, before the endpoint's
        # own idle timeout can close it under a request, and DNS changes are picked up.
        keepalive_expiry=KEEPALIVE_SECONDS,
        network_backend=PublicOnlyBackend(allow_private=allow_private),
    )
