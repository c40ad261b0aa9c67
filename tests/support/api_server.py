"""The API served in the test's own process by uvicorn, as `payouts api` serves it: what only
the real server shows (a receive() after the answer says the client is gone; a client that goes
away while its request waits)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from api_service.app import create_app
from contracts.settings import Settings
from tests.support.polling import eventually
from tests.support.system import free_port


@asynccontextmanager
async def serving_api(settings: Settings) -> AsyncIterator[int]:
    """The API on a port of its own (uvicorn, httptools), stopped on the way out."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_config=None,
        http="httptools",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    try:
        await eventually(started, what="uvicorn started")
        yield port
    finally:
        server.should_exit = True
        await serving
