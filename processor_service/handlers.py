"""What the processor does with each command: load the payout, decide, transition. The caller
owns the transaction (one per consumed message, with its inbox row)."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import Payout
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_allowed
from contracts.messages import ApplyPspOutcome, ProcessPayout
from processor_service import transitions
from processor_service.scenarios import Decision, Outcome, decide

PSP_REJECTED = "PSP_REJECTED"


class UnknownPayout(Exception):
    """The command names a payout that does not exist: it can never succeed."""


@dataclass(frozen=True)
class Context:
    correlation_id: str | None
    retry_delay_ms: int


async def _lock_payout(session: AsyncSession, payout_id: str, merchant_id: str) -> Payout:
    payout = await session.scalar(
        select(Payout)
        .where(Payout.id == payout_id, Payout.merchant_id == merchant_id)
        .with_for_update()
    )
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
    """Run the scenario rules on the payout: the status it ends in, None if nothing to do."""
    payout = await _lock_payout(session, command.payout_id, command.merchant_id)
    if not _awaits_processing(payout):
        return None
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
    """Settle the payout as the PSP said: its new status, None when no longer legal."""
    payout = await _lock_payout(session, command.payout_id, command.merchant_id)
    if not psp_outcome_allowed(PayoutStatus(payout.status), command.outcome):
        return None
    correlation_id = context.correlation_id
    match command.outcome:
        case PspOutcome.SUCCESS:
            await transitions.succeed(
                session,
                payout,
                psp_reference=command.psp_reference,
                correlation_id=correlation_id,
            )
        case PspOutcome.FAILED:
            await transitions.fail(
                session,
                payout,
                failure_code=PSP_REJECTED,
                reason=command.failure_reason or "Rejected by the PSP",
                correlation_id=correlation_id,
            )
        case PspOutcome.REVERSED:
            await transitions.reverse(session, payout, correlation_id=correlation_id)
    return PayoutStatus(payout.status)
