"""Each client's turns (api_service/client_turns.py) with a real uvicorn server: a client that
goes away while its request waits its turn. uvicorn does not cancel the application then; it
says so only through receive(), which a waiting request did not read: the request kept its
place, then ran in full for nobody."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
from prometheus_client import REGISTRY
from sqlalchemy import select

from contracts.db.engine import SessionFactory
from contracts.db.models import ApiRequestRecord
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, payout_body
from tests.support.api_server import serving_api
from tests.support.polling import eventually

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
WAITING = "payouts_api_requests_waiting_for_their_turn"


def _waiting() -> float:
    return REGISTRY.get_sample_value(WAITING) or 0.0


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: api", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def _connections(port: int) -> AsyncIterator[Callable[[bytes], Awaitable[Connection]]]:
    """Sends each request on a connection of its own; closed at the end (uvicorn, stopping,
    waits for the requests still open)."""
    opened: list[asyncio.StreamWriter] = []

    async def sent(request: bytes) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened.append(writer)
        writer.write(request)
        await writer.drain()
        return reader, writer

    try:
        yield sent
    finally:
        for writer in opened:
            writer.close()


async def test_a_request_whose_client_goes_away_while_waiting_leaves_its_line_and_never_runs(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    capped = settings.model_copy(
        update={"api_max_in_flight_per_key": 1, "api_database_timeout_seconds": 5}
    )
    waiting_before = _waiting()
    async with serving_api(capped) as port, _connections(port) as sent:
        # Known to the process first: its requests wait in the merchant's line.
        reader, writer = await sent(_request("GET", f"{API}/balance", auth(merchant, "")))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        # A create whose body is sent in part holds the merchant's one turn meanwhile.
        create = _request(
            "POST",
            f"{API}/payouts",
            {**auth(merchant), "Content-Type": "application/json"},
            orjson.dumps(payout_body()),
        )
        reader, writer = await sent(create[:-5])
        gone_id, after_id = f"gone-{uuid.uuid4().hex}", f"after-{uuid.uuid4().hex}"
        _, gone = await sent(
            _request("GET", f"{API}/balance", {**auth(merchant, ""), "X-Request-ID": gone_id}),
        )

        async def waits(count: float) -> bool:
            return _waiting() == waiting_before + count

        await eventually(lambda: waits(1), what="one request waiting its turn")
        gone.close()
        await eventually(lambda: waits(0), within=2, what="the gone request out of the line")

        writer.write(create[-5:])  # the create ends: the turn passes on
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 201")
        after_reader, _ = await sent(
            _request("GET", f"{API}/balance", {**auth(merchant, ""), "X-Request-ID": after_id}),
        )
        assert (await after_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")

        async def recorded(request_id: str) -> int | None:
            async with sessions() as session:
                return await session.scalar(
                    select(ApiRequestRecord.status).where(ApiRequestRecord.request_id == request_id)
                )

        # In line, the gone request would have run before the one after it.
        await eventually(lambda: recorded(after_id), what="the request after it recorded")
        assert await recorded(gone_id) is None
