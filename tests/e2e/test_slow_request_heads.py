"""A request's head that comes too slowly is answered 408 and its connection closed, by the API
as `payouts api` serves it. uvicorn alone waited for ever: a client that opened connections and
sent nothing, or part of a request line, held each one (file descriptors) for good."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.system import running_api

HEAD_TIMEOUT_SECONDS = 1.0
WITHIN_SECONDS = 8.0  # the deadline, and room for a busy machine


@pytest.fixture(scope="module")
def api_url(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**service_env, "PAYOUTS_API_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT_SECONDS)}
    with running_api(env, tmp_path_factory.mktemp("slow-heads")) as base_url:
        yield base_url


async def _answer_to(api_url: str, sent: bytes) -> tuple[bytes, float]:
    """What the API sends back until it closes the connection, and after how long."""
    host, port = api_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    try:
        writer.write(sent)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), WITHIN_SECONDS)  # until EOF
        return answer, time.monotonic() - started
    finally:
        writer.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /api/v1/health HTTP/1.1\r\n", b"GET /api/v1/health HTTP/1.1\r\nHost: a\r\nX-Slow"],
    ids=["nothing", "a request line", "part of the headers"],
)
async def test_a_head_not_complete_in_time_is_answered_408_and_closed(
    api_url: str, sent: bytes
) -> None:
    answer, after = await _answer_to(api_url, sent)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert after >= HEAD_TIMEOUT_SECONDS * 0.9, after


async def test_a_kept_alive_connection_gets_a_deadline_per_request_not_per_connection(
    api_url: str,
) -> None:
    """Requests on one connection over longer than the deadline are each answered: the clock
    runs from a head's first byte, and stops once the head is in."""
    async with httpx.AsyncClient(base_url=api_url, timeout=WITHIN_SECONDS) as client:
        deadline = time.monotonic() + HEAD_TIMEOUT_SECONDS * 2.5
        answered = 0
        while time.monotonic() < deadline:
            assert (await client.get("/api/v1/health")).status_code == 200
            answered += 1
            await asyncio.sleep(HEAD_TIMEOUT_SECONDS / 4)  # a client's pace, not a wait on us
    assert answered >= 5
