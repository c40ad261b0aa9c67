"""Every payout status transition after creation, one function each.

Each is a compare-and-set on the expected status plus its ledger journal and its status event,
written in the caller's transaction (the consumer commits it together with its inbox row). A
transition whose expected status is gone raises StaleTransition and changes nothing.
"""

from collections.abc import Collection
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from contracts import ledger
from contracts.db.engine import utcnow
from contracts.db.models import Payout
from contracts.domain.psp_references import psp_reference_for
from contracts.domain.statuses import AWAITING_PSP_DECISION, EVENT_FOR_STATUS, PayoutStatus
from contracts.payout_events import record_payout_event, request_processing

AWAITING_PROCESSING = frozenset({PayoutStatus.PENDING, PayoutStatus.RETRY})


class StaleTransition(Exception):
    """The payout is no longer in a status this transition starts from."""


async def _move(
    session: AsyncSession,
    payout: Payout,
    *,
    allowed_from: Collection[PayoutStatus],
    to: PayoutStatus,
    correlation_id: str | None,
    **changes: Any,
) -> None:
    """Guarded status update + the status event; the in-memory payout mirrors the row."""
    if PayoutStatus(payout.status) not in allowed_from:
        raise StaleTransition(f"{payout.id}: {payout.status} -> {to}")
    values = {"status": to.value, "updated_at": utcnow(), **changes}
    result = await session.execute(
        update(Payout)
        .where(Payout.id == payout.id, Payout.status == payout.status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleTransition(f"{payout.id}: changed concurrently")
    for name, value in values.items():
        set_committed_value(payout, name, value)
    await record_payout_event(session, payout, EVENT_FOR_STATUS[to], correlation_id=correlation_id)


def _money(payout: Payout) -> dict[str, Any]:
    return {
        "merchant_id": payout.merchant_id,
        "payout_id": payout.id,
        "hold_cycle": payout.hold_cycle,
        "amount": payout.amount,
    }


async def start_processing(
    session: AsyncSession, payout: Payout, *, correlation_id: str | None
) -> None:
    """PENDING | RETRY -> PROCESSING: one more attempt at the PSP."""
    await _move(
        session,
        payout,
        allowed_from=AWAITING_PROCESSING,
        to=PayoutStatus.PROCESSING,
        correlation_id=correlation_id,
        attempts=payout.attempts + 1,
        failure_reason=None,
    )


async def succeed(
    session: AsyncSession, payout: Payout, *, psp_reference: str | None, correlation_id: str | None
) -> None:
    """-> SUCCESS: the held funds leave to the PSP."""
    await _move(
        session,
        payout,
        allowed_from=AWAITING_PSP_DECISION,
        to=PayoutStatus.SUCCESS,
        correlation_id=correlation_id,
        psp_reference=psp_reference
        or payout.psp_reference
        or psp_reference_for(payout.id, payout.hold_cycle),
        failure_code=None,
        failure_reason=None,
        processed_at=utcnow(),
    )
    await ledger.post_hold(session, **_money(payout))


async def fail(
    session: AsyncSession,
    payout: Payout,
    *,
    failure_code: str,
    reason: str,
    correlation_id: str | None,
) -> None:
    """-> FAILED: the hold goes back to available."""
    await _move(
        session,
        payout,
        allowed_from=AWAITING_PSP_DECISION,
        to=PayoutStatus.FAILED,
        correlation_id=correlation_id,
        failure_code=failure_code,
        failure_reason=reason,
        processed_at=utcnow(),
    )
    await ledger.release_hold(session, **_money(payout))


async def reverse(session: AsyncSession, payout: Payout, *, correlation_id: str | None) -> None:
    """SUCCESS -> REVERSED: the bank returned the money to the merchant's available balance."""
    await _move(
        session,
        payout,
        allowed_from={PayoutStatus.SUCCESS},
        to=PayoutStatus.REVERSED,
        correlation_id=correlation_id,
        failure_reason="Returned by the beneficiary bank",
    )
    await ledger.reverse_payout(session, **_money(payout))


async def await_psp(session: AsyncSession, payout: Payout, *, correlation_id: str | None) -> None:
    """PROCESSING -> PENDING at the PSP: submitted, waiting for its IPN. Funds stay held."""
    await _move(
        session,
        payout,
        allowed_from={PayoutStatus.PROCESSING},
        to=PayoutStatus.PENDING,
        correlation_id=correlation_id,
        psp_reference=psp_reference_for(payout.id, payout.hold_cycle),
    )


async def put_on_hold(
    session: AsyncSession, payout: Payout, *, reason: str, correlation_id: str | None
) -> None:
    """PROCESSING -> ON_HOLD: the PSP holds it, waiting for an IPN. Funds stay held."""
    await _move(
        session,
        payout,
        allowed_from={PayoutStatus.PROCESSING},
        to=PayoutStatus.ON_HOLD,
        correlation_id=correlation_id,
        failure_reason=reason,
    )


async def send_to_review(
    session: AsyncSession, payout: Payout, *, correlation_id: str | None
) -> None:
    """PROCESSING -> IN_REVIEW: a large amount waits for a decision. Funds stay held."""
    await _move(
        session,
        payout,
        allowed_from={PayoutStatus.PROCESSING},
        to=PayoutStatus.IN_REVIEW,
        correlation_id=correlation_id,
    )


async def schedule_retry(
    session: AsyncSession,
    payout: Payout,
    *,
    reason: str,
    delay_ms: int,
    correlation_id: str | None,
) -> None:
    """PROCESSING -> RETRY, and a ProcessPayout command delayed by the broker (never a sleep)."""
    await _move(
        session,
        payout,
        allowed_from={PayoutStatus.PROCESSING},
        to=PayoutStatus.RETRY,
        correlation_id=correlation_id,
        failure_reason=reason,
    )
    await request_processing(session, payout, correlation_id=correlation_id, delay_ms=delay_ms)
