"""The processor app (its consumers and scheduler loop) and an outbox relay loop, both in the
test's process, against the tests' database and vhost."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from contracts.settings import Settings
from contracts.topology import declare_topology_at
from processor_service.app import create_processor
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
