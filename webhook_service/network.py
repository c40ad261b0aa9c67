"""Outgoing connections for webhooks: every TCP connection goes to an address checked the moment
it is opened, so neither a changed URL nor DNS rebinding between the check and the connect can
point the webhook service at our own network.

The check sits in httpcore's network backend, below the connection pool: the pool stays keyed by
the endpoint's host name, so TLS keeps its SNI and certificate check against that name.

The backend's streams also answer the pool's "is this idle connection's socket readable?" cheaply
(SocketLookupOnce): the pool asks it of every idle connection each time it places a request.
"""

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from contracts.webhooks import UnsafeDestination, public_addresses


class RefusedDestination(httpcore.ConnectError):
    """Surfaces as httpx.ConnectError with this message."""


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

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
            raise RefusedDestination(str(exc)) from exc
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                stream = await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return SocketLookupOnce(stream)
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
        raise RefusedDestination("webhooks are never sent to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def is_readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once: data, or the b"" of a connection the peer closed (a
    socket that is gone counts as readable, as in httpcore)."""
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class SocketLookupOnce(httpcore.AsyncNetworkStream):
    """A stream that finds its socket once. httpcore's pool asks every idle connection whether
    its socket is readable each time it places a request, and anyio's stream answers by building
    the socket's whole attribute table (a getpeername system call included) every time: with a
    hundred requests in flight, that was 40 % of the webhook service's CPU."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        return SocketLookupOnce(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._socket
        if info == "is_readable":
            return is_readable(self._socket)
        return self._inner.get_extra_info(info)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (request mapping, error mapping) over a pool using PublicOnlyBackend.

    No proxies and no environment: a proxy would connect on our behalf, unchecked.
    """

    def __init__(self, *, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(allow_private=allow_private),
        )
