"""A work queue's dead letters (`<queue>.dead`): looking at them without taking them, and moving
them back to the work queue. Used by `payouts dlq` and the dashboard's operations page.
Redriven messages keep their message id (consumers stay idempotent on it) and start their
retries afresh."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from contracts.redelivery import fresh_copy, retry_count
from contracts.topology import LAST_ERROR_HEADER, PAYOUT_ID_HEADER


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    correlation_id: str | None
    payout_id: str | None
    failed_attempts: int
    last_error: str | None
    broker_reason: str | None  # why RabbitMQ dead-lettered it, if it did (x-first-death-reason)

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> "DeadLetter":
        headers: Mapping[str, Any] = message.headers or {}
        reason = headers.get("x-first-death-reason")
        return cls(
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            payout_id=_text(headers.get(PAYOUT_ID_HEADER)),
            failed_attempts=retry_count(headers),
            last_error=_text(headers.get(LAST_ERROR_HEADER)),
            broker_reason=_text(reason),
        )


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def _waiting(channel: aio_pika.abc.AbstractChannel, name: str) -> tuple[AbstractQueue, int]:
    queue = await channel.declare_queue(name, passive=True)
    return queue, queue.declaration_result.message_count or 0


async def peek(amqp_url: str, work_queue: str, limit: int) -> list[DeadLetter]:
    """The first `limit` dead letters, left where they are (fetched, then requeued)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue, waiting = await _waiting(channel, f"{work_queue}.dead")
        held: list[AbstractIncomingMessage] = []
        try:
            for _ in range(min(waiting, limit)):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            return [DeadLetter.of(message) for message in held]
        finally:
            for message in held:
                await message.nack(requeue=True)


async def redrive(amqp_url: str, work_queue: str, limit: int) -> int:
    """Move up to `limit` dead letters back to the work queue: publish (confirmed), then ack."""
    connection = await aio_pika.connect(amqp_url)
    moved = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue, waiting = await _waiting(channel, f"{work_queue}.dead")
        for _ in range(min(waiting, limit)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await channel.default_exchange.publish(
                fresh_copy(message), routing_key=work_queue, mandatory=True
            )
            await message.ack()
            moved += 1
    return moved
