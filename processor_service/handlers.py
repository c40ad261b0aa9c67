"""What the processor does with each command: load the payout, decide, transition. The caller
owns the transaction (one per consumed message, with its inbox row)."""

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import Payout, PspCallback
from contracts.db.payouts import load_payout
from contracts.domain.scenarios import Decision, Outcome, decide
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_allowed
from contracts.messages import ApplyPspOutcome, ProcessPayout
from processor_service import transitions
from processor_service.transitions import PayoutChange

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
    change = PayoutChange(payout, correlation_id=context.correlation_id)
    await _take_accepted_outcomes(session, change)
    if _awaits_processing(payout):
        transitions.start_processing(change)
        _apply_decision(
            change, decide(payout.amount, payout.account_number, payout.attempts), context
        )
    await change.write(session)
    return PayoutStatus(payout.status) if change.changed else None


def _apply_decision(change: PayoutChange, decision: Decision, context: Context) -> None:
    match decision.outcome:
        case Outcome.SUCCESS:
            transitions.succeed(change, psp_reference=None)
        case Outcome.FAILED:
            transitions.fail(
                change,
                failure_code=decision.failure_code or PSP_REJECTED,
                reason=decision.reason or "Rejected by the PSP",
            )
        case Outcome.RETRY:
            transitions.schedule_retry(
                change, reason=decision.reason or "Retrying", delay_ms=context.retry_delay_ms
            )
        case Outcome.PENDING_AT_PSP:
            transitions.await_psp(change)
        case Outcome.ON_HOLD:
            transitions.put_on_hold(change, reason=decision.reason or "On hold")
        case Outcome.IN_REVIEW:
            transitions.send_to_review(change)


async def apply_psp_outcome(
    session: AsyncSession, command: ApplyPspOutcome, context: Context
) -> PayoutStatus | None:
    """Apply the outcomes accepted for the payout, in order: its new status, None when there is
    nothing (left) to apply, e.g. this command's outcome was applied with an earlier one."""
    payout = await _lock_payout(session, command.payout_id, command.merchant_id)
    if command.hold_cycle != payout.hold_cycle:
        return None  # an outcome of an earlier attempt: never applied to the current one
    change = PayoutChange(payout, correlation_id=context.correlation_id)
    await _take_accepted_outcomes(session, change)
    await change.write(session)
    return PayoutStatus(payout.status) if change.changed else None


async def _take_accepted_outcomes(session: AsyncSession, change: PayoutChange) -> None:
    """Every outcome accepted and not yet applied, in accepted order, onto the change; the
    callbacks are marked applied. Nothing to read when the payout has none waiting."""
    payout = change.payout
    if payout.accepted_outcome is None:
        return
    callbacks = list(
        await session.scalars(
            select(PspCallback)
            .where(PspCallback.payout_id == payout.id, PspCallback.applied_at.is_(None))
            .order_by(PspCallback.accept_seq)
        )
    )
    for callback in callbacks:
        _apply_outcome(change, callback)
    await session.execute(
        update(PspCallback)
        .where(PspCallback.event_id.in_([callback.event_id for callback in callbacks]))
        .values(applied_at=utcnow())
    )
    change.set(accepted_outcome=None)


def _apply_outcome(change: PayoutChange, callback: PspCallback) -> None:
    payout, outcome = change.payout, PspOutcome(callback.outcome)
    # The API accepted it against the same chain; only a bug could make it illegal here.
    if callback.hold_cycle != payout.hold_cycle or not psp_outcome_allowed(
        PayoutStatus(payout.status), outcome
    ):
        log.error("PSP outcome %s of %s does not apply; skipped", callback.event_id, payout.id)
        return
    match outcome:
        case PspOutcome.SUCCESS:
            transitions.succeed(change, psp_reference=callback.psp_reference)
        case PspOutcome.FAILED:
            transitions.fail(
                change,
                failure_code=PSP_REJECTED,
                reason=callback.failure_reason or "Rejected by the PSP",
            )
        case PspOutcome.REVERSED:
            transitions.reverse(change)
