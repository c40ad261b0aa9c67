"""An unexpected error in the API is "answered with a logged 500" (README): logged once, with the
request id, so that one incident is one log entry an operator can find by the request id. It
was logged twice: by our handler, then by uvicorn ("Exception in ASGI application", without
the request id), Starlette raising it again after answering. And the API's lines about a request
carry the ids docs/operations.md promises, as the client sent them (the logs review)."""

import asyncio
import io
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text

from api_service.app import create_app
from api_service.errors import DATABASE_BUSY
from contracts.db.engine import SessionFactory
from contracts.logging import ADOPTED_LOGGERS, configure_logging
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import assert_error, auth, database_refusals, payout_body
from tests.support.polling import eventually

API = "/api/v1"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    adopted = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
        for n in ADOPTED_LOGGERS
    }
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in adopted.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unexpected_error_is_logged_once_with_its_request_id(
    settings: Settings, json_log: io.StringIO
) -> None:
    app: FastAPI = create_app(settings)

    async def crash() -> None:
        raise RuntimeError("boom-observe")

    app.add_api_route(f"{API}/crash", crash)
    port = free_port()
    # As `payouts api` serves it (cli/main.py): uvicorn, our logging, no access log.
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            response = await client.get(f"{API}/crash", headers={"X-Request-ID": "crash-observe-1"})
        assert response.status_code == 500
    finally:
        server.should_exit = True
        await serving

    lines = [orjson.loads(raw) for raw in json_log.getvalue().splitlines()]
    about_it = [line for line in lines if "boom-observe" in orjson.dumps(line).decode()]
    assert len(about_it) == 1, [
        (line["logger"], line["message"], line.get("request_id")) for line in about_it
    ]
    assert about_it[0].get("request_id") == "crash-observe-1"


async def test_a_client_that_leaves_mid_body_is_no_server_error(
    settings: Settings, make_merchant: MerchantFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette raises ClientDisconnect: it was logged as `unhandled error` with a traceback,
    answered and counted as a 500, for a request its client abandoned."""
    merchant = await make_merchant()
    app = create_app(settings)
    body = orjson.dumps(payout_body())
    headers = [(name.lower().encode(), value.encode()) for name, value in auth(merchant).items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/payouts",
        "raw_path": f"{API}/payouts".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("api", 80),
    }
    incoming = [{"type": "http.request", "body": body[:10], "more_body": True}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def counted(status: str) -> float:
        series = {"method": "POST", "route": f"{API}/payouts", "status": status}
        return REGISTRY.get_sample_value("payouts_api_requests_total", series) or 0.0

    before = counted("500"), counted("499")
    caplog.set_level(logging.INFO)
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)  # nothing raised to the server

    assert [
        record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR
    ] == []
    assert [m for m in sent if m["type"] == "http.response.start"] == []
    assert (counted("500"), counted("499")) == (before[0], before[1] + 1)


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_failed_request_on_a_payout_logs_its_payout_and_merchant(
    settings: Settings,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    json_log: io.StringIO,
) -> None:
    """A reinitiate that waited in vain for the payout's row (503): its line carried neither
    the payout's id nor the merchant's, both bound only while the route ran, nor the lock
    wait's error number (it read as an outage)."""
    quick = settings.model_copy(
        update={"api_lock_wait_seconds": 1, "api_database_timeout_seconds": 3.0}
    )
    merchant = await make_merchant()
    rows_held = database_refusals("row_held")
    async with in_process_api(quick) as client:
        created = await client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant))
        payout_id = created.json()["data"]["id"]
        async with sessions() as holder:
            await holder.execute(
                text("SELECT id FROM payouts WHERE id = :id FOR UPDATE"), {"id": payout_id}
            )
            answer = await client.post(
                f"{API}/payouts/{payout_id}/reinitiate",
                headers={**auth(merchant), "X-Request-ID": "lock-waited-1"},
            )
            await holder.rollback()

    assert_error(answer, 503, "SERVICE_UNAVAILABLE")
    # Not "Database unavailable", while /ready said it was ok (truth review).
    assert answer.json()["error"]["message"] == DATABASE_BUSY
    [line] = [entry for entry in entries(json_log) if entry.get("request_id") == "lock-waited-1"]
    assert (line["payout_id"], line["merchant_id"]) == (payout_id, merchant.merchant_id)
    assert "1205" in line["message"]
    # Counted apart from an outage: /metrics counted 503s by route only (truth review).
    assert database_refusals("row_held") == rows_held + 1


async def test_a_clients_request_id_is_logged_as_sent(
    api_client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    """An id of ten digits or more (epoch milliseconds, a snowflake) was masked as an account
    number in every line, where the API echoes it as sent: its lines could not be found by it."""
    request_id = "req_1733412345678"
    answer = await api_client.get(
        f"{API}/balance", headers={"X-API-KEY": "mpk_test_" + "x" * 43, "X-Request-ID": request_id}
    )

    assert answer.status_code == 401
    [line] = [entry for entry in entries(json_log) if entry.get("logger") == "api.auth"]
    assert (line["request_id"], line["correlation_id"]) == (request_id, request_id)


async def test_an_api_key_sent_as_the_request_id_is_not_logged(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, json_log: io.StringIO
) -> None:
    """The ids of a line are not masked as account numbers, but secrets in them still are: a
    client that sends its API key under X-Request-ID does not have it logged."""
    merchant = await make_merchant()
    secret_part = merchant.api_key.removeprefix("mpk_test_")

    async def refusal_logged() -> bool:  # its warning is said at most once a second
        answer = await api_client.get(f"{API}/balance", headers={"X-Request-ID": merchant.api_key})
        assert answer.status_code == 401
        return "authentication failed" in json_log.getvalue()

    await eventually(refusal_logged, within=5, what="the refusal logged")
    assert secret_part not in json_log.getvalue()
