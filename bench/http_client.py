"""A minimal HTTP/1.1 keep-alive client for the load generator.

httpx spends about a millisecond of CPU per request in Python; on a 2-core machine that the load
generator shares with the system, that would be a large part of what we measure. This client
writes one request and reads one `Content-Length` (or chunked) response per round trip on a
persistent connection, which is all the load generator needs.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field


class HttpProtocolError(Exception):
    """The server answered something this client does not understand, or closed early."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes


Header = tuple[str, str]


class Connection:
    """One keep-alive connection; not safe for concurrent requests (one caller at a time)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        """Open, and not closed by the server while idle (its keep-alive timeout): a request
        sent on such a connection would get no answer at all."""
        if self._reader is None or self._writer is None:
            return False
        return not self._writer.is_closing() and not self._reader.at_eof()

    async def request(
        self, method: str, path: str, headers: Sequence[Header] = (), body: bytes = b""
    ) -> HttpResponse:
        if not self.is_open:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None and self._writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        try:
            return await self._read_response(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError, HttpProtocolError):
            self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader) -> HttpResponse:
        status_line = await reader.readline()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep_alive = True
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                keep_alive = b"close" not in value.lower()
        if chunked:
            body = await self._read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()  # no length: the body ends with the connection
            keep_alive = False
        if not keep_alive:
            self.close()
        return HttpResponse(status, body)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()  # the empty trailer
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class ConnectionPool:
    """Idle keep-alive connections to one server, opened on demand (for open-loop load)."""

    host: str
    port: int
    idle: list[Connection] = field(default_factory=list)

    def acquire(self) -> Connection:
        return self.idle.pop() if self.idle else Connection(self.host, self.port)

    def release(self, connection: Connection) -> None:
        if connection.is_open:
            self.idle.append(connection)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
