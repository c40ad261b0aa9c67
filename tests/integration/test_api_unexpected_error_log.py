"""An unexpected error in the API is "answered with a logged 500" (README): logged once, with the
request id, so that one incident is one log entry an operator can find by the request id. It
was logged twice: by our handler, then by uvicorn ("Exception in ASGI application", without
the request id), Starlette raising it again after answering."""

import asyncio
import io
import logging
import socket
from collections.abc import Iterator

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from api_service.app import create_app
from contracts.logging import ADOPTED_LOGGERS, configure_logging
from contracts.settings import Settings

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
