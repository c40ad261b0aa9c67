"""A retry its waiting queue refuses as full (an operator's max-length policy) is dead-lettered,
and counted so (processor_service.consumer; contracts.redelivery.republish)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
from aiormq.exceptions import DeliveryError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from pamqp.commands import Basic
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import create_engine, create_session_factory
from contracts.topology import LAST_ERROR_HEADER, PAYOUT_COMMANDS
from processor_service.consumer import Consumer
from processor_service.handlers import Context
from tests.unit.test_outage_retries import NOWHERE, Delivered, Raw

FULL = PAYOUT_COMMANDS.retry_queue(1)


def _refused() -> DeliveryError:
    return DeliveryError(None, Basic.Nack(delivery_tag=1))


@dataclass
class FullRetryQueue:
    """A broker whose first retry queue refuses every copy, on any channel."""

    taken: list[tuple[str, aio_pika.Message]] = field(default_factory=list)

    def take(self, queue: str, copy: aio_pika.Message) -> None:
        if queue == FULL:
            raise _refused()
        self.taken.append((queue, copy))

    async def publish(self, copy: aio_pika.Message, *, queue: str, **_options: Any) -> None:
        self.take(queue, copy)

    async def connect(self) -> "FullRetryQueue":
        return self

    @asynccontextmanager
    async def channel(self, **_options: Any) -> AsyncIterator["_NewChannel"]:
        yield _NewChannel(self)


@dataclass
class _NewChannel:
    broker: FullRetryQueue

    @property
    def default_exchange(self) -> "_NewChannel":
        return self

    async def publish(self, copy: aio_pika.Message, *, routing_key: str, **_: Any) -> None:
        self.broker.take(routing_key, copy)


def _count(label: str) -> float:
    sample = REGISTRY.get_sample_value(
        "payouts_processor_messages_total", {"queue": PAYOUT_COMMANDS.name, "result": label}
    )
    return sample or 0.0


async def test_a_retry_its_full_queue_refuses_is_dead_lettered_and_counted_so() -> None:
    """Counted `retried`, before the copy went anywhere (fixes review)."""
    broker = FullRetryQueue()
    engine = create_engine(NOWHERE)
    consumer = Consumer(
        cast(RabbitBroker, broker), create_session_factory(engine), 2.0, max_retries=5
    )
    before = {label: _count(label) for label in ("retried", "dead_lettered")}

    async def failing(session: AsyncSession, context: Context) -> None:
        raise RuntimeError("transient")

    message = Delivered(Raw(headers={}))
    try:
        await consumer.run(cast(RabbitMessage, message), PAYOUT_COMMANDS, failing, inbox=False)
    finally:
        await engine.dispose()

    assert message.acked
    [(queue, copy)] = broker.taken
    assert queue == PAYOUT_COMMANDS.dead_letter_queue
    assert str((copy.headers or {})[LAST_ERROR_HEADER]).startswith(
        f"RabbitMQ refused a copy for {FULL}"
    )
    assert _count("retried") == before["retried"]
    assert _count("dead_lettered") == before["dead_lettered"] + 1
