"""What the processor does with each command: load the payout, decide, transition. The caller
owns the transaction (one per consumed message, with its inbox row)."""

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from contracts.db.engine import utcnow
from contracts.db.models import Payout, PspCallback
from contracts.db.payouts import load_payout
from contracts.domain.scenarios import Decision, Outcome, decide
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_allowed
from contracts.messages import ApplyPspOutcome, ProcessPayout
from processor_service import transitions

log = logging.getLogger("processor")

PSP_REJECTED = "PSP_REJECTED"


class UnknownPayout(Exception):
    """The command names a payout that does not exist: it can never succeed."""


@dataclass(frozen=True)
class Context:
    correlation_id: str | None
    retry_delay_ms: int


async def _lock_payout(session: AsyncSession, payout_id: str, merchant_id: str) -> Payout:
    payout = await load_payout(session, payout_id, merchant_id=merchant_id, lock=True)
    if payout is None:
        raise UnknownPayout(payout_id)
    return payout


def _awaits_processing(payout: Payout) -> bool:
    """PENDING before submission or RETRY; a PENDING payout with a PSP reference awaits an IPN."""
    status = PayoutStatus(payout.status)
    if status is PayoutStatus.PENDING:
        return payout.psp_reference is None
    return status is PayoutStatus.RETRY


async def process_payout(
    session: AsyncSession, command: ProcessPayout, context: Context
) -> PayoutStatus | None:
    """Run the scenario rules on the payout: the status it ends in, None if nothing to do.
    Outcomes the PSP already sent come first: the scenario never overrides the PSP."""
    payout = await _lock_payout(session, command.payout_id, command.merchant_id)
    settled = await _apply_accepted_outcomes(session, payout, context)
    if not _awaits_processing(payout):
        return settled
    await transitions.start_processing(session, payout, correlation_id=context.correlation_id)
    decision = decide(payout.amount, payout.account_number, payout.attempts)
    await _apply_decision(session, payout, decision, context)
    return PayoutStatus(payout.status)


async def _apply_decision(
    session: AsyncSession, payout: Payout, decision: Decision, context: Context
) -> None:
    correlation_id = context.correlation_id
    match decision.outcome:
        case Outcome.SUCCESS:
            await transitions.succeed(
                session, payout, psp_reference=None, correlation_id=correlation_id
            )
        case Outcome.FAILED:
            await transitions.fail(
                session,
                payout,
                failure_code=decision.failure_code or PSP_REJECTED,
                reason=decision.reason or "Rejected by the PSP",
                correlation_id=correlation_id,
            )
        case Outcome.RETRY:
            await transitions.schedule_retry(
                session,
                payout,
                reason=decision.reason or "Retrying",
                delay_ms=context.retry_delay_ms,
                correlation_id=correlation_id,
            )
        case Outcome.PENDING_AT_PSP:
            await transitions.await_psp(session, payout, correlation_id=correlation_id)
        case Outcome.ON_HOLD:
            await transitions.put_on_hold(
                session, payout, reason=decision.reason or "On hold", correlation_id=correlation_id
            )
        case Outcome.IN_REVIEW:
            await transitions.send_to_review(session, payout, correlation_id=correlation_id)


async def apply_psp_outcome(
    session: AsyncSession, command: ApplyPspOutcome, context: Context
) -> PayoutStatus | None:
    """Apply the outcomes accepted for the payout, in order: its new status, None when there is
    nothing (left) to apply, e.g. this command's outcome was applied with an earlier one."""
    payout = await _lock_payout(session, command.payout_id, command.merchant_id)
    if command.hold_cycle != payout.hold_cycle:
        return None  # an outcome of an earlier attempt: never applied to the current one
    return await _apply_accepted_outcomes(session, payout, context)


async def _apply_accepted_outcomes(
    session: AsyncSession, payout: Payout, context: Context
) -> PayoutStatus | None:
    """Every outcome accepted and not yet applied, in accepted order; the status they lead to,
    or None when there was none. The payout row is locked by the caller."""
    if payout.accepted_outcome is None:
        return None
    callbacks = list(
        await session.scalars(
            select(PspCallback)
            .where(PspCallback.payout_id == payout.id, PspCallback.applied_at.is_(None))
            .order_by(PspCallback.accept_seq)
        )
    )
    for callback in callbacks:
        await _apply_outcome(session, payout, callback, context)
    await session.execute(
        update(PspCallback)
        .where(PspCallback.event_id.in_([callback.event_id for callback in callbacks]))
        .values(applied_at=utcnow())
    )
    await session.execute(
        update(Payout).where(Payout.id == payout.id).values(accepted_outcome=None)
    )
    set_committed_value(payout, "accepted_outcome", None)
    return PayoutStatus(payout.status)


async def _apply_outcome(
    session: AsyncSession, payout: Payout, callback: PspCallback, context: Context
) -> None:
    outcome = PspOutcome(callback.outcome)
    # The API accepted it against the same chain; only a bug could make it illegal here.
    if callback.hold_cycle != payout.hold_cycle or not psp_outcome_allowed(
        PayoutStatus(payout.status), outcome
    ):
        log.error("PSP outcome %s of %s does not apply; skipped", callback.event_id, payout.id)
        return
    correlation_id = context.correlation_id
    match outcome:
        case PspOutcome.SUCCESS:
            await transitions.succeed(
                session, payout, psp_reference=callback.psp_reference, correlation_id=correlation_id
            )
        case PspOutcome.FAILED:
            await transitions.fail(
                session,
                payout,
                failure_code=PSP_REJECTED,
                reason=callback.failure_reason or "Rejected by the PSP",
                correlation_id=correlation_id,
            )
        case PspOutcome.REVERSED:
            await transitions.reverse(session, payout, correlation_id=correlation_id)
