"""Liveness and readiness. Readiness says which dependency is down."""

import asyncio
import contextlib
from typing import Literal

from aio_pika.abc import AbstractChannel, AbstractConnection
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from api_service.envelope import json_response
from contracts.amqp_connection import connect
from contracts.db.engine import create_engine
from contracts.stopping import being_cancelled
from contracts.wire import dumps
from migrations.state import database_state

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0
ALWAYS_THERE = "amq.direct"  # a broker-defined exchange: its absence means no broker


class BrokerProbe:
    """One connection kept open; each probe makes a real round trip on it (a passive declare of
    an exchange every vhost has), so a broker that stopped answering is seen at once, not when
    the TCP connection finally notices."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        # The probe under way, whose answer concurrent probes share: they neither open (and
        # leak) a connection each, nor wait their turn behind a lock for a round trip each (four
        # probes of a silent broker answered after 2, 4, 6 and 8 s).
        self._probe: asyncio.Future[bool] | None = None
        self._closed = False

    async def ok(self) -> bool:
        if self._closed:  # shutting down: no connection opened that nothing would close
            return False
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_once())
        probe = self._probe
        try:
            return await asyncio.shield(probe)  # a caller that gives up leaves it to the others
        except asyncio.CancelledError:
            if probe.cancelled() and not being_cancelled():  # by close(), not by our caller
                return False
            raise

    async def _probe_once(self) -> bool:
        try:
            await asyncio.wait_for(self._round_trip(), CHECK_TIMEOUT_SECONDS)
        except Exception:
            await self._disconnect()
            return False
        return True

    async def _round_trip(self) -> None:
        if self.connection is None or self.connection.is_closed or self.channel is None:
            self.connection = await connect(self.amqp_url)
            self.channel = await self.connection.channel()
        await self.channel.declare_exchange(ALWAYS_THERE, passive=True)

    async def close(self) -> None:
        """At shutdown: the probe under way is cancelled first (its callers may have gone: a
        connect it finished afterwards was left open), and no probe starts after it."""
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.wait([self._probe])  # its end; a cancel of close() itself goes on up
        await self._disconnect()

    async def _disconnect(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()


class Liveness(BaseModel):
    status: Literal["healthy"]


# Under the API prefix. A merchant's faults never touch them (a client sending its key on every
# call must not see the sandbox down): 503 means only that a dependency is.
PROBE_PATHS = ("/health", "/ready")


@router.get("/health", summary="Liveness", response_model=Liveness)
async def health() -> Response:
    return json_response(dumps({"status": "healthy"}))


class ReadinessChecks(BaseModel):
    database: Literal["ok", "unavailable", "read_only", "not_migrated"] = Field(
        description="`read_only`: it answers, but refuses writes (a replica, or a primary "
        "demoted by a failover); `not_migrated`: it answers, but lacks this code's migrations "
        "(run `payouts migrate`)"
    )
    rabbitmq: Literal["ok", "unavailable"]
    shutdown: Literal["draining"] | None = Field(
        default=None, description="Present while the API shuts down"
    )


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: ReadinessChecks


@router.get(
    "/ready",
    summary="Readiness: MySQL answers and takes writes, and RabbitMQ answers",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Not ready: `status` is `not_ready`; `checks` names what is "
            "unavailable (or `shutdown: draining`)",
        }
    },
)
async def ready(request: Request) -> Response:
    # At once: with both hanging (a network partition), one after the other took twice a
    # check's limit, past the compose healthcheck's own (lifecycle review).
    database, broker_ok = await asyncio.gather(
        _database_state(request), request.app.state.broker_probe.ok()
    )
    report = {"database": database, "rabbitmq": "ok" if broker_ok else "unavailable"}
    draining = bool(getattr(request.app.state, "draining", False))
    healthy = all(state == "ok" for state in report.values()) and not draining
    if draining:
        report["shutdown"] = "draining"
    body = {"status": "ready" if healthy else "not_ready", "checks": report}
    return json_response(dumps(body), 200 if healthy else 503)


def database_probe_engine(database_url: str) -> AsyncEngine:
    """Readiness asks the database on connections of its own: through the requests' pool, a
    pool busy with requests waiting on one merchant's row lock read as a database that does not
    answer, and took every API replica out of its load balancer (database limits review)."""
    return create_engine(
        database_url, pool_size=1, max_overflow=1, timeout_seconds=CHECK_TIMEOUT_SECONDS
    )


async def _database_state(request: Request) -> str:
    """`ok`, `unavailable`, `read_only` or `not_migrated`: an API started on a database `payouts
    migrate` had not run on was ready, and answered every merchant's call with a 500 (lifecycle
    review); one on a read-only database (a demoted primary) was ready, and answered each with
    a 503 (failover review)."""
    return await database_state(request.app.state.database_probe, CHECK_TIMEOUT_SECONDS)
