"""A TCP proxy in front of a real server, for a dependency that hangs rather than fails: once
`hang()` is called it forwards no byte either way and keeps every connection open, new ones
included (a network that drops packets, a server that stopped answering); `resume()` forwards
again, the held bytes first. `refuse()` closes each new connection at once instead (a server
still starting), until `resume()`; `sever()` closes the open ones. `lag(seconds)` forwards each
chunk that much later, each way (a slow but answering server), until `lag(0)`."""

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit


def at_local_port(url: str, port: int) -> str:
    """A service URL sent to 127.0.0.1:`port` instead, credentials, path and query kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{netloc}" if credentials else netloc))


class HangingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.port = 0
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._refusing = False
        self._lag_seconds = 0.0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @classmethod
    def in_front_of(cls, url: str) -> "HangingProxy":
        """A proxy of the server a service URL names."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        return cls(parts.hostname, parts.port)

    def url_through(self, url: str) -> str:
        """`url` sent through this proxy (started: its port is known)."""
        return at_local_port(url, self.port)

    def hang(self) -> None:
        self._forwarding.clear()

    def refuse(self) -> None:
        self._refusing = True

    def sever(self) -> None:
        """Close every open connection, both ends (a server that went away)."""
        for pump in self._pumps:
            pump.cancel()

    def lag(self, seconds: float) -> None:
        self._lag_seconds = seconds

    def resume(self) -> None:
        self._refusing = False
        self._forwarding.set()

    async def __aenter__(self) -> "HangingProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        if self._refusing:
            client_out.close()
            return
        server_in, server_out = await asyncio.open_connection(
            self.upstream_host, self.upstream_port
        )
        for source, sink in ((client_in, server_out), (server_in, client_out)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                while chunk := await source.read(65536):
                    if self._lag_seconds:
                        await asyncio.sleep(self._lag_seconds)
                    await self._forwarding.wait()
                    sink.write(chunk)
                    await sink.drain()
        finally:
            sink.close()
