"""A work queue's dead letters (`<queue>.dead`): looking at them without taking them, and moving
them back to the work queue. Used by `payouts dlq` and the dashboard's operations page.
Redriven messages keep their message id (consumers stay idempotent on it) and start their
retries afresh."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import DeliveryError
from aiormq.exceptions import InvalidFrameError

from contracts.amqp_connection import connect
from contracts.redelivery import fresh_copy, retry_count
from contracts.topology import LAST_ERROR_HEADER, PAYOUT_ID_HEADER


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    correlation_id: str | None
    payout_id: str | None
    failed_attempts: int
    last_error: str | None
    broker_reason: str | None  # x-death[0].reason: how it came into the dead-letter queue

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> "DeadLetter":
        headers: Mapping[str, Any] = message.headers or {}
        # x-death lists the dead-letterings newest first; x-first-death-reason is its life's
        # first, e.g. `expired` out of a retry queue, for a command that waited out a retry.
        deaths = headers.get("x-death")
        newest = deaths[0] if isinstance(deaths, list) and deaths else None
        reason = newest.get("reason") if isinstance(newest, Mapping) else None
        return cls(
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            payout_id=_text(headers.get(PAYOUT_ID_HEADER)),
            failed_attempts=retry_count(headers),
            last_error=_text(headers.get(LAST_ERROR_HEADER)),
            broker_reason=_text(reason),
        )

    @property
    def reason(self) -> str | None:
        """Why it is dead: the error our consumer refused it for (`rejected`), or RabbitMQ's own
        reason, e.g. `delivery_limit` (a consumer kept crashing or timing out on it), the error
        of an earlier attempt then being history."""
        if self.broker_reason in (None, "rejected"):
            return self.last_error or self.broker_reason
        earlier = f"; the last error before: {self.last_error}" if self.last_error else ""
        return f"{self.broker_reason} (RabbitMQ){earlier}"


def _text(value: object) -> str | None:
    """A header as text; bytes that are not UTF-8 (a message published by hand) escaped."""
    if value is None:
        return None
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else str(value)


async def _waiting(channel: aio_pika.abc.AbstractChannel, name: str) -> tuple[AbstractQueue, int]:
    queue = await channel.declare_queue(name, passive=True)
    return queue, queue.declaration_result.message_count or 0


class UnreadableDeadLetter(Exception):
    """The AMQP library cannot decode the next message of a dead-letter queue (a property that is
    not UTF-8, published by another client): it ends the connection. The message stays where it
    was: at the head of the queue, or behind the readable messages this connection held, which
    go back in front of it (what to take off the head in the management UI is then theirs)."""

    def __init__(self, queue: str, behind: int = 0) -> None:
        take_it_off = (
            "take it off in the RabbitMQ management UI (Queues > Get messages, Ack mode: "
            "Automatic ack), then run this again"
        )
        if behind:
            where = (
                f"comes after the first {behind} message(s), which go back in front of it: "
                f"the head of the queue is theirs, not its. Move those {behind} on first "
                f"(`payouts dlq redrive` does, for a dead-letter queue); then it is at the head: "
            )
        else:
            where = "stays at its head, in front of the others: "
        super().__init__(
            f"the next message of {queue} cannot be decoded (a property that is not UTF-8?) and "
            f"{where}{take_it_off}"
        )


async def next_held(queue: AbstractQueue, behind: int = 0) -> AbstractIncomingMessage | None:
    """The next message of a queue our tools take messages off one by one (a dead-letter queue,
    the parking lot), unacked; None when it is empty. UnreadableDeadLetter when the library
    cannot decode it (`behind`: how many messages in front of it this connection holds)."""
    try:
        return await queue.get(no_ack=False, fail=False)
    except InvalidFrameError as undecodable:
        raise UnreadableDeadLetter(queue.name, behind) from undecodable


async def peek(amqp_url: str, work_queue: str, limit: int) -> list[DeadLetter]:
    """The first `limit` dead letters, left where they are (fetched, then requeued)."""
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue, waiting = await _waiting(channel, f"{work_queue}.dead")
        held: list[AbstractIncomingMessage] = []
        try:
            for _ in range(min(waiting, limit)):
                message = await next_held(queue, behind=len(held))
                if message is None:
                    break
                held.append(message)
            return [DeadLetter.of(message) for message in held]
        finally:
            if not channel.is_closed:  # closed, the broker has put them back itself
                for message in held:
                    await message.nack(requeue=True)


@dataclass(frozen=True)
class Redriven:
    """What a redrive did: `moved` back to the work queue, `left` in the dead-letter queue when
    it ended, what stopped it, if anything did (the messages moved stay moved), and whether the
    queue ran dry before the count it started from: another client (a redrive, the Operations
    page, `payouts dlq list`) held some of them meanwhile."""

    moved: int
    left: int
    stopped_by: Exception | None = None
    shared: bool = False


async def redrive(amqp_url: str, work_queue: str, limit: int) -> Redriven:
    """Move up to `limit` dead letters back to the work queue: publish (confirmed), then ack."""
    connection = await connect(amqp_url)
    moved = 0
    shared = False
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue, waiting = await _waiting(channel, f"{work_queue}.dead")
        try:
            for _ in range(min(waiting, limit)):
                message = await next_held(queue)
                if message is None:
                    shared = True
                    break
                await channel.default_exchange.publish(
                    fresh_copy(message), routing_key=work_queue, mandatory=True
                )
                await message.ack()
                moved += 1
        except (UnreadableDeadLetter, DeliveryError) as stopped:  # the broker answers: no outage
            return Redriven(moved, max(waiting - moved, 0), stopped)
        # Counted again: what another client moved meanwhile is not left (two redrives at once
        # each said "144 left: run this again" of a queue they had emptied: two operators
        # review).
        _, left = await _waiting(channel, f"{work_queue}.dead")
    return Redriven(moved, left, shared=shared)
