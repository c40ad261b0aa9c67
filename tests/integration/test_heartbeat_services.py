"""A service touches its heartbeat file (contracts/heartbeat.py) only while it works: not while
it waits for the migrations, and no more once its broker connection is gone; a stopped service
leaves none. docker compose judges the consumers by it."""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest
from faststream import FastStream
from faststream.rabbit import RabbitQueue

from contracts.broker import create_broker
from contracts.consumer_health import consumer_works
from contracts.db.engine import SessionFactory
from contracts.heartbeat import BEAT_EVERY_SECONDS
from contracts.settings import Settings
from contracts.topology import PAYOUT_COMMANDS, declare_topology_at
from migrations.runner import upgrade_to_head
from processor_service.app import create_processor
from processor_service.relay_service import run_outbox_relay
from tests.support.polling import eventually
from tests.support.tcp_proxy import HangingProxy
from webhook_service.app import create_webhook_app

WAITING = "takes no work until the database is migrated"


def _stale(path: Path) -> Path:
    """A heartbeat file left fresh by the process before (a restarted container)."""
    path.touch()
    return path


def _touched_since(path: Path, since: float) -> bool:
    return path.exists() and path.stat().st_mtime >= since


def _beating(path: Path, since: float) -> Callable[[], Awaitable[bool]]:
    async def beating() -> bool:
        return _touched_since(path, since)

    return beating


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[bool]]:
    async def logged() -> bool:
        return text in caplog.text

    return logged


@pytest.mark.parametrize(
    ("who", "create"), [("processor", create_processor), ("webhook service", create_webhook_app)]
)
async def test_a_consumer_beats_once_it_consumes_from_a_migrated_database(
    settings: Settings,
    bare_database: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    who: str,
    create: Callable[[Settings], FastStream],
) -> None:
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    caplog.set_level(logging.INFO, logger="migrations.state")
    heartbeat = _stale(tmp_path / "heartbeat")
    consumer = create(
        settings.model_copy(
            update={"database_url": bare_database, "heartbeat_file": str(heartbeat)}
        )
    )
    starting = asyncio.create_task(consumer.start())
    try:
        await eventually(_logged(caplog, f"the {who} {WAITING}"), what=f"the {who} waiting")
        assert not heartbeat.exists(), "a heartbeat while it waits for the migrations"

        migrated_at = time.time() - 1  # file times may be coarser than time.time()
        await asyncio.to_thread(upgrade_to_head, bare_database)
        await asyncio.wait_for(starting, timeout=30)
        await eventually(_beating(heartbeat, migrated_at), what=f"the {who}'s heartbeat")
    finally:
        starting.cancel()
        await consumer.stop()
    assert not heartbeat.exists(), "a stopped consumer leaves a heartbeat"


async def test_the_outbox_relay_beats_once_its_rounds_run(
    settings: Settings, bare_database: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="migrations.state")
    heartbeat = _stale(tmp_path / "heartbeat")
    stop = asyncio.Event()
    relay = asyncio.create_task(
        run_outbox_relay(
            settings.model_copy(
                update={"database_url": bare_database, "heartbeat_file": str(heartbeat)}
            ),
            stop,
        )
    )
    try:
        await eventually(_logged(caplog, f"the outbox relay {WAITING}"), what="the relay waiting")
        assert not heartbeat.exists(), "a heartbeat while it waits for the migrations"

        migrated_at = time.time() - 1
        await asyncio.to_thread(upgrade_to_head, bare_database)
        await eventually(_beating(heartbeat, migrated_at), within=30, what="the relay's heartbeat")
    finally:
        stop.set()
        await relay
    assert not heartbeat.exists(), "a stopped relay leaves a heartbeat"


async def test_a_consumer_works_while_subscribed_and_connected_only(
    settings: Settings, sessions: SessionFactory
) -> None:
    async with HangingProxy.in_front_of(settings.amqp_url) as rabbitmq:
        broker = create_broker(rabbitmq.url_through(settings.amqp_url), prefetch=1)
        broker.subscriber(RabbitQueue(f"heartbeat-{os.getpid()}", auto_delete=True))(_ignore)

        async def working() -> bool:
            return await consumer_works(broker, sessions, _declare_nothing)

        assert not await working(), "not started: no connection, nothing consumed"
        await broker.start()
        assert await working()
    # The proxy closed, with every connection through it: the robust connection retries in vain.

    async def stopped_working() -> bool:
        return not await working()

    try:
        await eventually(stopped_working, what="a lost broker connection to count")
    finally:
        with contextlib.suppress(ExceptionGroup):  # its subscribers' channels are gone
            await broker.stop()


async def test_the_processor_stops_beating_while_its_database_does_not_answer(
    settings: Settings, tmp_path: Path
) -> None:
    """As the API's /ready turns 503 and the relay's rounds fail: it beat on, every 5 s, while it
    could not run one command (each went to its outage-wait queue) (diff review)."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    heartbeat = tmp_path / "heartbeat"
    async with HangingProxy.in_front_of(settings.database_url) as mysql:
        through = mysql.url_through(settings.database_url)
        processor = create_processor(
            settings.model_copy(update={"database_url": through, "heartbeat_file": str(heartbeat)})
        )
        await processor.start()
        try:
            await eventually(_beating(heartbeat, time.time() - 1), what="the processor beating")
            mysql.hang()
            silent_since = time.time()
            await asyncio.sleep(2 * BEAT_EVERY_SECONDS + 1)  # two beats' time, the outage on
            # Only a check answered before the hang may have touched it since.
            assert heartbeat.stat().st_mtime < silent_since + 1
        finally:
            mysql.resume()
            await processor.stop()


async def _ignore(body: object) -> None:
    del body


async def _declare_nothing() -> None:
    pass


async def test_a_processor_whose_queue_is_deleted_declares_it_again_and_consumes(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted in the management UI: the broker cancelled the consumer, nothing declared the
    queue again, and the processor beat on, healthy, consuming nothing until it was restarted
    (RabbitMQ operator review)."""
    processor = create_processor(
        settings.model_copy(update={"heartbeat_file": str(tmp_path / "hb")})
    )
    await processor.start()
    try:
        async with await aio_pika.connect(settings.amqp_url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(PAYOUT_COMMANDS.name)

            async def consumed_again() -> bool:
                with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
                    async with connection.channel() as looking:
                        queue = await looking.declare_queue(PAYOUT_COMMANDS.name, passive=True)
                        return bool(queue.declaration_result.consumer_count)
                return False

            await eventually(consumed_again, within=40, interval=0.5, what="a consumer again")
        assert "the broker cancelled the consumer of processor.payout-commands" in caplog.text
    finally:
        await processor.stop()
