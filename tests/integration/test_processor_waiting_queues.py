"""Where the processor sends a message to wait before it is tried again: after a failure of its
own, to the retry queue, where every wait is alike (PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS, as
the 0002 scenario's retry); in a database outage, to an outage-wait queue of its own, whose
waits grow while the outage lasts. A quorum queue expires only the message at its head: in one
queue, a 0002 payout's retry waited behind an outage's 15-second wait (found by the consumer
review: 12.9 s instead of 1 s, end to end).

The test waits in queues of its own, shaped like the processor's: in the shared ones, a message
any other test's processor sends there is counted with its retry, or holds it up at the head of
the retry queue (seen once in CI, the retry not back within 10 s; which message is not known)."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from contracts.broker import create_broker
from contracts.db.engine import SessionFactory
from contracts.messages import ProcessPayout
from contracts.settings import Settings
from contracts.topology import (
    OUTAGE_COUNT_HEADER,
    OUTAGE_WAIT_TIER,
    PAYOUT_COMMANDS,
    WorkQueue,
    declare_topology_at,
    declare_work_queue,
)
from processor_service.consumer import MAX_OUTAGE_DELAY_SECONDS, Consumer
from tests.support.amqp import RabbitClient
from tests.support.polling import eventually

RETRY_DELAY_SECONDS = 1


class _ServerGone(Exception):
    """What the driver raises when the database cannot be reached."""


def _outage() -> OperationalError:
    return OperationalError("SELECT 1", None, _ServerGone(2003, "Can't connect to MySQL server"))


def _delivered(headers: dict[str, Any]) -> Any:
    """A command as the consumer holds it once delivered (the parts of it the retry reads)."""
    body = ProcessPayout(payout_id=str(uuid.uuid4()), merchant_id=str(uuid.uuid4())).to_json()
    raw = SimpleNamespace(
        body=body,
        headers=headers,
        content_type="application/json",
        message_id=f"waits-{uuid.uuid4().hex}",
        correlation_id=None,
        timestamp=None,
    )

    async def ack() -> None:
        return None

    return SimpleNamespace(raw_message=raw, headers=headers, message_id=raw.message_id, ack=ack)


@pytest.fixture
async def commands(settings: Settings, rabbit: RabbitClient) -> AsyncIterator[WorkQueue]:
    """A command queue of the test's own, with the waiting queues of the processor's."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=1)
    queue = replace(PAYOUT_COMMANDS, name=f"test-waits.{uuid.uuid4().hex[:12]}", routing_keys=())
    await declare_work_queue(rabbit.channel, queue)
    try:
        yield queue
    finally:
        for name in (queue.name, queue.dead_letter_queue, *queue.waiting_queues()):
            await rabbit.channel.queue_delete(name)


@pytest.fixture
async def consumer(settings: Settings, sessions: SessionFactory) -> AsyncIterator[Consumer]:
    broker = create_broker(settings.amqp_url, prefetch=1, app_name="waiting-queues-test")
    await broker.connect()
    try:
        yield Consumer(
            broker=broker,
            sessions=sessions,
            retry_delay_seconds=RETRY_DELAY_SECONDS,
            max_retries=3,
        )
    finally:
        await broker.stop()


async def test_a_retry_comes_back_while_an_outages_longer_wait_goes_on(
    consumer: Consumer, commands: WorkQueue, rabbit: RabbitClient
) -> None:
    # The fifth outage in a row: the longest wait. Then a failure of another command's own.
    in_an_outage = _delivered({OUTAGE_COUNT_HEADER: 4})
    failed = _delivered({})
    await consumer._retry_or_dead_letter(in_an_outage, commands, _outage())
    await consumer._retry_or_dead_letter(failed, commands, RuntimeError("handler failed"))

    async def failed_one_back() -> bool:
        return await rabbit.count(commands.name) == 1

    await eventually(
        failed_one_back, within=MAX_OUTAGE_DELAY_SECONDS - 5, what="the 1-second retry back"
    )
    (back,) = await rabbit.take(commands.name)
    assert back.message_id == failed.message_id
    assert await rabbit.count(commands.retry_queue(OUTAGE_WAIT_TIER)) == 1
