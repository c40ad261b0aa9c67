"""The webhook service's SQL: one delivery row per event, leased for each attempt, and one attempt
row per HTTP attempt. A batch of messages costs one statement that creates-or-leases their
deliveries and one read of them; the attempts of a batch cost one update of the deliveries and
one insert of the attempts. A payout.processing event held out of order (sandbox chaos) asks once
a second whether the payout's final event was delivered (final_event_delivered).

A lease is a token and an expiry on the database's clock (the consumers' clocks disagree). It is
taken only where the delivery is not delivered at the message's generation and not leased by a
live attempt elsewhere; an attempt is recorded on the delivery only where its lease is still held.
"""

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Integer,
    Select,
    Subquery,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler

from contracts.clock import REAL_TIME, SANDBOX_TIME, MerchantTime
from contracts.db.engine import DATABASE_NOW, database_now_plus
from contracts.db.models import PayoutEvent, WebhookAttempt, WebhookDelivery, table_of
from contracts.messages import PayoutStatusChanged
from contracts.redelivery import busy_wait_count, retry_count
from contracts.topology import (
    EVENT_EXCHANGES,
    OWN_EVENT_HEADER,
    PARKED_HEADER,
    RETRY_CLOCK_OFFSET_HEADER,
    RETRY_DUE_HEADER,
)
from contracts.waiting_retries import unleased
from contracts.webhook_chaos import ChaosKind
from contracts.webhooks import (
    RESEND_GENERATION_HEADER,
    DeliveryStatus,
    resend_generation,
    retry_clock_offset,
    retry_due,
)
from webhook_service.chaos import FINAL_EVENT_TYPES
from webhook_service.sender import MAX_ERROR_LENGTH, AttemptResult


@dataclass(frozen=True)
class DeliveryRequest:
    """What one message asks: deliver `event`, unless it was delivered at `generation` or later.

    `ladder_attempt`: the message's attempt number on the retry ladder (1-based); `generation`:
    the resend it carries out (0 for the first delivery); `due_at`: for a waiting retry, when it
    was due on the merchant's sandbox clock (it is attempted only while the delivery still
    records that due time); `clock_offset`: the clock's offset its wait was measured under;
    `redelivered`: RabbitMQ delivers it again (a consumer died holding it); `original`: it is
    the event's own message (through the events exchange, or marked so when it was sent back to
    wait or copied by the relay's sweep before any attempt), not a retry, a resend, a replay or
    a redrive; `busy_waits`: how many times in a row it was sent back to wait for a slot of its
    merchant's slow endpoint; `from_parking_lot`: it was parked, and moved out by hand."""

    event: PayoutStatusChanged
    ladder_attempt: int
    generation: int
    due_at: datetime | None = None
    clock_offset: int | None = None
    redelivered: bool = False
    original: bool = False
    busy_waits: int = 0
    from_parking_lot: bool = False

    @classmethod
    def of_message(
        cls,
        event: PayoutStatusChanged,
        headers: Mapping[str, Any],
        *,
        redelivered: bool,
        exchange: str | None,
    ) -> "DeliveryRequest":
        """What the message carrying `event` with `headers`, through `exchange`, asks."""
        return cls(
            event,
            ladder_attempt=retry_count(headers) + 1,
            generation=resend_generation(headers.get(RESEND_GENERATION_HEADER)),
            due_at=retry_due(headers.get(RETRY_DUE_HEADER)),
            clock_offset=retry_clock_offset(headers.get(RETRY_CLOCK_OFFSET_HEADER)),
            redelivered=redelivered,
            original=exchange in EVENT_EXCHANGES or bool(headers.get(OWN_EVENT_HEADER)),
            busy_waits=busy_wait_count(headers),
            from_parking_lot=bool(headers.get(PARKED_HEADER)),
        )


@dataclass(frozen=True)
class Delivery:
    """A delivery row as read after leasing; an attempt writes back a new version of it."""

    id: str
    event_id: str
    generation: int
    lease_token: str | None
    # Written back by an attempt (RECORDED_COLUMNS):
    status: str
    attempts: int
    url: str | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None  # on the merchant's sandbox clock
    retry_count: int | None
    delivered_at: datetime | None
    delivered_generation: int
    updated_at: datetime
    # Read only: how long the lease still runs (database clock); None when not leased.
    lease_seconds_left: float | None = None
    # Read only: the merchant's sandbox clock offset (0 unless it advanced its clock).
    sandbox_offset_seconds: int = 0


RECORDED_COLUMNS = (
    "status",
    "attempts",
    "url",
    "last_status_code",
    "last_error",
    "next_attempt_at",
    "retry_count",
    "delivered_at",
    "delivered_generation",
    "updated_at",
)
_READ_ONLY = ("lease_seconds_left", "sandbox_offset_seconds")
_READ_COLUMNS = [f.name for f in fields(Delivery) if f.name not in _READ_ONLY]
_DELIVERIES = table_of(WebhookDelivery)


@dataclass(frozen=True)
class Attempt:
    """One attempt (an HTTP call, or a failure sandbox chaos injected), as its webhook_attempts
    row."""

    delivery_id: str
    attempt_number: int
    url: str
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None
    created_at: datetime
    chaos: str | None = None  # the ChaosKind that changed the attempt, if any


def new_lease_token() -> str:
    return uuid.uuid4().hex


async def lease_deliveries(
    session: AsyncSession,
    requests: Sequence[DeliveryRequest],
    *,
    token: str,
    lease_seconds: Mapping[str, int],
    now: datetime,
) -> None:
    """Create the missing delivery rows, leased, and lease the existing ones that are free, each
    for its own `lease_seconds` (by event id: one merchant's chaos hold lengthened the lease of
    every delivery in its batch, and a crash left them all waiting that much longer).

    One statement. IGNORE turns a row whose event is not recorded (foreign key) into a warning:
    that row is simply not created, and the read that follows finds no delivery for it."""
    rows = [
        _new_row(request, token=token, now=now) | {_LEASE_SECONDS: lease_seconds[request.event.id]}
        # One lock order for every consumer, so two leasing batches do not deadlock.
        for request in sorted(requests, key=lambda request: request.event.id)
    ]
    assert tuple(rows[0]) == (*_NEW_ROW_COLUMNS, _LEASE_SECONDS), "the lease is compiled with them"
    # Padded with copies of the last row: a copy finds the row its original just wrote or
    # leased (or, like it, no event) and changes nothing, as a copy of a message would.
    rows = padded(rows, rows[-1])
    await _run_compiled(session, _compiled_lease, len(rows), numbered(rows))


def _padded_sizes(max_batch: int) -> list[int]:
    """Every number of rows `padded` makes of batches of 1 to `max_batch` rows."""
    return sorted({_padded_size(rows) for rows in range(1, max_batch + 1)})


def compile_batch_statements(dialect: Dialect, max_batch: int) -> None:
    """Compile the lease and the recording for every batch size now (at startup, on a dialect
    that has connected once), not during the first burst of each size: their compilation grows
    with the size (about 50 ms each for 128 rows), and it was a fifteenth of the webhook
    service's CPU in a benchmark's first peak, when its queue grows fastest."""
    for size in _padded_sizes(max_batch):
        _compiled_lease(size, dialect)
        _compiled_record(size, dialect)


async def _run_compiled(
    session: AsyncSession,
    compiled_for: Callable[[int, Dialect], SQLCompiler],
    size: int,
    params: dict[str, Any],
) -> int:
    """Run the statement `compiled_for(size, dialect)` as SQL text; its rowcount (rows matched:
    the dialect connects with CLIENT_FOUND_ROWS). As text, no column default, `onupdate` or bind
    processor applies: the rows give every column the statement writes, as the driver takes it."""
    connection = await session.connection()
    compiled = compiled_for(size, connection.dialect)
    values = compiled.construct_params(params)
    assert values is not None and compiled.positiontup is not None  # a positional paramstyle
    result = await connection.exec_driver_sql(
        compiled.string, tuple(values[name] for name in compiled.positiontup)
    )
    return int(result.rowcount)


@functools.cache
def _compiled_lease(size: int, dialect: Dialect) -> SQLCompiler:
    """The lease of `size` deliveries (rows of _new_row's columns), compiled once per size.
    SQLAlchemy caches no multi-row INSERT (it has no cache key): left to it, every batch was
    compiled anew, a tenth of the webhook service's CPU."""
    defaulted = {column.name for column in _DELIVERIES.c if column.default is not None}
    assert defaulted <= set(_NEW_ROW_COLUMNS), f"not given: {defaulted - set(_NEW_ROW_COLUMNS)}"
    return _compiled(_lease_statement(size), dialect)


@functools.cache
def _compiled_record(size: int, dialect: Dialect) -> SQLCompiler:
    """The recording of `size` deliveries, compiled once per size."""
    return _compiled(_record_statement(size), dialect)


def _compiled(statement: Insert | Update, dialect: Dialect) -> SQLCompiler:
    # The SQL depends on the server's version, which the dialect learns on its first connection.
    assert dialect.server_version_info is not None, "compiled before the dialect connected"
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    return compiled


def _lease_statement(size: int) -> Insert:
    statement = mysql_insert(_DELIVERIES).prefix_with("IGNORE")
    statement = statement.values(
        [
            {name: numbered_parameter(name, row) for name in _NEW_ROW_COLUMNS}
            | {
                "leased_until": database_now_plus(
                    bindparam(f"row{row}_{_LEASE_SECONDS}", type_=Integer)
                )
            }
            for row in range(size)
        ]
    )
    asked = statement.inserted
    # Neither delivered at the generation asked nor parked: every path that sends a parked
    # delivery again (a resend, a recover, the parking lot's replay) reopens it to PENDING
    # first, so a message finding it parked is a late copy of one its ladder already took.
    undelivered = or_(
        and_(
            _DELIVERIES.c.status != DeliveryStatus.DELIVERED.value,
            _DELIVERIES.c.status != DeliveryStatus.PARKED.value,
        ),
        and_(
            _DELIVERIES.c.status == DeliveryStatus.DELIVERED.value,
            _DELIVERIES.c.delivered_generation < asked.generation,
        ),
    )
    # A waiting retry's copy (next_attempt_at: its due time) only while the delivery still
    # waits for that very retry; a message without one (the event's own, a resend) only before
    # the ladder started: a copy of the event's message that came once the first attempt had
    # failed made an attempt of its own, outside the ladder (which took a step more to park).
    retrying = _DELIVERIES.c.status == DeliveryStatus.RETRYING.value
    still_due = or_(
        and_(asked.next_attempt_at.is_(None), ~retrying),
        and_(retrying, _DELIVERIES.c.next_attempt_at == asked.next_attempt_at),
    )
    return statement.on_duplicate_key_update(
        # In this order: both MySQL and MariaDB assign left to right, so the second
        # assignment sees the token the first one may have set.
        [
            (
                "lease_token",
                func.if_(
                    and_(unleased(), undelivered, still_due),
                    asked.lease_token,
                    _DELIVERIES.c.lease_token,
                ),
            ),
            (
                "leased_until",
                func.if_(
                    _DELIVERIES.c.lease_token == asked.lease_token,
                    asked.leased_until,
                    _DELIVERIES.c.leased_until,
                ),
            ),
        ]
    )


def numbered_parameter(name: str, row: int) -> BindParameter[Any]:
    """Row `row`'s value of column `name` in a statement built once per number of rows."""
    return bindparam(f"row{row}_{name}", type_=_DELIVERIES.c[name].type)


def numbered(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of numbered_parameter's statements."""
    return {
        f"row{index}_{name}": value for index, row in enumerate(rows) for name, value in row.items()
    }


def padded(rows: list[dict[str, Any]], filler: dict[str, Any]) -> list[dict[str, Any]]:
    """`rows` and as many `filler` rows after them as make a power of two: a statement built
    per number of rows is built, keyed and compiled for 8 sizes up to 128, not for 128 (each
    size's first batch paid for it: a tenth of the service's CPU in a ten-second burst)."""
    return rows + [filler] * (_padded_size(len(rows)) - len(rows))


def _padded_size(rows: int) -> int:
    """The power of two `padded` makes of `rows` rows."""
    return 1 << (rows - 1).bit_length()


# A lease row's own lease length (seconds): a parameter of its leased_until, not a column.
_LEASE_SECONDS = "lease_seconds"
# What _new_row gives: the columns the lease is compiled with (ahead of any batch).
_NEW_ROW_COLUMNS = (
    "id",
    "event_id",
    "merchant_id",
    "payout_id",
    "event_type",
    "status",
    "attempts",
    "next_attempt_at",
    "generation",
    "delivered_generation",
    "lease_token",
    "created_at",
    "updated_at",
)


def _new_row(request: DeliveryRequest, *, token: str, now: datetime) -> dict[str, Any]:
    event = request.event
    return {
        "id": str(uuid.uuid4()),
        "event_id": event.id,
        "merchant_id": event.merchant_id,
        "payout_id": event.payout.id,
        "event_type": event.type.value,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        # What VALUES(next_attempt_at) means on a duplicate: the due time of the retry the
        # message is (a new row is only ever made by a first delivery, without one).
        "next_attempt_at": request.due_at,
        # The generation the message asks for: what a new row starts at (only a resend asks for
        # more than 0, and its row exists), and what VALUES(generation) means on a duplicate.
        "generation": request.generation,
        "delivered_generation": 0,
        "lease_token": token,
        "created_at": now,
        "updated_at": now,
    }


def _read_deliveries(time: MerchantTime) -> Select[Any]:
    return select(
        *(_DELIVERIES.c[name] for name in _READ_COLUMNS),
        func.timestampdiff(
            literal_column("MICROSECOND"), DATABASE_NOW, _DELIVERIES.c.leased_until
        ).label("lease_microseconds_left"),
        time.offset_of(_DELIVERIES.c.merchant_id).label("sandbox_offset_seconds"),
    ).where(_DELIVERIES.c.event_id.in_(bindparam("b_event_ids", expanding=True)))


# Built once, on the Core table: a batch neither rebuilds the read nor walks it for its cache key.
_READ_DELIVERIES = {time: _read_deliveries(time) for time in (SANDBOX_TIME, REAL_TIME)}


async def deliveries_of(
    session: AsyncSession, event_ids: Sequence[str], time: MerchantTime
) -> dict[str, Delivery]:
    """The delivery of each event that has one, by event id (its merchant's clock offset on
    `time`)."""
    rows = await session.execute(_READ_DELIVERIES[time], {"b_event_ids": list(event_ids)})
    deliveries = {}
    for row in rows:
        columns = dict(row._mapping)
        left = columns.pop("lease_microseconds_left")
        columns["sandbox_offset_seconds"] = int(columns["sandbox_offset_seconds"])
        deliveries[row.event_id] = Delivery(
            **columns, lease_seconds_left=None if left is None else left / 1_000_000
        )
    return deliveries


async def record_attempts(
    session: AsyncSession, deliveries: Sequence[Delivery], attempts: Sequence[Attempt]
) -> int:
    """Write each delivery's new state where its lease is still held (and release the lease),
    then every attempt: two statements. Returns how many deliveries were still held."""
    rows = [
        {name: getattr(delivery, name) for name in _RECORD_ROW_COLUMNS}
        # In event order, the order a lease locks rows in: no deadlock with a concurrent lease.
        for delivery in sorted(deliveries, key=lambda delivery: delivery.event_id)
    ]
    rows = padded(rows, _NO_DELIVERY)
    held = await _run_compiled(session, _compiled_record, len(rows), numbered(rows))
    if attempts:  # after the update: its row lock covers the attempts' foreign-key checks
        # An executemany of one cached INSERT: the driver sends it as one multi-row statement.
        await session.execute(_INSERT_ATTEMPTS, [asdict(a) for a in attempts])
    return held


_RECORD_ROW_COLUMNS = ("id", "lease_token", "generation", *RECORDED_COLUMNS)
_NO_DELIVERY = dict.fromkeys(_RECORD_ROW_COLUMNS)  # a NULL id matches no delivery
_INSERT_ATTEMPTS = insert(table_of(WebhookAttempt))


def _record_statement(size: int) -> Update:
    """The recording of `size` deliveries. The new states are a derived table (SELECT ...
    UNION ALL SELECT ...: both MySQL and MariaDB accept it, unlike a VALUES table)."""
    selects = [
        select(*(numbered_parameter(name, row).label(name) for name in _RECORD_ROW_COLUMNS))
        for row in range(size)
    ]
    recorded = (selects[0] if size == 1 else union_all(*selects)).subquery("recorded")
    return (
        update(_DELIVERIES)
        .where(
            _DELIVERIES.c.id == recorded.c.id,
            _DELIVERIES.c.lease_token == recorded.c.lease_token,
        )
        .values(_recorded_values(recorded) | {"lease_token": None, "leased_until": None})
    )


def _resent_meanwhile(recorded: Subquery) -> ColumnElement[bool]:
    """A failed attempt of a delivery the merchant sent again (a resend raised its generation)
    while the attempt was in flight: the delivery waits for that resend (PENDING), not for a
    retry nor parked. A message without a due time finding it RETRYING or PARKED is taken for
    a late copy and acked, and the resend was lost."""
    return and_(
        or_(  # not IN: the statement is compiled once, without expanding parameters
            recorded.c.status == DeliveryStatus.PARKED.value,
            recorded.c.status == DeliveryStatus.RETRYING.value,
        ),
        _DELIVERIES.c.generation != recorded.c.generation,
    )


def _recorded_values(recorded: Subquery) -> dict[str, ColumnElement[Any]]:
    values: dict[str, ColumnElement[Any]] = {name: recorded.c[name] for name in RECORDED_COLUMNS}
    resent = _resent_meanwhile(recorded)
    values["status"] = func.if_(resent, DeliveryStatus.PENDING.value, recorded.c.status)
    values["next_attempt_at"] = func.if_(resent, None, recorded.c.next_attempt_at)
    return values


def after_attempt(delivery: Delivery, url: str, result: AttemptResult) -> Delivery:
    return replace(
        delivery,
        attempts=delivery.attempts + 1,
        url=url,
        last_status_code=result.status_code,
        last_error=result.error,
    )


def after_duplicate(delivery: Delivery) -> Delivery:
    """A duplicate sent after the delivering attempt is counted, and changes nothing else: the
    delivery stays DELIVERED, with the delivering attempt's status code."""
    return replace(delivery, attempts=delivery.attempts + 1)


def attempt_of(
    delivery: Delivery,
    url: str,
    result: AttemptResult,
    *,
    attempted_at: datetime,
    chaos: ChaosKind | None = None,
) -> Attempt:
    """The attempt row of `delivery` (as after_attempt or after_duplicate left it)."""
    return Attempt(
        delivery_id=delivery.id,
        attempt_number=delivery.attempts,
        url=url,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        response_excerpt=result.response_excerpt,
        created_at=attempted_at,
        chaos=None if chaos is None else chaos.value,
    )


def delivered(delivery: Delivery, now: datetime) -> Delivery:
    """The attempt honoured every resend asked before it was leased: the generation read then."""
    return replace(
        delivery,
        status=DeliveryStatus.DELIVERED.value,
        delivered_generation=delivery.generation,
        delivered_at=now,
        next_attempt_at=None,
        updated_at=now,
    )


def retrying(delivery: Delivery, now: datetime, *, due_at: datetime, retry_count: int) -> Delivery:
    """Waiting for the retry due at `due_at` (sandbox clock), whose message carries
    `retry_count`."""
    return replace(
        delivery,
        status=DeliveryStatus.RETRYING.value,
        next_attempt_at=due_at,
        retry_count=retry_count,
        updated_at=now,
    )


def parked(delivery: Delivery, now: datetime, *, reason: str | None = None) -> Delivery:
    return replace(
        delivery,
        status=DeliveryStatus.PARKED.value,
        next_attempt_at=None,
        updated_at=now,
        last_error=delivery.last_error if reason is None else reason[:MAX_ERROR_LENGTH],
    )


def already_delivered(delivery: Delivery, generation: int) -> bool:
    """Delivered, and (for a resend) by an attempt that honoured the message's generation."""
    return (
        delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_generation >= generation
    )


async def reopen_for_replay(
    session: AsyncSession, event_id: str, now: datetime, *, generation: int
) -> bool:
    """Whether a parked message of the event, asking for `generation`, is to be moved back: not
    when its delivery was already delivered for it (the webhook service would drop it). A
    PARKED delivery is reopened to PENDING here."""
    if await reopen_parked(session, event_id, now):
        return True
    delivery = (await deliveries_of(session, [event_id], REAL_TIME)).get(event_id)  # no clock
    return delivery is None or not already_delivered(delivery, generation)


async def reopen_parked(session: AsyncSession, event_id: str, now: datetime) -> bool:
    """PARKED -> PENDING when an operator moves the parked message back; False if not parked."""
    reopened = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.event_id == event_id,
            WebhookDelivery.status == DeliveryStatus.PARKED.value,
        )
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=None, updated_at=now)
    )
    return bool(reopened.rowcount)  # type: ignore[attr-defined]


async def final_event_delivered(session: AsyncSession, event_id: str) -> bool:
    """Whether a final event of the event's payout (succeeded, failed, reversed), recorded no
    earlier than this event, was delivered: one indexed read (deliveries by payout), no lock.

    No earlier: after a reinitiate, the failure that ended the previous attempt does not count
    (an outcome written in the processing event's own transaction is recorded after it)."""
    held = (
        select(PayoutEvent.payout_id, PayoutEvent.created_at)
        .where(PayoutEvent.id == event_id)
        .subquery("held")
    )
    final = (
        select(literal(1))
        .select_from(WebhookDelivery)
        .join(held, held.c.payout_id == WebhookDelivery.payout_id)
        .join(PayoutEvent, PayoutEvent.id == WebhookDelivery.event_id)
        .where(
            WebhookDelivery.event_type.in_(sorted(FINAL_EVENT_TYPES)),
            WebhookDelivery.status == DeliveryStatus.DELIVERED.value,
            PayoutEvent.created_at >= held.c.created_at,
        )
        .limit(1)
    )
    return await session.scalar(final) is not None
