"""Copies of waiting webhook retries, sent straight to the webhook queue through the outbox.

A waiting retry is a message in a RabbitMQ TTL queue: it cannot be taken out early, and it is
never published when the webhook service dies between recording a failed attempt and publishing
the retry. So a RETRYING delivery row records what that message carries (its due time on the
merchant's sandbox clock, its retry count and generation), and an exact copy can be sent from the
row:

- when the merchant advances its sandbox clock past the due time
  (api_service.sandbox.webhook_retries);
- when the retry is long overdue and no attempt holds its delivery: its message was lost
  (processor_service.stalled_retries).

Whichever copy of a retry comes first is attempted; another finds that the delivery no longer
waits for that due time and is dropped (webhook_service.delivery.superseded). A delivery records
the due time it was copied for and when (`copied_due_at`, `copied_at`): a copy goes through the
outbox and a quorum queue and is not lost, so a due time is copied again only when its copy has
not moved the delivery on for RECOPY_AFTER_STALLS stall times (the copy was parked after failing
on the database every time, say, or dead-lettered).
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import MerchantTime
from contracts.db.engine import DATABASE_NOW, database_now_plus, plus_seconds, seconds_between
from contracts.db.models import Payout, PayoutEvent, WebhookDelivery, table_of
from contracts.messages import PayoutStatusChanged
from contracts.outbox import outbox_row, write_outbox
from contracts.topology import DEFAULT_EXCHANGE, RETRY_COUNT_HEADER
from contracts.webhooks import (
    DeliveryStatus,
    resend_generation_headers,
    resend_routing_key,
    retry_due_headers,
)

log = logging.getLogger("webhook-retries")

# id, payout_id, merchant_id, next_attempt_at, retry_count, generation, body, clock_offset,
# in_bulk
WaitingRetry = Row[str, str, str, datetime | None, int | None, int, bytes, int, bool]


def in_bulk_of(payout_id: SQLColumnExpression[str]) -> ColumnElement[bool]:
    """Whether the payout travels in the bulk lanes (a scalar subquery): its webhooks' copies go
    to its lane's queue (contracts.webhooks.resend_routing_key)."""
    return select(Payout.in_bulk).where(Payout.id == payout_id).scalar_subquery()


async def payout_in_bulk(session: AsyncSession, payout_id: str | None) -> bool:
    """Whether the payout travels in the bulk lanes; False for none (a message without one)."""
    return bool(await session.scalar(select(in_bulk_of(literal(payout_id)))))


def waiting_retries(
    condition: ColumnElement[bool], time: MerchantTime
) -> Select[str, str, str, datetime | None, int | None, int, bytes, int, bool]:
    """The RETRYING deliveries that meet `condition`, with what their copies need, in due order
    (their merchant's clock offset on `time`)."""
    return (
        select(
            WebhookDelivery.id,
            WebhookDelivery.payout_id,
            WebhookDelivery.merchant_id,
            WebhookDelivery.next_attempt_at,
            WebhookDelivery.retry_count,
            WebhookDelivery.generation,
            PayoutEvent.body,
            time.offset_of(WebhookDelivery.merchant_id).label("clock_offset"),
            in_bulk_of(WebhookDelivery.payout_id).label("in_bulk"),
        )
        .join(PayoutEvent, PayoutEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.status == DeliveryStatus.RETRYING.value, condition)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    )


# A copy that has not moved its delivery on within this many stall times is sent again.
RECOPY_AFTER_STALLS = 12


def stalled_for(seconds: int, time: MerchantTime) -> ColumnElement[bool]:
    """A retry whose message looks lost (overdue), and not copied (copyable_after)."""
    late = seconds_between(
        WebhookDelivery.next_attempt_at, time.now_of(WebhookDelivery.merchant_id)
    )
    return and_(overdue(late - seconds, time), copyable_after(seconds))


def overdue(late_seconds: ColumnElement[int], time: MerchantTime) -> ColumnElement[bool]:
    """A retry `late_seconds` past its due time on its merchant's clock, and so not attempted
    when it should have been: later than a quarter of its wait (a live retry waits in its tier's
    TTL queue behind messages that expire later, up to a fifth of the tier's delay; a
    Retry-After wait held in a longer tier can be later still), its delivery held by no
    attempt."""
    delivery = WebhookDelivery
    offset = time.offset_of(delivery.merchant_id)
    # Its wait, from when the attempt before it was recorded (on the sandbox clock of now).
    waited = seconds_between(plus_seconds(offset, delivery.updated_at), delivery.next_attempt_at)
    return and_(late_seconds > func.greatest(waited, 0) / 4, unleased())


def unleased() -> ColumnElement[bool]:
    """No attempt holds the delivery: no lease, or one that ran out (its consumer died)."""
    return or_(WebhookDelivery.lease_token.is_(None), WebhookDelivery.leased_until <= DATABASE_NOW)


# How far back events without a delivery row are looked for (the relay's sweep, `payouts
# reconcile`): the relay sweeps every minute or so, and an event swept once has a row from then
# on, so this only needs to cover the relay being down.
UNDELIVERED_EVENTS_LOOKBACK = timedelta(hours=24)


def undelivered_event(since: datetime, until: datetime) -> ColumnElement[bool]:
    """An event recorded between `since` and `until` that no delivery row was made for: no
    webhook service took its message (ix_events_created)."""
    return and_(
        PayoutEvent.created_at >= since,
        PayoutEvent.created_at <= until,
        ~exists().where(WebhookDelivery.event_id == PayoutEvent.id),
    )


def pending_unattempted(since: datetime) -> ColumnElement[bool]:
    """PENDING (recorded, resent or replayed: not attempted since), unchanged since `since`, and
    held by no attempt: its message is lost, or no webhook service is taking it
    (ix_deliveries_status)."""
    return and_(
        WebhookDelivery.status == DeliveryStatus.PENDING.value,
        WebhookDelivery.updated_at <= since,
        unleased(),
    )


def not_copied() -> ColumnElement[bool]:
    """No copy was sent for the due time the delivery waits for."""
    return or_(
        WebhookDelivery.copied_due_at.is_(None),
        WebhookDelivery.copied_due_at != WebhookDelivery.next_attempt_at,
    )


def copyable_after(seconds: int) -> ColumnElement[bool]:
    """Not copied, or the copy sent has not moved the delivery on within RECOPY_AFTER_STALLS
    times `seconds`."""
    return or_(
        not_copied(),
        WebhookDelivery.copied_at <= database_now_plus(-RECOPY_AFTER_STALLS * seconds),
    )


async def send_copies(
    session: AsyncSession,
    rows: Sequence[WaitingRetry],
    *,
    correlation_id: str | None,
    clock_offset: int | None = None,
) -> list[str]:
    """Write to the outbox an exact copy of the waiting message of each row of waiting_retries,
    and record on each delivery the due time copied and when; the payouts of the copies.
    `clock_offset`: the offset the copies' waits were measured under (the clock's offset before
    an advance); None: each merchant's offset now. A row whose stored event no longer reads as
    one is logged and left out, but recorded as copied: the sweeps take their candidates in due
    order, a batch at a time, and a batch of such rows stood in front of every later one for
    ever. It is tried again (and logged again) when its copy is, after RECOPY_AFTER_STALLS."""
    copies, copied, payouts = [], [], []
    for row in rows:
        copy = event_copy(
            row.body,
            of=f"webhook delivery {row.id}",
            payout_id=row.payout_id,
            merchant_id=row.merchant_id,
            in_bulk=bool(row.in_bulk),
            correlation_id=correlation_id,
            headers=waiting_retry_headers(
                row.next_attempt_at,
                retry_count=row.retry_count,
                generation=row.generation,
                clock_offset=int(row.clock_offset) if clock_offset is None else clock_offset,
            ),
        )
        copied.append({"b_id": row.id, "b_due": row.next_attempt_at})
        if copy is not None:
            copies.append(copy)
            payouts.append(row.payout_id)
    if copies:
        await write_outbox(session, copies)
    if copied:
        await session.execute(_RECORD_COPIED, copied)
    return payouts


def event_copy(
    body: bytes,
    *,
    of: str,
    payout_id: str,
    merchant_id: str,
    in_bulk: bool,
    correlation_id: str | None,
    headers: dict[str, Any],
) -> dict[str, Any] | None:
    """The outbox row of a copy of the stored event `body`, straight to the webhook queue of the
    payout's lane (`in_bulk`) with `headers`; None when the body no longer reads as an event
    (logged, naming `of`), so that it never holds up the others."""
    try:
        event = PayoutStatusChanged.model_validate_json(body)
    except ValidationError as error:
        log.error("%s: its stored event does not read: %s", of, error)
        return None
    return outbox_row(
        event,
        body=body,
        exchange=DEFAULT_EXCHANGE,
        routing_key=resend_routing_key(in_bulk=in_bulk),
        payout_id=payout_id,
        merchant_id=merchant_id,
        correlation_id=correlation_id,
        extra_headers=headers,
        in_bulk=in_bulk,
    )


# The due time copied, as read, only where the delivery still waits for it: one that has moved
# on since keeps its own due time uncopied.
_DELIVERIES = table_of(WebhookDelivery)
_RECORD_COPIED = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("b_id"),
        _DELIVERIES.c.next_attempt_at == bindparam("b_due"),
    )
    .values(copied_due_at=bindparam("b_due"), copied_at=DATABASE_NOW)
)


def waiting_retry_headers(
    due_at: datetime, *, retry_count: int | None, generation: int, clock_offset: int
) -> dict[str, Any]:
    """The headers of the waiting retry's message."""
    return {
        RETRY_COUNT_HEADER: retry_count or 0,
        **resend_generation_headers(generation),
        **retry_due_headers(due_at, clock_offset=clock_offset),
    }
