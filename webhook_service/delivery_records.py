"""The webhook service's SQL: one delivery row per event, one attempt row per HTTP attempt."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import PayoutEvent, WebhookAttempt, WebhookDelivery
from contracts.webhooks import DeliveryStatus
from webhook_service.sender import MAX_ERROR_LENGTH, AttemptResult


async def ensure_delivery(session: AsyncSession, event: PayoutEvent, now: datetime) -> None:
    """Create the event's delivery row unless it exists (the event id is unique)."""
    statement = mysql_insert(WebhookDelivery).values(
        id=str(uuid.uuid4()),
        event_id=event.id,
        merchant_id=event.merchant_id,
        payout_id=event.payout_id,
        event_type=event.type,
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    await session.execute(statement.on_duplicate_key_update(event_id=statement.inserted.event_id))


async def lock_delivery(session: AsyncSession, event_id: str) -> WebhookDelivery:
    """The delivery row, locked until the transaction ends: one attempt per event at a time,
    across every replica (a duplicate message waits here, then sees DELIVERED)."""
    delivery = await session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.event_id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert delivery is not None, "ensure_delivery ran first"
    return delivery


async def record_attempt(
    session: AsyncSession,
    delivery: WebhookDelivery,
    *,
    url: str,
    result: AttemptResult,
    attempted_at: datetime,
) -> None:
    delivery.attempts += 1
    delivery.url = url
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    await session.execute(
        insert(WebhookAttempt).values(
            delivery_id=delivery.id,
            attempt_number=delivery.attempts,
            url=url,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            response_excerpt=result.response_excerpt,
            created_at=attempted_at,
        )
    )


def mark_delivered(delivery: WebhookDelivery, now: datetime) -> None:
    """The row is locked from before the attempt: every resend up to its current generation was
    asked for before this send, so the send honoured them all."""
    delivery.status = DeliveryStatus.DELIVERED.value
    delivery.delivered_generation = delivery.generation
    delivery.delivered_at = now
    delivery.next_attempt_at = None
    delivery.updated_at = now


def mark_retrying(delivery: WebhookDelivery, now: datetime, delay_seconds: float) -> None:
    delivery.status = DeliveryStatus.RETRYING.value
    delivery.next_attempt_at = now + timedelta(seconds=delay_seconds)
    delivery.updated_at = now


def mark_parked(delivery: WebhookDelivery, now: datetime, *, reason: str | None = None) -> None:
    delivery.status = DeliveryStatus.PARKED.value
    delivery.next_attempt_at = None
    delivery.updated_at = now
    if reason is not None:
        delivery.last_error = reason[:MAX_ERROR_LENGTH]


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
