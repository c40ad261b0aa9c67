"""Raw HTTP/1.1 over a socket, for what httpx would not send (or would fix on the way), to an
API whose head and body deadlines (api_service/http_protocol.py) are short enough to wait out."""

import asyncio
import contextlib
from dataclasses import dataclass, field

from tests.support.api_helpers import new_key

HEADER_TIMEOUT_SECONDS = 1
BODY_TIMEOUT_SECONDS = 1
SHORT_DEADLINES = {
    "PAYOUTS_API_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
    "PAYOUTS_API_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
}


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytes = field(default=b"")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head: bool = False, within: float = 10) -> Answer:
        async with asyncio.timeout(within):
            raw_head = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw_head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = []
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers.append((k.strip(), v.strip()))
            answer = Answer(status, headers, b"", raw_head)
            if head or status in (204, 304):
                return answer
            length = answer.header("content-length")
            if length is not None:
                answer.body = await self.reader.readexactly(int(length))
            elif (answer.header("transfer-encoding") or "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                    if size == 0:
                        await self.reader.readuntil(b"\r\n")
                        break
                    body += await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
                answer.body = body
            else:
                answer.body = await self.reader.read()
            return answer

    async def closed(self, within: float = 5) -> bool:
        """Whether the server closed the connection (EOF) within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                return await self.reader.read(1) == b""
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def connect(port: int) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    return Connection(reader, writer)


async def exchange(port: int, request: bytes, *, head: bool = False) -> Answer:
    connection = await connect(port)
    try:
        await connection.send(request)
        return await connection.answer(head=head)
    finally:
        await connection.close()


def keyed(api_key: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    """A merchant's call's headers: its API key, a fresh idempotency key, then `extra`."""
    return [("X-API-KEY", api_key), ("X-IDEMPOTENCY-KEY", new_key()), *extra]


def request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    *,
    content_length: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: api"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body is not None and content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
