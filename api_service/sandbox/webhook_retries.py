"""Webhook retries on the sandbox clock: when a merchant advances its clock, its webhook retries
that the new sandbox time made due leave their wait at once.

The advance's transaction writes, per retry due, an exact copy of its waiting message to the
outbox (contracts.waiting_retries): the relay sends the copies straight to the webhook queue, in
due-time order. Retries the attempts schedule within the window follow at once
(webhook_service.delivery.on_sandbox_clock), so one advance runs the whole ladder it spans: the
attempts are made, the delivery parks, as days of real time would have done.
"""

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import SANDBOX_TIME, sandbox_now_of
from contracts.db.models import WebhookDelivery
from contracts.waiting_retries import not_copied, send_copies, waiting_retries
from contracts.webhooks import DeliveryStatus


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
    # Not copied: an advance just before (or the relay) copied it, and its copy is on its way.
    rows = await session.execute(
        waiting_retries(and_(retries_due(merchant_id), not_copied()), SANDBOX_TIME)
    )
    copied = await send_copies(
        session, rows.all(), correlation_id=correlation_id, clock_offset=offset_before
    )
    return len(copied)
