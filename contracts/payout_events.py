"""Recording a payout status event: the event log row and its outbox message, one transaction."""

import secrets

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import Payout, PayoutEvent
from contracts.domain.statuses import EventType, legacy_event_name
from contracts.messages import PayoutStatusChanged, ProcessPayout
from contracts.outbox import add_to_outbox
from contracts.payout_view import PayoutView
from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    PAYOUT_COMMANDS,
    PROCESS_PAYOUT_KEY,
)


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(12)}"


async def record_payout_event(
    session: AsyncSession, payout: Payout, event_type: EventType, *, correlation_id: str | None
) -> PayoutStatusChanged:
    """Snapshot the payout as it is now into an event, stored and queued for the webhook service."""
    event = PayoutStatusChanged(
        id=new_event_id(),
        type=event_type,
        event=legacy_event_name(event_type),
        created_at=utcnow(),
        merchant_id=payout.merchant_id,
        payout=PayoutView.of(payout),
    )
    body = event.to_json()
    await session.execute(
        insert(PayoutEvent).values(
            id=event.id,
            merchant_id=payout.merchant_id,
            payout_id=payout.id,
            type=event_type.value,
            body=body,
            created_at=event.created_at,
        )
    )
    await add_to_outbox(
        session,
        event,
        exchange=EVENTS_EXCHANGE,
        routing_key=event_type.value,
        payout_id=payout.id,
        merchant_id=payout.merchant_id,
        correlation_id=correlation_id,
    )
    return event


async def request_processing(
    session: AsyncSession,
    payout: Payout,
    *,
    correlation_id: str | None,
    delay_ms: int | None = None,
) -> None:
    """Queue a ProcessPayout command; with a delay it goes through the retry queue."""
    delayed = delay_ms is not None
    await add_to_outbox(
        session,
        ProcessPayout(payout_id=payout.id, merchant_id=payout.merchant_id),
        exchange=DEFAULT_EXCHANGE if delayed else COMMANDS_EXCHANGE,
        routing_key=PAYOUT_COMMANDS.retry_queue(1) if delayed else PROCESS_PAYOUT_KEY,
        payout_id=payout.id,
        merchant_id=payout.merchant_id,
        correlation_id=correlation_id,
        delay_ms=delay_ms,
    )
