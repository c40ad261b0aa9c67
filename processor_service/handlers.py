"""What the processor does with each command, and with each scheduled action that came due:
load the payout, decide, transition. The caller owns the transaction (one per consumed message,
with its inbox row; one per batch of payout commands; one per scheduled action, with the action's
row)."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import naive_utc, utcnow
from contracts.db.models import Payout, PspCallback, ScheduledAction
from contracts.db.payouts import load_payout, load_payouts
from contracts.domain.scenarios import Decision, Outcome, decide, script_of
from contracts.domain.scheduled_actions import Action, Result, correlation_id_of
from contracts.domain.statuses import (
    FailureCode,
    PayoutStatus,
    PspOutcome,
    psp_outcome_allowed,
)
from contracts.logging import bind_log_context
from contracts.messages import ApplyPspOutcome, ProcessPayout
from contracts.payout_queue import expire_queued_payouts
from processor_service import transitions
from processor_service.schedule import (
    AWAITING_DECISION,
    Timetable,
    follow_ups,
    write_actions,
)
from processor_service.transitions import PayoutChange

log = logging.getLogger("processor")

DEFAULT_TIMETABLE = Timetable()


class NeverApplicable(Exception):
    """The command can never be applied: dead-lettered at once, with this as the reason."""


class UnknownPayout(NeverApplicable):
    """The command names a payout that does not exist."""

    def __init__(self, payout_id: str) -> None:
        super().__init__(f"unknown payout {payout_id}")


class UnrecordedOutcome(NeverApplicable):
    """The command's PSP outcome was never recorded: the database was restored from a backup
    taken before it was accepted. Acknowledged as "nothing to change", the outcome was lost with
    no trace, the payout's funds held, the PSP told 200 long ago (restore review)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"PSP outcome {event_id} was never recorded (the database restored from a backup "
            "taken before it was accepted?)"
        )


@dataclass(frozen=True)
class Context:
    correlation_id: str | None
    retry_delay_ms: int


async def _lock_payout(session: AsyncSession, payout_id: str, merchant_id: str) -> Payout:
    payout = await load_payout(session, payout_id, merchant_id=merchant_id, lock=True)
    if payout is None:
        raise UnknownPayout(payout_id)
    return payout


def _awaits_processing(payout: Payout, *, scripted: bool) -> bool:
    """PENDING before submission or RETRY; a PENDING payout with a PSP reference awaits an IPN,
    a scripted payout's RETRY waits for its next step in sandbox time (a scheduled action)."""
    status = PayoutStatus(payout.status)
    if status is PayoutStatus.PENDING:
        return payout.psp_reference is None
    return status is PayoutStatus.RETRY and not script_of(
        payout.amount, payout.account_number, scripted=scripted
    )


def _sent_for_this_attempt(command: ProcessPayout, payout: Payout) -> bool:
    """The payout is still at the attempt the command was sent for (under the payout's lock):
    no copy of the command made it, and the payout was not reinitiated since."""
    return (command.attempt, command.hold_cycle) == (payout.attempts, payout.hold_cycle)


@dataclass(frozen=True)
class Processing:
    """What a ProcessPayout command does to its payout, not written yet."""

    change: PayoutChange
    later: list[dict[str, Any]]  # the scheduled actions it leaves

    @property
    def status(self) -> PayoutStatus | None:
        return PayoutStatus(self.change.payout.status) if self.change.changed else None


async def process_payout(
    session: AsyncSession,
    command: ProcessPayout,
    context: Context,
    timetable: Timetable = DEFAULT_TIMETABLE,
) -> PayoutStatus | None:
    """Run the scenario rules on the payout: the status it ends in, None if nothing to do."""
    [status] = await process_payouts(session, [(command, context)], timetable)
    return status


async def process_payouts(
    session: AsyncSession,
    commands: Sequence[tuple[ProcessPayout, Context]],
    timetable: Timetable = DEFAULT_TIMETABLE,
) -> list[PayoutStatus | None]:
    """Run the scenario rules for a batch of commands, in one transaction: the payouts locked in
    one query, each command judged and decided in order against its payout as the commands
    before it left it (a copy of a command in the same batch finds its attempt made), then
    everything written together (transitions.write_changes). A status per command, None where
    there was nothing to do; UnknownPayout if any payout is missing.

    A batch does not wait for a payout another transaction holds: it fails at once, and its
    commands run one by one (payout_commands). One payout held for the lock wait (50 s: a stuck
    session, a frozen process) held every other command of its batch as long, and again each
    time its command came back (batch isolation review)."""
    payouts = await load_payouts(
        session, [command.payout_id for command, _ in commands], nowait=len(commands) > 1
    )
    plans: list[Processing | None] = []
    for command, context in commands:
        payout = payouts.get(command.payout_id)
        if payout is None or payout.merchant_id != command.merchant_id:
            raise UnknownPayout(command.payout_id)
        # Each command's lines name its payout: a batch runs in no message's log context.
        with bind_log_context(
            payout_id=command.payout_id,
            merchant_id=command.merchant_id,
            correlation_id=context.correlation_id,
        ):
            plans.append(await _plan(session, command, payout, context, timetable))
    done = [processing for processing in plans if processing is not None]
    await write_actions(session, [action for processing in done for action in processing.later])
    await transitions.write_changes(
        session, [processing.change for processing in done], timetable.time
    )
    return [processing.status if processing else None for processing in plans]


async def _plan(
    session: AsyncSession,
    command: ProcessPayout,
    payout: Payout,
    context: Context,
    timetable: Timetable,
) -> Processing | None:
    """The command's processing of its locked payout, None if it has nothing to do.
    Outcomes the PSP already sent come first: the scenario never overrides the PSP. A scripted
    payout takes its script's first step and schedules the next; a payout left waiting for a
    decision schedules the decision window's expiry."""
    if command.names_its_attempt and not _sent_for_this_attempt(command, payout):
        log.info("command for attempt %s of payout %s: already made", command.attempt, payout.id)
        return None
    # A payout a clock step started from the queue runs at that step's sandbox time: its changes
    # are stamped with it, and so are the queued payouts the money they return starts (their
    # scripts run from it too, however late the processor picks them up). In production, no
    # clock starts anything (a command from test mode may still say one did).
    started_by_the_clock = (
        naive_utc(command.sandbox_time)
        if command.sandbox_time is not None and timetable.scripted
        else None
    )
    change = PayoutChange(
        payout,
        correlation_id=context.correlation_id,
        sandbox_time=started_by_the_clock,
    )
    with timetable.time.stamping(started_by_the_clock):
        return await _process(session, change, context, timetable)


async def _process(
    session: AsyncSession, change: PayoutChange, context: Context, timetable: Timetable
) -> Processing:
    """The scenario's first step on the payout of `change`, and the steps it schedules."""
    payout = change.payout
    started = payout.updated_at  # the attempt's start (real time): it has waited since
    await _take_accepted_outcomes(session, change)
    later: list[dict[str, Any]] = []
    scripted = timetable.scripted
    if _awaits_processing(payout, scripted=scripted):
        script = script_of(payout.amount, payout.account_number, scripted=scripted)
        transitions.start_processing(change)
        _apply_decision(
            change,
            decide(payout.amount, payout.account_number, payout.attempts, scripted=scripted),
            retry_delay_ms=None if script else context.retry_delay_ms,
        )
        if len(script) > 1 or PayoutStatus(payout.status) in AWAITING_DECISION:
            # From the sandbox time the attempt started, not the one it was picked up at: a
            # payout created just before an advance was picked up after it, and its steps in
            # the advanced window were put off by the whole advance.
            if change.sandbox_time is not None:
                at = change.sandbox_time
            else:
                at = await timetable.time.then(session, payout.merchant_id, started)
            later = follow_ups(payout, script=script, step=0, at=at, timetable=timetable)
    return Processing(change, later)


def wait_for_scripted_retry(change: PayoutChange, *, reason: str) -> None:
    """PROCESSING -> RETRY of a scripted payout: its next attempt is the script's next step, a
    scheduled action in sandbox time (not a broker-delayed command)."""
    change.move(
        allowed_from={PayoutStatus.PROCESSING}, to=PayoutStatus.RETRY, failure_reason=reason
    )


def _apply_decision(
    change: PayoutChange, decision: Decision, *, retry_delay_ms: int | None
) -> None:
    """`retry_delay_ms`: a RETRY's broker delay; None: the retry is a scripted step's."""
    reason = decision.reason
    match decision.outcome:
        case Outcome.SUCCESS:
            transitions.succeed(change, psp_reference=None)
        case Outcome.FAILED:
            transitions.fail(
                change,
                failure_code=decision.failure_code or FailureCode.PSP_REJECTED,
                reason=decision.reason or "Rejected by the PSP",
            )
        case Outcome.RETRY if retry_delay_ms is None:
            wait_for_scripted_retry(change, reason=reason or "Retrying")
        case Outcome.RETRY:
            transitions.schedule_retry(
                change, reason=reason or "Retrying", delay_ms=retry_delay_ms or 0
            )
        case Outcome.PENDING_AT_PSP:
            transitions.await_psp(change)
        case Outcome.ON_HOLD:
            transitions.put_on_hold(change, reason=reason or "On hold")
        case Outcome.IN_REVIEW:
            transitions.send_to_review(change)
        case Outcome.SLOW_PSP:
            pass  # stays PROCESSING: the script's next step is the PSP's answer
        case Outcome.REVERSED:
            transitions.reverse(change)


async def apply_scheduled_action(
    session: AsyncSession, action: ScheduledAction, timetable: Timetable
) -> PayoutStatus | None:
    """Apply an action that came due (its row locked by the caller), judged under the payout's
    lock: only if the payout is still in the status of the attempt the action was scheduled for
    (after any PSP outcome already accepted), else it is skipped. Its events carry the sandbox
    time it was due at. The action's row is marked in the same transaction. A payout row another
    transaction holds fails it at once (LOCK_REFUSED): the scheduler passes over the action for
    a while (`Scheduler.apply_next`)."""
    if action.action == Action.EXPIRE_QUEUE:
        return await _expire_queued(session, action, timetable)
    payout = await load_payout(
        session, action.payout_id, merchant_id=action.merchant_id, lock=True, nowait=True
    )
    if payout is None:
        await _mark(session, action, Result.SKIPPED, status_after=None)
        return None
    change = PayoutChange(
        payout, correlation_id=correlation_id_of(action.id), step_due_at=action.due_at
    )
    await _take_accepted_outcomes(session, change)
    later: list[dict[str, Any]] = []
    applies = (payout.hold_cycle, payout.status) == (action.hold_cycle, action.expected_status)
    if applies:
        # Its events carry the sandbox time it was due at, and so do those of the queued payouts
        # that the money it puts back starts (written with the change).
        with timetable.time.stamping(action.due_at):
            later = _run_action(change, action, timetable)
            await change.write(session, timetable.time)
    else:
        await change.write(session, timetable.time)
    await write_actions(session, later)
    await _mark(
        session, action, Result.APPLIED if applies else Result.SKIPPED, status_after=payout.status
    )
    return PayoutStatus(payout.status) if change.changed else None


async def _expire_queued(
    session: AsyncSession, action: ScheduledAction, timetable: Timetable
) -> PayoutStatus | None:
    """A queued payout's wait is over: FAILED (QUEUE_EXPIRED) if it is still QUEUED, with the
    payouts queued with it, under their queue's lock (the balance row, taken before the payouts':
    contracts/payout_queue.py). Applied also when the expiry of a payout queued with it took it."""
    with timetable.time.stamping(action.due_at):
        await expire_queued_payouts(
            session,
            merchant_id=action.merchant_id,
            due_by=action.due_at,
            time=timetable.time,
            correlation_id=correlation_id_of(action.id),
        )
    status, failure_code = (
        await session.execute(
            select(Payout.status, Payout.failure_code).where(Payout.id == action.payout_id)
        )
    ).one()
    expired = failure_code == FailureCode.QUEUE_EXPIRED
    await _mark(session, action, Result.APPLIED if expired else Result.SKIPPED, status_after=status)
    return PayoutStatus.FAILED if expired else None


def _run_action(
    change: PayoutChange, action: ScheduledAction, timetable: Timetable
) -> list[dict[str, Any]]:
    """The action's transitions onto the change; the actions it schedules in turn."""
    payout = change.payout
    match Action(action.action):
        case Action.EXPIRE_QUEUE:  # applied under its queue's lock instead (_expire_queued)
            raise AssertionError("a queue's expiry is not a payout change")
        case Action.EXPIRE_DECISION:
            hours = f"{timetable.decision_sla.total_seconds() / 3600:g}"
            transitions.fail(
                change,
                failure_code=FailureCode.DECISION_EXPIRED,
                reason=f"No decision within {hours} h",
            )
            return []
        case Action.SCRIPT_STEP:
            # Scheduled in test mode, a step runs in production too: the script was the
            # payout's (its payout stayed where the step left it, and nothing moved it on).
            script = script_of(payout.amount, payout.account_number, scripted=True)
            step = action.step if action.step is not None else len(script)
            if step >= len(script):
                log.error("scheduled action %s names no step of its script", action.id)
                return []
            if PayoutStatus(payout.status) is PayoutStatus.RETRY:
                transitions.start_processing(change)  # a retry is a new attempt at the PSP
            _apply_decision(change, script[step].decision, retry_delay_ms=None)
            return follow_ups(
                payout, script=script, step=step, at=action.due_at, timetable=timetable
            )


async def _mark(
    session: AsyncSession, action: ScheduledAction, result: Result, *, status_after: str | None
) -> None:
    await session.execute(
        update(ScheduledAction)
        .where(ScheduledAction.id == action.id)
        .values(applied_at=utcnow(), result=result.value, status_after=status_after)
    )


async def apply_psp_outcome(
    session: AsyncSession,
    command: ApplyPspOutcome,
    context: Context,
    timetable: Timetable = DEFAULT_TIMETABLE,
) -> PayoutStatus | None:
    """Apply the outcomes accepted for the payout, in order: its new status, None when there is
    nothing (left) to apply, e.g. this command's outcome was applied with an earlier one."""
    payout = await _lock_payout(session, command.payout_id, command.merchant_id)
    # An outcome of another attempt is never applied to the current one.
    if command.hold_cycle == payout.hold_cycle:
        change = PayoutChange(payout, correlation_id=context.correlation_id)
        await _take_accepted_outcomes(session, change)
        await change.write(session, timetable.time)
        if change.changed:
            return PayoutStatus(payout.status)
    # Applied with an earlier command, of an earlier attempt, or never recorded (an attempt the
    # restore lost included: second fixes review). A read on this path alone.
    if await session.get(PspCallback, command.callback_event_id) is None:
        raise UnrecordedOutcome(command.callback_event_id)
    return None


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
    change.outcome_came(callback.received_at)
    match outcome:
        case PspOutcome.SUCCESS:
            transitions.succeed(change, psp_reference=callback.psp_reference)
        case PspOutcome.FAILED:
            transitions.fail(
                change,
                failure_code=FailureCode.PSP_REJECTED,
                reason=callback.failure_reason or "Rejected by the PSP",
                psp_reference=callback.psp_reference,
            )
        case PspOutcome.REVERSED:
            transitions.reverse(change, reason=callback.failure_reason)
