"""The outbox relay: publishes committed outbox rows to RabbitMQ and marks them sent.

Rows are claimed in batches with `FOR UPDATE SKIP LOCKED`, so several relays share the work
without publishing a row twice in one round. Each row goes out persistent, `mandatory`, with
publisher confirms and `message_id` = the row id; the row is marked sent only after the broker
acked it with no return. The batch's publishes are pipelined (all in flight, then all confirms).

A row the broker refuses (returns it as unroutable, nacks it, or has no exchange of its name), or
whose message cannot be sent at all (a header AMQP cannot encode), is that row's problem: it
backs off on its own (`next_attempt_at`, doubling up to a cap) and after `max_attempts` refusals
it is parked for an operator (`payouts outbox list-parked`, `payouts outbox retry`). A publish
the broker never answered (timeout, lost connection) is the broker's problem: the row keeps its
turn and the relay loop backs off as a whole.

The row locks are the lease: a relay that dies mid-round loses its connection, the locks go with
it, and the next relay republishes those rows at once.

An idle relay (no rows for a while: the loop's PollPace says when) polls cheaply: a round first
asks `DueProbe` (one indexed read in autocommit, no transaction, no lock) and claims only when a
row is due. A busy relay claims at once, as it always did.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractRobustConnection,
)
from sqlalchemy import Integer, bindparam, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from contracts.amqp_connection import with_heartbeat
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, table_of
from contracts.pipeline_health import PARKED, UNSENT
from contracts.redelivery import message_log_context
from contracts.topology import DEFAULT_EXCHANGE
from processor_service.metrics import (
    OUTBOX_FAILURES,
    OUTBOX_LAG,
    OUTBOX_PARKED,
    OUTBOX_PUBLISHED,
)

log = logging.getLogger("outbox-relay")

PUBLISH_TIMEOUT_SECONDS = 10.0
MAX_ERROR_LENGTH = 500
FIRST_BACKOFF = timedelta(seconds=1)
MAX_BACKOFF = timedelta(minutes=5)


@dataclass(frozen=True)
class RoundResult:
    claimed: int
    sent: int
    unanswered: int = 0  # publishes the broker never answered: an outage, not those rows' fault


class NotConfirmed(Exception):
    """The broker answered the publish with something other than an ack."""


class MissingExchange(Exception):
    """The broker has no exchange of the row's name (an operator deleted it, say)."""


def names_missing_exchange(error: object, exchange: str) -> bool:
    """A channel the broker closed because `exchange` does not exist. It fails every publish in
    flight on the channel with the same error, which names the exchange."""
    return isinstance(
        error, aiormq.exceptions.ChannelNotFoundEntity
    ) and f"no exchange '{exchange}'" in str(error)


class Unsendable(Exception):
    """The message cannot be sent at all: a header AMQP cannot encode (an integer past 64 bits,
    which the JSON column takes)."""


def refused_by_broker(row: OutboxMessage, outcome: object) -> bool:
    """The publish failed because of this very message: the broker returned it (no queue bound
    for its routing key), nacked it (e.g. a full queue) or has no exchange of its name, or it
    cannot be sent at all. Each is the row's problem; another row's missing exchange is not, nor
    is anything else (a timeout, a lost connection: the broker never answered)."""
    if isinstance(outcome, aiormq.exceptions.ChannelNotFoundEntity):
        return names_missing_exchange(outcome, row.exchange)
    return isinstance(
        outcome, aiormq.exceptions.DeliveryError | NotConfirmed | MissingExchange | Unsendable
    )


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th refusal: 1 s, 2 s, 4 s, ... up to MAX_BACKOFF (the
    exponent is capped too, so no count can overflow the arithmetic)."""
    doublings = min(attempts - 1, 20)
    return min(FIRST_BACKOFF * (1 << doublings), MAX_BACKOFF)


def error_text(error: BaseException) -> str:
    """Fits `last_error` whatever the exception says: its write must never fail the batch."""
    text = f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]
    return text.encode("utf-8", "replace").decode()


_OUTBOX = table_of(OutboxMessage)
_DUE = (
    _OUTBOX.c.sent_at.is_(None),
    _OUTBOX.c.parked_at.is_(None),
    _OUTBOX.c.next_attempt_at <= bindparam("now"),
)
# The claim's condition on the same index, without the lock: is any row due?
ANY_DUE = select(literal(1)).where(*_DUE).limit(1)

# Due rows in `ix_outbox_claim` order: never-tried rows first (due since the epoch), then rows
# whose backoff is over, so a failing row never starves the others. Built once (parameters: now,
# batch_size), as the UPDATE below: a round neither rebuilds them nor walks them for cache keys.
CLAIM = (
    select(OutboxMessage)
    .where(*_DUE)
    .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
    .limit(bindparam("batch_size", type_=Integer))
    .with_for_update(skip_locked=True)
)
# On the Core table: the ORM's bulk UPDATE machinery was a twentieth of the relay's CPU.
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(sent_at=bindparam("now"))
)


class DueProbe:
    """Whether the outbox holds a due row: one read on a connection of its own, in autocommit,
    so that asking costs one statement and no transaction. A failed read drops the connection
    (a restarted server leaves it dead); the next read opens another."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None

    async def anything_due(self, now: datetime) -> bool:
        try:
            if self._connection is None:
                connection = await self.engine.connect()
                self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            found = await self._connection.execute(ANY_DUE, {"now": now})
            return found.first() is not None
        except Exception:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already dead, most likely
                await connection.close()


def _nothing_due() -> RoundResult:
    return RoundResult(claimed=0, sent=0)


# Not the parked rows: `payouts outbox retry` sends those.
OLDEST_UNSENT = select(func.min(OutboxMessage.created_at)).where(UNSENT)


async def measure_outbox_lag(sessions: SessionFactory) -> None:
    """`payouts_outbox_lag_seconds`: the age of the oldest unsent row. Read from the claimed
    batches, it was 0 whenever no row was due, such as while every unsent row backed off after
    the broker refused it (metrics review)."""
    async with sessions() as session:
        oldest = await session.scalar(OLDEST_UNSENT)
    OUTBOX_LAG.set(0 if oldest is None else (utcnow() - oldest).total_seconds())


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


# Confirms, and a return raised: a row is sent once the broker took it into a queue.
CHANNEL_OPTIONS: Final = {"publisher_confirms": True, "on_return_raises": True}


class Publisher:
    """One confirmed channel; each exchange looked up once, and checked to exist first on a
    channel of its own: a publish to a missing exchange makes the broker close the publishing
    channel, failing every publish in flight on it (the whole round, each time that row is
    tried again)."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel
        self.exchanges: dict[str, AbstractExchange] = {}
        self._lookup = asyncio.Lock()
        self._nacked = False

    async def renew_channel_if_nacked(self) -> None:
        """A new channel after one the broker nacked (between rounds: nothing is in flight). A
        quorum queue that rejected a channel's publishes while full kept rejecting that channel
        once an operator lifted its limit, while a new channel's were taken: the rows backed off
        until they were parked, and only a restart of the relay sent them."""
        if not self._nacked:
            return
        nacked, self.channel = self.channel, await self.connection.channel(**CHANNEL_OPTIONS)
        self.exchanges.clear()
        self._nacked = False
        with contextlib.suppress(Exception):
            await nacked.close()

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == DEFAULT_EXCHANGE:
            return self.channel.default_exchange
        if name not in self.exchanges:
            async with self._lookup:  # one check per name, however many rows wait for it
                if name not in self.exchanges:
                    await self._check_exists(name)
                    self.exchanges[name] = await self.channel.get_exchange(name, ensure=False)
        return self.exchanges[name]

    async def _check_exists(self, name: str) -> None:
        try:
            async with self.connection.channel(publisher_confirms=False) as probe:
                await probe.get_exchange(name, ensure=True)  # a passive declare
        except aiormq.exceptions.ChannelNotFoundEntity as missing:
            raise MissingExchange(str(missing)) from missing

    async def publish(self, row: OutboxMessage) -> None:
        """Returns once the broker confirmed the message into at least one queue."""
        exchange = await self._exchange(row.exchange)
        try:
            confirmation = await exchange.publish(
                to_amqp_message(row),
                routing_key=row.routing_key,
                mandatory=True,
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            if names_missing_exchange(error, row.exchange):  # deleted since it was looked up
                self.exchanges.pop(row.exchange, None)
            raise
        except aiormq.exceptions.DeliveryError as error:
            self._nacked |= isinstance(error.frame, aiormq.spec.Basic.Nack)
            raise
        except (TypeError, ValueError) as error:  # pamqp, encoding the message's frames
            raise Unsendable(f"{type(error).__name__}: {error}") from error
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            self._nacked = True
            raise NotConfirmed(f"broker answered {type(confirmation).__name__}")


class OutboxRelay:
    def __init__(
        self,
        sessions: SessionFactory,
        publisher: Publisher,
        probe: DueProbe,
        *,
        batch_size: int,
        max_attempts: int,
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.probe = probe
        self.batch_size = batch_size
        self.max_attempts = max_attempts

    async def relay_once(self, *, probe_first: bool = False) -> RoundResult:
        """Claim up to a batch of due rows, publish them, then mark what the broker took and back
        off what it refused, in the claim's transaction. With `probe_first` (an idle relay), only
        if the probe finds a row due: an empty poll is then one read, not a claim and its commit."""
        if probe_first and not await self.probe.anything_due(utcnow()):
            return _nothing_due()
        await self.publisher.renew_channel_if_nacked()
        async with transaction(self.sessions) as session:
            due = {"now": utcnow(), "batch_size": self.batch_size}
            rows = list(await session.scalars(CLAIM, due))
            if not rows:
                return _nothing_due()
            outcomes = await asyncio.gather(
                *(self.publisher.publish(row) for row in rows), return_exceptions=True
            )
            results = list(zip(rows, outcomes, strict=True))
            sent = [row.id for row, outcome in results if outcome is None]
            failed = [(row, error) for row, error in results if error is not None]
            await self._record(session, sent, failed)
        unanswered = [error for row, error in failed if not refused_by_broker(row, error)]
        if unanswered:
            log.warning(
                "%d outbox row(s) not published, the broker did not answer: %s",
                len(unanswered),
                error_text(unanswered[0]),
            )
        OUTBOX_PUBLISHED.inc(len(sent))
        OUTBOX_FAILURES.inc(len(failed))
        return RoundResult(claimed=len(rows), sent=len(sent), unanswered=len(unanswered))

    async def _record(
        self,
        session: AsyncSession,
        sent: Sequence[int],
        failed: Sequence[tuple[OutboxMessage, BaseException]],
    ) -> None:
        """Every value written here is bounded (capped count, truncated error, capped wait), so
        no row can fail this transaction and take the batch's sent marks with it."""
        now = utcnow()
        if sent:
            await session.execute(_MARK_SENT, {"ids": list(sent), "now": now})
        for row, error in failed:
            if refused_by_broker(row, error):
                await self._back_off(session, row, error_text(error), now)

    async def _back_off(
        self, session: AsyncSession, row: OutboxMessage, error: str, now: datetime
    ) -> None:
        """Counts the refusal, schedules the next attempt, parks the row after its last one."""
        attempts = min(row.publish_attempts + 1, self.max_attempts)
        parked = attempts >= self.max_attempts
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .values(
                publish_attempts=attempts,
                last_error=error,
                next_attempt_at=now + backoff(attempts),
                parked_at=now if parked else None,
            )
        )
        with message_log_context(row.headers, row.correlation_id):
            if parked:
                OUTBOX_PARKED.inc()
                log.error("outbox row %s parked after %d refusals: %s", row.id, attempts, error)
            else:
                wait = backoff(attempts).total_seconds()
                log.warning(
                    "outbox row %s refused (%d), next try in %.0fs: %s",
                    *(row.id, attempts, wait, error),
                )


async def retry_parked(session: AsyncSession, row_id: int | None) -> int:
    """Hands parked rows back to the relay (one, or all for None): due at once, with a fresh
    count of attempts. The number of rows unparked."""
    condition = PARKED
    if row_id is not None:
        condition &= OutboxMessage.id == row_id
    result = await session.execute(
        update(OutboxMessage)
        .where(condition)
        .values(parked_at=None, publish_attempts=0, next_attempt_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def open_publisher(amqp_url: str) -> tuple[AbstractRobustConnection, Publisher]:
    connection = await aio_pika.connect_robust(with_heartbeat(amqp_url))
    channel = await connection.channel(**CHANNEL_OPTIONS)
    return connection, Publisher(connection, channel)
