"""Webhook retries on the sandbox clock: when a merchant advances its clock, its webhook retries
that the new sandbox time made due leave their wait at once.

A waiting retry is a message in a RabbitMQ TTL queue, which cannot be taken out early. So the
advance's transaction writes, per retry due, an exact copy of it to the outbox (the stored event,
the retry count and generation the waiting message carries, and its due time): the relay sends
the copies straight to the webhook queue, in due-time order. Whichever copy of a retry comes
first is attempted; the other finds that the delivery no longer waits for that due time and is
dropped (webhook_service.delivery.superseded). Retries the attempts schedule within the window
follow at once (webhook_service.delivery.on_sandbox_clock), so one advance runs the whole ladder
it spans: the attempts are made, the delivery parks, as days of real time would have done.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import sandbox_now_of
from contracts.db.models import PayoutEvent, WebhookDelivery
from contracts.messages import PayoutStatusChanged
from contracts.outbox import outbox_row, write_outbox
from contracts.topology import DEFAULT_EXCHANGE, RETRY_COUNT_HEADER
from contracts.webhooks import (
    RESEND_GENERATION_HEADER,
    RESEND_ROUTING_KEY,
    DeliveryStatus,
    retry_due_headers,
)


def retries_due(merchant_id: str) -> ColumnElement[bool]:
    """The merchant's retrying deliveries due by its sandbox time (ix_deliveries_retry_due)."""
    return and_(
        WebhookDelivery.merchant_id == merchant_id,
        WebhookDelivery.status == DeliveryStatus.RETRYING.value,
        WebhookDelivery.next_attempt_at <= sandbox_now_of(merchant_id),
    )


async def count_retries_due(session: AsyncSession, merchant_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(retries_due(merchant_id))
        )
        or 0
    )


async def release_retries_due(
    session: AsyncSession, merchant_id: str, *, offset_before: int, correlation_id: str | None
) -> int:
    """Send on the merchant's retries that its sandbox time made due; how many. `offset_before`:
    the clock's offset before the advance (what the copies' waits were measured under)."""
    rows = await session.execute(
        select(
            WebhookDelivery.payout_id,
            WebhookDelivery.next_attempt_at,
            WebhookDelivery.retry_count,
            WebhookDelivery.generation,
            PayoutEvent.body,
        )
        .join(PayoutEvent, PayoutEvent.id == WebhookDelivery.event_id)
        .where(retries_due(merchant_id))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    )
    copies = [
        outbox_row(
            PayoutStatusChanged.model_validate_json(row.body),
            body=row.body,
            exchange=DEFAULT_EXCHANGE,
            routing_key=RESEND_ROUTING_KEY,
            payout_id=row.payout_id,
            merchant_id=merchant_id,
            correlation_id=correlation_id,
            extra_headers=waiting_retry_headers(
                row.next_attempt_at,
                retry_count=row.retry_count,
                generation=row.generation,
                clock_offset=offset_before,
            ),
        )
        for row in rows
    ]
    await write_outbox(session, copies)
    return len(copies)


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
