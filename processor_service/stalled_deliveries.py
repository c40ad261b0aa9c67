"""Webhook deliveries waiting for a message no queue carries any more, sent one again: part of
the outbox relay's housekeeping.

An event reaches its merchant through a message: the event's own, which the relay publishes to
the webhook queue, or a resend's. A webhook service that crash-loops (killed again and again
while it holds its prefetch) returns the messages it holds unacknowledged each time, and before
RabbitMQ 4.3 every return counts as a delivery: at the queue's delivery limit they go to
`webhooks.payout-events.dead`, with nothing wrong with them. Two states are left behind, and
only an operator's `payouts dlq redrive` would move them:
- an event without a delivery row: its message died before any webhook batch leased it;
- a PENDING delivery no attempt holds: its attempt died with its consumer, or the merchant sent
  it again (a resend, a replay of the parking lot), and its message died since.
(A RETRYING delivery whose retry was lost has its own sweep: processor_service.stalled_retries.)

So every little while the relay looks for events recorded more than
`PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS` ago (within the last UNDELIVERED_EVENTS_LOOKBACK, and
since its last round) without a delivery row, and for PENDING deliveries unchanged and held by
no attempt for that long, and sends each a copy of its event straight to the webhook queue, at
the delivery's generation. An event without a row gets its PENDING row in the same transaction,
and only the sweep that made the row sends a copy (another relay's finds it made), so that each
copy is recorded on a row (`copied_at`): a delivery is copied again only when the copy has not
moved it on within RECOPY_AFTER_STALLS stall times (a webhook service still crash-looping
dead-letters copies too).

A copy that finds the delivery delivered, or held by a live attempt, changes nothing. The price
of a copy whose message was only late (a webhook service stopped for longer than the stall
time, its queue intact): the service finds the event twice. After a 2xx the second is acked as
delivered; after a failure it is a first delivery's copy, which may attempt the RETRYING delivery
before its retry is due (an extra attempt, the ladder started again), as a redelivered original
may: no second delivery, unless the 2xx's record came after its lease ran out (a database
slower than the lease's margin) and the copy took the lease over first.
"""

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)

from contracts.db.engine import DATABASE_NOW, SessionFactory, transaction, utcnow
from contracts.db.models import PayoutEvent, WebhookDelivery, table_of
from contracts.logging import some_of
from contracts.outbox import write_outbox
from contracts.topology import OWN_EVENT_HEADER, PAYOUT_ID_HEADER
from contracts.waiting_retries import (
    RECOPY_AFTER_STALLS,
    UNDELIVERED_EVENTS_LOOKBACK,
    event_copy,
    in_bulk_of,
    pending_unattempted,
    undelivered_event,
)
from contracts.webhooks import DeliveryStatus, resend_generation_headers
from processor_service.metrics import WEBHOOK_DELIVERIES_RESENT

log = logging.getLogger("outbox-relay")

BATCH = 500
# The correlation id of what this sweep sends (no request caused it): its messages, its log lines.
CORRELATION_ID = "sweep-stalled-deliveries"

_DELIVERIES = table_of(WebhookDelivery)
# An event's first delivery row, made by the sweep: PENDING, free, and copied now. IGNORE: a
# webhook batch that made the row meanwhile keeps its own (the copy then finds it).
_NEW_ROWS = (
    insert(_DELIVERIES)
    .prefix_with("IGNORE")
    .values(
        id=bindparam("b_id"),
        event_id=bindparam("b_event_id"),
        merchant_id=bindparam("b_merchant_id"),
        payout_id=bindparam("b_payout_id"),
        event_type=bindparam("b_type"),
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        generation=0,
        delivered_generation=0,
        created_at=DATABASE_NOW,
        updated_at=DATABASE_NOW,
        copied_at=DATABASE_NOW,
    )
)
_RECORD_COPIED = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(copied_at=DATABASE_NOW)
)


@dataclass
class EventsSwept:
    """Up to when every event is known to have a delivery row. A relay's first round reads the
    events of the whole UNDELIVERED_EVENTS_LOOKBACK; each later round only those recorded since
    the round before (every round read the whole day: 60,000 rows for nothing to sweep, with
    20,000 events)."""

    until: datetime | None = None


def events_without_delivery(
    since: datetime, until: datetime
) -> Select[str, str, str, str, bytes, bool]:
    """The events recorded between `since` and `until` that no delivery row was made for, oldest
    first."""
    return (
        select(
            PayoutEvent.id,
            PayoutEvent.merchant_id,
            PayoutEvent.payout_id,
            PayoutEvent.type,
            PayoutEvent.body,
            in_bulk_of(PayoutEvent.payout_id).label("in_bulk"),
        )
        .where(undelivered_event(since, until))
        .order_by(PayoutEvent.created_at)
        .limit(BATCH)
    )


def _stalled(stalled_seconds: int) -> ColumnElement[bool]:
    """PENDING and unchanged for `stalled_seconds`, held by no attempt, and not copied since it
    changed (or copied RECOPY_AFTER_STALLS stall times ago, and still here)."""
    now = utcnow()
    return and_(
        pending_unattempted(now - timedelta(seconds=stalled_seconds)),
        or_(
            WebhookDelivery.copied_at.is_(None),
            WebhookDelivery.copied_at < WebhookDelivery.updated_at,
            WebhookDelivery.copied_at
            <= now - timedelta(seconds=RECOPY_AFTER_STALLS * stalled_seconds),
        ),
    )


def stalled_pending(stalled_seconds: int) -> Select[str, str, str, int, int, bytes, bool]:
    """The stalled PENDING deliveries, with their event and their payout's lane."""
    return (
        select(
            WebhookDelivery.id,
            WebhookDelivery.merchant_id,
            WebhookDelivery.payout_id,
            WebhookDelivery.generation,
            WebhookDelivery.attempts,
            PayoutEvent.body,
            in_bulk_of(WebhookDelivery.payout_id).label("in_bulk"),
        )
        .join(PayoutEvent, PayoutEvent.id == WebhookDelivery.event_id)
        .where(_stalled(stalled_seconds))
        .limit(BATCH)
    )


def _copies(
    stalled: Iterable[tuple[str, bytes, str, str, int, bool, bool]],
) -> list[dict[str, Any]]:
    """The outbox rows of the copies of (what, its event, merchant, payout, generation, never
    attempted, in the bulk lane): the event's own message (generation 0) or a resend's; an event
    that does not read is left out. A copy of a delivery never attempted at generation 0 is the
    event's own (its first attempt is timed when the event happened on the sandbox clock); one a
    replay or a resend reopened starts its ladder now."""
    return [
        copy
        for of, body, merchant_id, payout_id, generation, unattempted, in_bulk in stalled
        if (
            copy := event_copy(
                body,
                of=of,
                payout_id=payout_id,
                merchant_id=merchant_id,
                in_bulk=in_bulk,
                correlation_id=CORRELATION_ID,
                headers={
                    **resend_generation_headers(generation),
                    **({OWN_EVENT_HEADER: 1} if unattempted and not generation else {}),
                },
            )
        )
        is not None
    ]


async def _first_deliveries(
    sessions: SessionFactory, since: datetime, until: datetime
) -> tuple[list[str], bool]:
    """A row and a copy for each of a batch of events without a delivery; the payouts of the
    copies, and whether the batch was full. Only the rows this transaction made are copied:
    another relay's sweep, or a webhook batch, that made one meanwhile sends its own message."""
    async with transaction(sessions) as session:
        events = list(await session.execute(events_without_delivery(since, until)))
        if not events:
            return [], False
        # A row even for an event that does not read: it is not looked at again.
        rows = {event.id: str(uuid.uuid4()) for event in events}
        await session.execute(
            _NEW_ROWS,
            [
                {
                    "b_id": rows[event.id],
                    "b_event_id": event.id,
                    "b_merchant_id": event.merchant_id,
                    "b_payout_id": event.payout_id,
                    "b_type": event.type,
                }
                for event in events
            ],
        )
        made = set(
            await session.scalars(
                select(WebhookDelivery.event_id).where(WebhookDelivery.id.in_(rows.values()))
            )
        )
        copies = _copies(
            (
                f"event {event.id}",
                event.body,
                event.merchant_id,
                event.payout_id,
                0,
                True,
                bool(event.in_bulk),
            )
            for event in events
            if event.id in made
        )
        await write_outbox(session, copies)
    return _payouts_of(copies), len(events) == BATCH


async def _pending_again(sessions: SessionFactory, stalled_seconds: int) -> tuple[list[str], bool]:
    """A copy for each of a batch of stalled PENDING deliveries, locked (skipping any a webhook
    batch holds: the sweep never waits for a lock) and judged again; the payouts of the copies,
    and whether the batch was full."""
    async with transaction(sessions) as session:
        candidates = list(await session.execute(stalled_pending(stalled_seconds)))
        if not candidates:
            return [], False
        ids = [row.id for row in candidates]
        still = set(
            await session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.id.in_(ids), _stalled(stalled_seconds))
                .with_for_update(skip_locked=True)
            )
        )
        # Recorded as copied even when its event does not read: it is not logged every round.
        copied = [row for row in candidates if row.id in still]
        copies = _copies(
            (
                f"webhook delivery {row.id}",
                row.body,
                row.merchant_id,
                row.payout_id,
                row.generation,
                row.attempts == 0,
                bool(row.in_bulk),
            )
            for row in copied
        )
        await write_outbox(session, copies)
        if copied:
            await session.execute(_RECORD_COPIED, {"b_ids": [row.id for row in copied]})
    return _payouts_of(copies), len(candidates) == BATCH and bool(copied)


def _payouts_of(copies: list[dict[str, Any]]) -> list[str]:
    return [copy["headers"][PAYOUT_ID_HEADER] for copy in copies]


async def _every_batch(batch: Callable[[], Awaitable[tuple[list[str], bool]]]) -> list[str]:
    """Run `batch` (the payouts of the copies sent, whether it was full) until one is not full;
    the payouts of every copy sent."""
    sent: list[str] = []
    more = True
    while more:
        copied, more = await batch()
        sent += copied
    return sent


async def resend_stalled_deliveries(
    sessions: SessionFactory, *, stalled_seconds: int, swept: EventsSwept | None = None
) -> int:
    """Send a copy for every event without a delivery and every stalled PENDING delivery, a
    batch per transaction; how many. `swept`: kept from round to round by the relay."""
    swept = swept or EventsSwept()
    until = utcnow() - timedelta(seconds=stalled_seconds)
    since = swept.until or until - UNDELIVERED_EVENTS_LOOKBACK
    sent = await _every_batch(lambda: _first_deliveries(sessions, since, until))
    swept.until = until
    sent += await _every_batch(lambda: _pending_again(sessions, stalled_seconds))
    if sent:
        WEBHOOK_DELIVERIES_RESENT.inc(len(sent))
        log.warning(
            "sent %d stalled webhook deliveries again: their message is lost, dead-lettered"
            " or late (payouts %s)",
            len(sent),
            some_of(sent),
        )
    return len(sent)
