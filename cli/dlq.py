"""`payouts dlq list|redrive QUEUE`: what sits in a work queue's dead-letter queue, and moving
it back. Redriven messages keep their message id (consumers stay idempotent on it) and start
their retries afresh. Parked webhooks have their own command: `payouts webhooks replay-parked`.
"""

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import aio_pika
import typer
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from contracts.redelivery import fresh_copy, retry_count
from contracts.settings import get_settings
from contracts.topology import LAST_ERROR_HEADER, PAYOUT_ID_HEADER, all_work_queues

dlq_app = typer.Typer(help="Inspect and re-drive dead-lettered messages.", no_args_is_help=True)


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


def _work_queue_names() -> set[str]:
    return {queue.name for queue in all_work_queues(len(get_settings().webhook_retry_ladder))}


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


def _checked(queue: str) -> str:
    known = _work_queue_names()
    if queue.removesuffix(".dead") not in known:
        raise typer.BadParameter(
            f"{queue!r} is not a work queue; one of {', '.join(sorted(known))}"
        )
    return queue.removesuffix(".dead")


QueueArgument = Annotated[str, typer.Argument(help="Work queue, e.g. processor.payout-commands")]


@dlq_app.command("list")
def list_command(
    queue: QueueArgument,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Show the dead letters of QUEUE (they stay in the dead-letter queue)."""
    letters = asyncio.run(peek(get_settings().amqp_url, _checked(queue), limit))
    for letter in letters:
        if as_json:
            typer.echo(json.dumps(letter.__dict__))
        else:
            reason = letter.last_error or letter.broker_reason
            typer.echo(
                f"{letter.message_id}  payout={letter.payout_id}  attempts={letter.failed_attempts}"
                f"  correlation={letter.correlation_id}\n    {reason}"
            )
    typer.echo(f"{len(letters)} dead letter(s) shown", err=True)


@dlq_app.command("redrive")
def redrive_command(
    queue: QueueArgument,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 1000,
) -> None:
    """Move the dead letters of QUEUE back to QUEUE, to be consumed again."""
    moved = asyncio.run(redrive(get_settings().amqp_url, _checked(queue), limit))
    typer.echo(f"{moved} message(s) moved back to {_checked(queue)}")
