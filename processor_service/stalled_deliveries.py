"""Webhook deliveries waiting for a message no queue carries any more, sent one again: part of
the outbox relay's housekeeping.

An event reaches its merchant through a message: the event's own, which the relay publishes to
the webhook queue, or a resend's. A webhook service that crash-loops (killed again and again
while it holds its prefetch) returns the messages it holds unacknowledged each time, and before
RabbitMQ 4.x every return counts as a delivery: at the queue's delivery limit they go to
`webhooks.payout-events.dead`, with nothing wrong with them. Two states are left behind, and
only an operator's `payouts dlq redrive` would move them:
- an event without a delivery row: its message died before any webhook batch leased it;
- a PENDING delivery no attempt holds: its attempt died with its consumer, or the merchant sent
  it again (a resend, a replay of the parking lot), and its message died since.
(A RETRYING delivery whose retry was lost has its own sweep: processor_service.stalled_retries.)

So every little while the relay looks for events recorded more than
`PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS` ago (within the last LOOKBACK) without a delivery row,
and for PENDING deliveries unchanged and held by no attempt for that long, and sends each a copy
of its event straight to the webhook queue, at the delivery's generation. An event without a
row gets its PENDING row in the same transaction, so that each copy is recorded on a row
(`copied_at`): a delivery is copied again only when the copy has not moved it on within
RECOPY_AFTER_STALLS stall times (a webhook service still crash-looping dead-letters copies too).
A copy that finds the delivery delivered, or held by a live attempt, changes nothing; a webhook
service merely stopped for longer than the stall time finds each waiting event twice in its
queue, and the second is acked as already delivered.
"""

import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    exists,
    insert,
    or_,
    select,
    update,
)

from contracts.db.engine import DATABASE_NOW, SessionFactory, transaction, utcnow
from contracts.db.models import PayoutEvent, WebhookDelivery, table_of
from contracts.outbox import write_outbox
from contracts.waiting_retries import RECOPY_AFTER_STALLS, event_copy, unleased
from contracts.webhooks import RESEND_GENERATION_HEADER, DeliveryStatus
from processor_service.metrics import WEBHOOK_DELIVERIES_RESENT

log = logging.getLogger("outbox-relay")

BATCH = 500
# How far back events are looked at: the relay sweeps every minute or so, and an event swept
# once has a row from then on, so this only needs to cover the relay being down.
LOOKBACK = timedelta(hours=24)

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


def events_without_delivery(
    stalled_seconds: int,
) -> Select[str, str, str, str, bytes]:
    """The events recorded between LOOKBACK and `stalled_seconds` ago that no delivery row was
    made for, oldest first."""
    now = utcnow()
    return (
        select(
            PayoutEvent.id,
            PayoutEvent.merchant_id,
            PayoutEvent.payout_id,
            PayoutEvent.type,
            PayoutEvent.body,
        )
        .where(
            PayoutEvent.created_at >= now - LOOKBACK,
            PayoutEvent.created_at <= now - timedelta(seconds=stalled_seconds),
            ~exists().where(WebhookDelivery.event_id == PayoutEvent.id),
        )
        .order_by(PayoutEvent.created_at)
        .limit(BATCH)
    )


def _stalled(stalled_seconds: int) -> ColumnElement[bool]:
    """PENDING and unchanged for `stalled_seconds`, held by no attempt, and not copied since it
    changed (or copied RECOPY_AFTER_STALLS stall times ago, and still here)."""
    now = utcnow()
    return and_(
        WebhookDelivery.status == DeliveryStatus.PENDING.value,
        WebhookDelivery.updated_at <= now - timedelta(seconds=stalled_seconds),
        unleased(),
        or_(
            WebhookDelivery.copied_at.is_(None),
            WebhookDelivery.copied_at < WebhookDelivery.updated_at,
            WebhookDelivery.copied_at
            <= now - timedelta(seconds=RECOPY_AFTER_STALLS * stalled_seconds),
        ),
    )


def stalled_pending(stalled_seconds: int) -> Select[str, str, str, int, bytes]:
    """The stalled PENDING deliveries, with their event."""
    return (
        select(
            WebhookDelivery.id,
            WebhookDelivery.merchant_id,
            WebhookDelivery.payout_id,
            WebhookDelivery.generation,
            PayoutEvent.body,
        )
        .join(PayoutEvent, PayoutEvent.id == WebhookDelivery.event_id)
        .where(_stalled(stalled_seconds))
        .limit(BATCH)
    )


def _copy(
    body: bytes, *, of: str, merchant_id: str, payout_id: str, generation: int
) -> dict[str, Any] | None:
    """The copy a delivery at `generation` waits for: the event's own message (generation 0),
    or a resend's."""
    return event_copy(
        body,
        of=of,
        payout_id=payout_id,
        merchant_id=merchant_id,
        correlation_id=None,
        headers={RESEND_GENERATION_HEADER: generation} if generation else {},
    )


async def _first_deliveries(sessions: SessionFactory, stalled_seconds: int) -> tuple[int, bool]:
    """A row and a copy for each of a batch of events without a delivery; how many copies, and
    whether the batch was full."""
    async with transaction(sessions) as session:
        events: list[Row[str, str, str, str, bytes]] = list(
            await session.execute(events_without_delivery(stalled_seconds))
        )
        copies = [
            copy
            for event in events
            if (
                copy := _copy(
                    event.body,
                    of=f"event {event.id}",
                    merchant_id=event.merchant_id,
                    payout_id=event.payout_id,
                    generation=0,
                )
            )
            is not None
        ]
        if events:  # a row even for an event that does not read: it is not looked at again
            await session.execute(
                _NEW_ROWS,
                [
                    {
                        "b_id": str(uuid.uuid4()),
                        "b_event_id": event.id,
                        "b_merchant_id": event.merchant_id,
                        "b_payout_id": event.payout_id,
                        "b_type": event.type,
                    }
                    for event in events
                ],
            )
        await write_outbox(session, copies)
    return len(copies), len(events) == BATCH


async def _pending_again(sessions: SessionFactory, stalled_seconds: int) -> tuple[int, bool]:
    """A copy for each of a batch of stalled PENDING deliveries, locked (skipping any a webhook
    batch holds: the sweep never waits for a lock) and judged again; how many copies, and
    whether the batch was full."""
    async with transaction(sessions) as session:
        candidates = list(await session.execute(stalled_pending(stalled_seconds)))
        if not candidates:
            return 0, False
        ids = [row.id for row in candidates]
        still = set(
            await session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.id.in_(ids), _stalled(stalled_seconds))
                .with_for_update(skip_locked=True)
            )
        )
        copied, copies = [], []
        for row in candidates:
            copy = _copy(
                row.body,
                of=f"webhook delivery {row.id}",
                merchant_id=row.merchant_id,
                payout_id=row.payout_id,
                generation=row.generation,
            )
            if row.id in still and copy is not None:
                copied.append(row.id)
                copies.append(copy)
        await write_outbox(session, copies)
        if copied:
            await session.execute(_RECORD_COPIED, {"b_ids": copied})
    return len(copies), len(candidates) == BATCH and bool(copies)


async def resend_stalled_deliveries(sessions: SessionFactory, *, stalled_seconds: int) -> int:
    """Send a copy for every event without a delivery and every stalled PENDING delivery, a
    batch per transaction; how many."""
    sent = 0
    for batch in (_first_deliveries, _pending_again):
        more = True
        while more:
            count, more = await batch(sessions, stalled_seconds)
            sent += count
    if sent:
        WEBHOOK_DELIVERIES_RESENT.inc(sent)
        log.warning(
            "sent %d stalled webhook deliveries again: their message is lost, dead-lettered"
            " or late",
            sent,
        )
    return sent
