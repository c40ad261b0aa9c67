"""Deliveries and attempts written as the webhook service leaves them, for tests of the API's
webhook lists, and the events a payout's create wrote."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import PayoutEvent, WebhookAttempt, WebhookDelivery
from contracts.webhooks import DeliveryStatus

PUBLIC_URL = "https://93.184.215.14/webhooks/mypay"  # an IP literal: no DNS needed


async def events_of(sessions: SessionFactory, payout_id: str) -> list[PayoutEvent]:
    async with sessions() as session:
        rows = await session.scalars(select(PayoutEvent).where(PayoutEvent.payout_id == payout_id))
        return list(rows)


async def seed_delivery(
    sessions: SessionFactory,
    event: PayoutEvent,
    status: DeliveryStatus,
    attempts: list[tuple[int | None, str | None]],
    created_at: datetime,
) -> str:
    """A delivery as the webhook service leaves it, with its attempts."""
    delivery_id = str(uuid.uuid4())
    async with transaction(sessions) as session:
        session.add(
            WebhookDelivery(
                id=delivery_id,
                event_id=event.id,
                merchant_id=event.merchant_id,
                payout_id=event.payout_id,
                event_type=event.type,
                url=PUBLIC_URL,
                status=status.value,
                attempts=len(attempts),
                last_status_code=attempts[-1][0] if attempts else None,
                last_error=attempts[-1][1] if attempts else None,
                delivered_at=created_at if status is DeliveryStatus.DELIVERED else None,
                created_at=created_at,
                updated_at=created_at,
            )
        )
        await session.flush()
        for number, (status_code, error) in enumerate(attempts, start=1):
            session.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    attempt_number=number,
                    url=PUBLIC_URL,
                    status_code=status_code,
                    latency_ms=40 + number,
                    error=error,
                    response_excerpt="ok" if status_code == 200 else None,
                    created_at=created_at + timedelta(seconds=number),
                )
            )
    return delivery_id
