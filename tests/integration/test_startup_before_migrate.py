"""A consumer or outbox relay started before `payouts migrate` takes no work until the database
is migrated: the consumers took messages that failed into the dead-letter queues (lifecycle
review)."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from faststream import FastStream

from contracts.settings import Settings
from contracts.topology import (
    PAYOUT_COMMANDS,
    PSP_OUTCOMES,
    declare_topology_at,
    webhook_events_queue,
)
from migrations.runner import upgrade_to_head
from processor_service.app import create_processor
from processor_service.relay_service import run_outbox_relay
from tests.support.polling import eventually
from webhook_service.app import create_webhook_app


async def _consumers(settings: Settings, queues: list[str]) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = [await channel.get_queue(name) for name in queues]
        return sum(queue.declaration_result.consumer_count or 0 for queue in declared)


def _waits_for_migrations(caplog: pytest.LogCaptureFixture, who: str) -> Callable[[], Any]:
    async def waiting() -> bool:
        return f"the {who} takes no work until the database is migrated" in caplog.text

    return waiting


@pytest.mark.parametrize(
    ("who", "create", "queues"),
    [
        ("processor", create_processor, [PAYOUT_COMMANDS.name, PSP_OUTCOMES.name]),
        ("webhook service", create_webhook_app, [webhook_events_queue(3).name]),
    ],
)
async def test_a_consumer_consumes_only_once_the_database_is_migrated(
    settings: Settings,
    bare_database: str,
    caplog: pytest.LogCaptureFixture,
    who: str,
    create: Callable[[Settings], FastStream],
    queues: list[str],
) -> None:
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    caplog.set_level(logging.INFO, logger="migrations.state")
    consumer = create(settings.model_copy(update={"database_url": bare_database}))
    starting = asyncio.create_task(consumer.start())
    try:
        await eventually(_waits_for_migrations(caplog, who), what=f"the {who} waiting")
        assert await _consumers(settings, queues) == 0, "it consumes from an unmigrated database"

        await asyncio.to_thread(upgrade_to_head, bare_database)
        await asyncio.wait_for(starting, timeout=30)

        assert await _consumers(settings, queues) == len(queues)
    finally:
        starting.cancel()
        await consumer.stop()


async def test_the_outbox_relay_starts_its_rounds_only_once_the_database_is_migrated(
    settings: Settings, bare_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="migrations.state")
    stop = asyncio.Event()
    relay: asyncio.Task[None] = asyncio.create_task(
        run_outbox_relay(settings.model_copy(update={"database_url": bare_database}), stop)
    )
    try:
        await eventually(_waits_for_migrations(caplog, "outbox relay"), what="the relay waiting")
        await asyncio.to_thread(upgrade_to_head, bare_database)

        async def started() -> bool:
            return "the database is migrated: the outbox relay starts" in caplog.text

        await eventually(started, within=30, what="the relay started")
    finally:
        stop.set()
        await relay
