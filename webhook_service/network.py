"""Outgoing connections for webhooks: every TCP connection goes to an address checked the moment
it is opened, so neither a changed URL nor DNS rebinding between the check and the connect can
point the webhook service at our own network.

The check sits in httpcore's network backend, below the connection pool: the pool stays keyed by
the endpoint's host name, so TLS keeps its SNI and certificate check against that name.
"""

from collections.abc import Iterable

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
                return await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
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
