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
the due time it was copied for (`copied_due_at`), and each due time is copied at most once: a
copy goes through the outbox and a quorum queue, and is not lost.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import offset_seconds_of, sandbox_now_of
from contracts.db.engine import DATABASE_NOW
from contracts.db.models import PayoutEvent, WebhookDelivery, table_of
from contracts.messages import PayoutStatusChanged
from contracts.outbox import outbox_row, write_outbox
from contracts.topology import DEFAULT_EXCHANGE, RETRY_COUNT_HEADER
from contracts.webhooks import (
    RESEND_GENERATION_HEADER,
    RESEND_ROUTING_KEY,
    DeliveryStatus,
    retry_due_headers,
)

# id, payout_id, merchant_id, next_attempt_at, retry_count, generation, body, clock_offset
WaitingRetry = Row[str, str, str, datetime | None, int | None, int, bytes, int]


def waiting_retries(
    condition: ColumnElement[bool],
) -> Select[str, str, str, datetime | None, int | None, int, bytes, int]:
    """The RETRYING deliveries that meet `condition`, with what their copies need, in due order."""
    return (
        select(
            WebhookDelivery.id,
            WebhookDelivery.payout_id,
            WebhookDelivery.merchant_id,
            WebhookDelivery.next_attempt_at,
            WebhookDelivery.retry_count,
            WebhookDelivery.generation,
            PayoutEvent.body,
            offset_seconds_of(WebhookDelivery.merchant_id).label("clock_offset"),
        )
        .join(PayoutEvent, PayoutEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.status == DeliveryStatus.RETRYING.value, condition)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    )


def stalled_for(seconds: int) -> ColumnElement[bool]:
    """A retry whose message looks lost: on its merchant's sandbox clock, later than `seconds`
    plus a quarter of its wait (a live message can be that late: it waits in a TTL queue behind
    messages that expire later, by up to a fifth of its tier's delay), its delivery held by no
    attempt, and no copy sent for its due time yet."""
    delivery = WebhookDelivery
    offset = offset_seconds_of(delivery.merchant_id)
    # Its wait, from when the attempt before it was recorded (on the sandbox clock of now).
    waited = _seconds_between(_plus_seconds(offset, delivery.updated_at), delivery.next_attempt_at)
    late = _seconds_between(delivery.next_attempt_at, sandbox_now_of(delivery.merchant_id))
    return and_(
        late > seconds + func.greatest(waited, 0) / 4,
        or_(delivery.lease_token.is_(None), delivery.leased_until <= DATABASE_NOW),
        not_copied(),
    )


def not_copied() -> ColumnElement[bool]:
    """No copy was sent for the due time the delivery waits for."""
    return or_(
        WebhookDelivery.copied_due_at.is_(None),
        WebhookDelivery.copied_due_at != WebhookDelivery.next_attempt_at,
    )


def _plus_seconds(
    seconds: ColumnElement[int], moment: SQLColumnExpression[datetime]
) -> ColumnElement[datetime]:
    return func.timestampadd(literal_column("SECOND"), seconds, moment)


def _seconds_between(
    start: SQLColumnExpression[datetime | None], end: SQLColumnExpression[datetime | None]
) -> ColumnElement[int]:
    return func.timestampdiff(literal_column("SECOND"), start, end)


async def send_copies(
    session: AsyncSession,
    rows: Sequence[WaitingRetry],
    *,
    correlation_id: str | None,
    clock_offset: int | None = None,
) -> int:
    """Write to the outbox an exact copy of the waiting message of each row of waiting_retries,
    and record on each delivery the due time copied; how many. `clock_offset`: the offset the
    copies' waits were measured under (the clock's offset before an advance); None: each
    merchant's offset now."""
    copies = [
        outbox_row(
            PayoutStatusChanged.model_validate_json(row.body),
            body=row.body,
            exchange=DEFAULT_EXCHANGE,
            routing_key=RESEND_ROUTING_KEY,
            payout_id=row.payout_id,
            merchant_id=row.merchant_id,
            correlation_id=correlation_id,
            extra_headers=waiting_retry_headers(
                row.next_attempt_at,
                retry_count=row.retry_count,
                generation=row.generation,
                clock_offset=int(row.clock_offset) if clock_offset is None else clock_offset,
            ),
        )
        for row in rows
    ]
    if copies:
        await write_outbox(session, copies)
        await session.execute(
            _RECORD_COPIED, [{"b_id": row.id, "b_due": row.next_attempt_at} for row in rows]
        )
    return len(copies)


# The due time copied, as read: a delivery that has moved on since keeps its own due time
# uncopied.
_DELIVERIES = table_of(WebhookDelivery)
_RECORD_COPIED = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"))
    .values(copied_due_at=bindparam("b_due"))
)


def waiting_retry_headers(
    due_at: datetime, *, retry_count: int | None, generation: int, clock_offset: int
) -> dict[str, Any]:
    """The headers of the waiting retry's message."""
    resend = {RESEND_GENERATION_HEADER: generation} if generation else {}
    return {
        RETRY_COUNT_HEADER: retry_count or 0,
        **resend,
        **retry_due_headers(due_at, clock_offset=clock_offset),
    }
