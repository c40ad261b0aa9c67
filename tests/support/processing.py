"""The processor app (its consumers and scheduler loop) and an outbox relay loop, both in the
test's process, against the tests' database and vhost."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from contracts.topology import declare_topology_at
from processor_service.app import create_processor
from processor_service.outbox_relay import DueProbe, OutboxRelay, RoundResult, open_publisher
from processor_service.relay_service import run_outbox_relay


@asynccontextmanager
async def running_processor_and_relay(settings: Settings) -> AsyncIterator[None]:
    """Both running with `settings`, the topology declared first; both stopped on the way out."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    stop = asyncio.Event()
    relay = asyncio.create_task(run_outbox_relay(settings, stop))
    try:
        async with create_processor(settings):
            yield
    finally:
        stop.set()
        await relay


async def relay_until_idle(relay: OutboxRelay, max_rounds: int = 50) -> list[RoundResult]:
    """Rounds until one sends nothing (rows that can never be published stay behind)."""
    rounds = []
    for _ in range(max_rounds):
        rounds.append(await relay.relay_once())
        if rounds[-1].sent == 0:
            return rounds
    raise AssertionError(f"relay still sending after {max_rounds} rounds: {rounds}")


async def everything_due_published(
    settings: Settings, engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """The topology declared and every outbox row due published: a relay's rounds, without its
    housekeeping (whose sweeps send earlier tests' stalled payouts' commands again)."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    connection, publisher = await open_publisher(settings.amqp_url)
    probe = DueProbe(engine)
    async with connection:
        relay = OutboxRelay(
            sessions,
            publisher,
            probe,
            batch_size=500,
            max_attempts=settings.relay_max_publish_attempts,
        )
        await relay_until_idle(relay)
    await probe.aclose()
