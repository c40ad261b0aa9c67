"""PSP callbacks (IPN) and sandbox simulations: checked against the payout's status now,
recorded once per event id, and handed to the processor through the outbox."""

import hashlib
import hmac

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.errors import InvalidTransition, NotFound
from contracts.db.engine import utcnow
from contracts.db.models import Payout, PspCallback
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_allowed
from contracts.messages import ApplyPspOutcome
from contracts.outbox import add_to_outbox
from contracts.topology import APPLY_PSP_OUTCOME_KEY, COMMANDS_EXCHANGE


def psp_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(
        psp_signature(secret, body), str(signature).lower()
    )


async def callback_already_recorded(session: AsyncSession, event_id: str) -> bool:
    return await session.get(PspCallback, event_id) is not None


async def record_psp_outcome(
    session: AsyncSession,
    payout: Payout,
    *,
    event_id: str,
    outcome: PspOutcome,
    psp_reference: str | None,
    failure_reason: str | None,
    source: str,
    request_id: str,
) -> bool:
    """False when this event id was already recorded; InvalidTransition when illegal."""
    current = PayoutStatus(payout.status)
    if not psp_outcome_allowed(current, outcome):
        raise InvalidTransition(f"{current} -> {outcome} is not allowed")
    try:
        # A savepoint: a concurrent copy of the event loses the race here without rolling back
        # (and expiring the objects of) the caller's transaction, which it does not own.
        async with session.begin_nested():
            await session.execute(
                insert(PspCallback).values(
                    event_id=event_id,
                    payout_id=payout.id,
                    outcome=outcome.value,
                    psp_reference=psp_reference,
                    failure_reason=failure_reason,
                    source=source,
                    received_at=utcnow(),
                )
            )
    except IntegrityError:
        return False
    await add_to_outbox(
        session,
        ApplyPspOutcome(
            callback_event_id=event_id,
            payout_id=payout.id,
            merchant_id=payout.merchant_id,
            outcome=outcome,
            psp_reference=psp_reference,
            failure_reason=failure_reason,
        ),
        exchange=COMMANDS_EXCHANGE,
        routing_key=APPLY_PSP_OUTCOME_KEY,
        payout_id=payout.id,
        merchant_id=payout.merchant_id,
        correlation_id=request_id,
    )
    return True


async def find_payout(
    session: AsyncSession, payout_id: str, merchant_id: str | None = None
) -> Payout:
    statement = select(Payout).where(Payout.id == payout_id)
    if merchant_id is not None:
        statement = statement.where(Payout.merchant_id == merchant_id)
    payout = await session.scalar(statement)
    if payout is None:
        raise NotFound("Payout not found")
    return payout
