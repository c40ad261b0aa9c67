"""Liveness and readiness. Readiness says which dependency is down."""

import asyncio

import aio_pika
from aio_pika.abc import AbstractConnection
from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import Response

from api_service.envelope import json_response
from contracts.wire import dumps

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


class BrokerProbe:
    """Keeps one connection to tell whether RabbitMQ answers; reconnects when it dropped."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.connection: AbstractConnection | None = None
        # Concurrent probes share one reconnect instead of each opening (and leaking) its own.
        self._connecting = asyncio.Lock()

    async def ok(self) -> bool:
        async with self._connecting:
            if self.connection is not None and not self.connection.is_closed:
                return True
            try:
                self.connection = await asyncio.wait_for(
                    aio_pika.connect(self.amqp_url), CHECK_TIMEOUT_SECONDS
                )
            except Exception:
                return False
            return True

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


@router.get("/health", summary="Liveness")
async def health() -> Response:
    return json_response(dumps({"status": "healthy"}))


@router.get("/ready", summary="Readiness: MySQL and RabbitMQ answer")
async def ready(request: Request) -> Response:
    checks = {
        "database": await _database_ok(request),
        "rabbitmq": await request.app.state.broker_probe.ok(),
    }
    draining = bool(getattr(request.app.state, "draining", False))
    healthy = all(checks.values()) and not draining
    report = {name: "ok" if ok else "unavailable" for name, ok in checks.items()}
    if draining:
        report["shutdown"] = "draining"
    body = {"status": "ready" if healthy else "not_ready", "checks": report}
    return json_response(dumps(body), 200 if healthy else 503)


async def _database_ok(request: Request) -> bool:
    try:
        async with request.app.state.sessions() as session:
            await asyncio.wait_for(session.execute(text("SELECT 1")), CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False
    return True
