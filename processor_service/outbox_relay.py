"""The outbox relay: publishes committed outbox rows to RabbitMQ and marks them sent.

Rows are claimed in batches with `FOR UPDATE SKIP LOCKED`, so several relays share the work
without publishing a row twice in one round. Each row goes out persistent, `mandatory`, with
publisher confirms and `message_id` = the row id; the row is marked sent only after the broker
acked it with no return. The batch's publishes are pipelined (all in flight, then all confirms).
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage
from contracts.topology import DEFAULT_EXCHANGE
from processor_service.metrics import OUTBOX_FAILURES, OUTBOX_LAG, OUTBOX_PUBLISHED

log = logging.getLogger("outbox-relay")

PUBLISH_TIMEOUT_SECONDS = 10.0
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class RoundResult:
    claimed: int
    sent: int
    unroutable: int = 0  # returned by the broker: those rows' problem, not an outage


def is_unroutable(outcome: object) -> bool:
    """Returned (no queue bound for its routing key): the row's problem, not the broker's."""
    return isinstance(outcome, aiormq.exceptions.DeliveryError) and isinstance(
        outcome.frame, aiormq.spec.Basic.Return
    )


def to_amqp_message(row: OutboxMessage) -> aio_pika.Message:
    return aio_pika.Message(
        body=row.body,
        headers=row.headers,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(row.id),
        correlation_id=row.correlation_id,
        timestamp=row.created_at,
        expiration=row.delay_ms / 1000 if row.delay_ms is not None else None,
    )


class NotConfirmed(Exception):
    """The broker did not ack the message (a nack or no answer)."""


class Publisher:
    """One confirmed channel; exchanges looked up once."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.exchanges: dict[str, AbstractExchange] = {}

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == DEFAULT_EXCHANGE:
            return self.channel.default_exchange
        if name not in self.exchanges:
            self.exchanges[name] = await self.channel.get_exchange(name, ensure=False)
        return self.exchanges[name]

    async def publish(self, row: OutboxMessage) -> None:
        """Returns once the broker confirmed the message into at least one queue."""
        exchange = await self._exchange(row.exchange)
        confirmation = await exchange.publish(
            to_amqp_message(row),
            routing_key=row.routing_key,
            mandatory=True,
            timeout=PUBLISH_TIMEOUT_SECONDS,
        )
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise NotConfirmed(f"broker answered {type(confirmation).__name__}")


class OutboxRelay:
    def __init__(self, sessions: SessionFactory, publisher: Publisher, *, batch_size: int) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.batch_size = batch_size

    async def relay_once(self) -> RoundResult:
        """Claim up to a batch of unsent rows, publish them, mark what the broker took."""
        async with transaction(self.sessions) as session:
            rows = list(
                await session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                    # rows that failed before go last, so they never starve the others
                    .order_by(OutboxMessage.publish_attempts, OutboxMessage.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            if not rows:
                OUTBOX_LAG.set(0)
                return RoundResult(claimed=0, sent=0)
            OUTBOX_LAG.set((utcnow() - min(row.created_at for row in rows)).total_seconds())
            outcomes = await asyncio.gather(
                *(self.publisher.publish(row) for row in rows), return_exceptions=True
            )
            sent = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
            if sent:
                await session.execute(
                    update(OutboxMessage).where(OutboxMessage.id.in_(sent)).values(sent_at=utcnow())
                )
            await self._record_failures(session, rows, outcomes)
        OUTBOX_PUBLISHED.inc(len(sent))
        OUTBOX_FAILURES.inc(len(rows) - len(sent))
        unroutable = sum(1 for outcome in outcomes if is_unroutable(outcome))
        return RoundResult(claimed=len(rows), sent=len(sent), unroutable=unroutable)

    async def _record_failures(
        self, session: AsyncSession, rows: Sequence[OutboxMessage], outcomes: Sequence[object]
    ) -> None:
        for row, outcome in zip(rows, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            error = f"{type(outcome).__name__}: {outcome}"[:MAX_ERROR_LENGTH]
            # log attempts 1, 2, 4, 8, ...: a stuck row must not flood the log
            if row.publish_attempts & (row.publish_attempts + 1) == 0:
                log.warning("outbox row %s not published: %s", row.id, error)
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id)
                .values(publish_attempts=OutboxMessage.publish_attempts + 1, last_error=error)
            )


async def open_publisher(amqp_url: str) -> tuple[AbstractRobustConnection, Publisher]:
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    return connection, Publisher(channel)
