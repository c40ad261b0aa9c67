"""A consumer or outbox relay started before `payouts migrate` takes no work until the database
is migrated: the consumers took messages that failed into the dead-letter queues (lifecycle
review)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from faststream import FastStream

from contracts.db.engine import create_engine, create_session_factory
from contracts.settings import Settings
from contracts.topology import (
    BULK_PAYOUT_COMMANDS,
    PAYOUT_COMMANDS,
    PSP_OUTCOMES,
    declare_topology_at,
    webhook_events_queue,
)
from migrations.runner import upgrade_to_head
from migrations.state import MIGRATED_POLL_SECONDS, until_migrated
from processor_service.app import create_processor
from processor_service.relay_service import run_outbox_relay
from tests.support.polling import eventually
from tests.support.private_mariadb import private_mariadb, set_read_only
from tests.support.tcp_proxy import HangingProxy
from webhook_service.app import create_webhook_app


async def _consumers(settings: Settings, queues: list[str]) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = [await channel.get_queue(name) for name in queues]
        return sum(queue.declaration_result.consumer_count or 0 for queue in declared)


async def _delete(settings: Settings, queues: list[str]) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[bool]]:
    async def logged() -> bool:
        return text in caplog.text

    return logged


def _waits_for_migrations(
    caplog: pytest.LogCaptureFixture, who: str
) -> Callable[[], Awaitable[bool]]:
    return _logged(caplog, f"the {who} takes no work until the database is migrated")


async def _migrated_then_consuming(
    settings: Settings, bare_database: str, starting: asyncio.Task[None], queues: list[str]
) -> None:
    """`payouts migrate` runs: the start under way then ends, and every queue is consumed."""
    await asyncio.to_thread(upgrade_to_head, bare_database)
    await asyncio.wait_for(starting, timeout=30)
    assert await _consumers(settings, queues) == len(queues)


@pytest.mark.parametrize(
    ("who", "create", "queues"),
    [
        ("processor", create_processor, [q.name for q in (PAYOUT_COMMANDS, PSP_OUTCOMES)]),
        (
            "webhook service",
            create_webhook_app,
            [webhook_events_queue(3, in_bulk=in_bulk).name for in_bulk in (False, True)],
        ),
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
        # Meanwhile its queues go (a broker reset): it exited once done waiting (restore review).
        await _delete(settings, queues)

        await _migrated_then_consuming(settings, bare_database, starting, queues)
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

        started = _logged(caplog, "the database is migrated: the outbox relay starts")
        await eventually(started, within=30, what="the relay started")
    finally:
        stop.set()
        await relay


async def test_the_outbox_relay_stops_when_asked_while_it_waits(
    settings: Settings, bare_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM sets `stop`; waiting for the migrations, the relay never looked at it and ran on
    until killed (diff review)."""
    caplog.set_level(logging.INFO, logger="migrations.state")
    stop = asyncio.Event()
    relay = asyncio.create_task(
        run_outbox_relay(settings.model_copy(update={"database_url": bare_database}), stop)
    )
    await eventually(_waits_for_migrations(caplog, "outbox relay"), what="the relay waiting")

    stop.set()

    await asyncio.wait_for(relay, timeout=MIGRATED_POLL_SECONDS + 2)


async def test_the_outbox_relay_waits_while_its_database_is_read_only(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only server (a replica, a primary a failover demoted) answers: it counted as
    ready, and each round's writes failed. Writable, it is judged on its migrations."""
    caplog.set_level(logging.INFO, logger="migrations.state")
    stop = asyncio.Event()
    with private_mariadb("--read-only") as url:
        relay = asyncio.create_task(
            run_outbox_relay(settings.model_copy(update={"database_url": url}), stop)
        )
        try:
            read_only = "the outbox relay takes no work until the database accepts writes"
            await eventually(_logged(caplog, read_only), what="the relay waiting for writes")
            await set_read_only(url, False)
            await eventually(
                _waits_for_migrations(caplog, "outbox relay"),
                within=MIGRATED_POLL_SECONDS * 3,
                what="the relay waiting for the migrations",
            )
        finally:
            stop.set()
            await relay


async def test_a_processor_started_before_its_database_answers_waits_for_the_migrations(
    settings: Settings, bare_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The compose start: the database still booting when the processor starts, and not
    migrated yet once it answers. The wait ended on the outage, and the processor consumed
    from a database that lacked every table (diff review)."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    queues = [queue.name for queue in (PAYOUT_COMMANDS, BULK_PAYOUT_COMMANDS, PSP_OUTCOMES)]
    caplog.set_level(logging.INFO, logger="migrations.state")
    async with HangingProxy.in_front_of(bare_database) as database:
        database.refuse()
        booting = settings.model_copy(update={"database_url": database.url_through(bare_database)})
        processor = create_processor(booting)
        starting = asyncio.create_task(processor.start())
        try:
            await eventually(_logged(caplog, "until the database answers"), what="the outage")
            assert await _consumers(settings, queues) == 0

            database.resume()
            await eventually(_waits_for_migrations(caplog, "processor"), what="the migrations")
            assert await _consumers(settings, queues) == 0

            await _migrated_then_consuming(settings, bare_database, starting, queues)
        finally:
            starting.cancel()
            await processor.stop()


async def test_a_refused_login_is_logged_with_what_the_database_said(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password in PAYOUTS_DATABASE_URL was logged as "unavailable", like an outage: the
    operator could not tell one from the other. The line now carries MySQL's refusal."""
    url = settings.database_url.replace("root@", "root:wrong-password@", 1)
    assert url != settings.database_url
    engine = create_engine(url, pool_size=1)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="migrations.state")
    waiting = asyncio.create_task(until_migrated(create_session_factory(engine), "processor", stop))
    try:
        await eventually(_logged(caplog, "Access denied"), within=10, what="the refusal logged")
    finally:
        stop.set()
        assert await asyncio.wait_for(waiting, timeout=15) is False
        await engine.dispose()
    assert "takes no work until the database answers (it is unavailable): (1045" in caplog.text
