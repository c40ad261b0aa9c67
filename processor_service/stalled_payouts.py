"""Payouts waiting for a command no queue carries any more, sent it again: part of the outbox
relay's housekeeping.

A payout can lose its command three ways:
- RETRY (account ending 0002): its ProcessPayout waits `PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS`
  in a RabbitMQ TTL queue, and RabbitMQ can lose it when it stops while dead-lettering it at the
  end of its wait (seen in this repository's fault tests: `rabbitmqctl stop_app` a moment after
  five payouts went to RETRY, and their commands never came back);
- PENDING, not yet submitted: its first ProcessPayout went to `processor.payout-commands.dead`
  at its delivery limit, with nothing wrong with it. Before RabbitMQ 4.3 every return of an
  unacknowledged message counts as a delivery, so a processor that crash-loops (killed mid-batch
  again and again) pushes the whole of its prefetch there;
- an outcome accepted from the PSP (an IPN, a simulation) and not applied: its ApplyPspOutcome
  went to `processor.psp-outcomes.dead` the same way. The PSP got its 200 and sends it no more.

Each would wait for an operator for ever, its funds held. So the relay looks, every
`PAYOUTS_PROCESSOR_STALLED_RETRY_SECONDS`, for payouts waiting like that for longer than the
retry delay and that time, and sends each one's command again:
- a ProcessPayout to a payout in RETRY, or PENDING without a PSP reference, whose attempt is not
  scripted (a scripted one waits for the sandbox clock, not for a message). The command names
  its attempt: whichever copy comes first makes the attempt, any other finds it made. It carries
  the sandbox time of the payout's latest event, when its clock caused that change (clock_times);
- an ApplyPspOutcome to a payout with outcomes of its current attempt accepted that long ago and
  not applied. The processor applies every accepted outcome of the attempt at once, in order, and
  a copy finds nothing left to apply.

The payout is not marked: while it waits (the processor down or far behind, its command failing
into the dead-letter queue) it gets a copy every round, and one from each relay replica.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import SANDBOX_TIME, MerchantTime
from contracts.db.engine import SessionFactory, naive_utc, transaction, utcnow
from contracts.db.models import Payout, PayoutEvent, PspCallback, ScheduledAction
from contracts.domain.scheduled_actions import Action
from contracts.domain.statuses import PayoutStatus, PspOutcome
from contracts.logging import some_of
from contracts.messages import PayoutStatusChanged
from contracts.payout_events import Announcements, write_announcements
from contracts.pipeline_health import accepted_outcome_waiting
from processor_service.metrics import PAYOUT_RETRIES_RESENT

log = logging.getLogger("outbox-relay")

BATCH = 500
# The correlation id of what this sweep sends (no request caused it): its messages, its log lines.
CORRELATION_ID = "sweep-stalled-payouts"


async def resend_stalled_payout_commands(
    sessions: SessionFactory,
    *,
    stalled_seconds: int,
    retry_delay_seconds: float,
    time: MerchantTime = SANDBOX_TIME,
) -> int:
    """Send again the command of up to BATCH payouts waiting for processing and of up to BATCH
    payouts waiting for their accepted outcomes (the next round takes more), in one transaction;
    how many. A command says which sandbox time started its payout on sandbox clocks only
    (`time`; in production, a payout started in test mode says nothing of it)."""
    waiting_since = utcnow() - timedelta(seconds=retry_delay_seconds + stalled_seconds)
    announcements = Announcements(correlation_id=CORRELATION_ID)
    async with transaction(sessions) as session:
        unprocessed = list(await session.scalars(awaiting_processing(waiting_since)))
        started_by_the_clock = await clock_times(session, [payout.id for payout in unprocessed])
        for payout in unprocessed:
            with time.stamping(started_by_the_clock.get(payout.id)):
                announcements.process(payout)
        # One command per payout applies all its accepted outcomes: its first one's.
        unapplied: dict[str, tuple[Payout, PspCallback]] = {}
        for payout, callback in await session.execute(awaiting_accepted_outcomes(waiting_since)):
            unapplied.setdefault(payout.id, (payout, callback))
        for payout, callback in unapplied.values():
            announcements.apply_outcome(
                payout,
                event_id=callback.event_id,
                outcome=PspOutcome(callback.outcome),
                psp_reference=callback.psp_reference,
                failure_reason=callback.failure_reason,
            )
        await write_announcements(session, [announcements])
    sent = len(unprocessed) + len(unapplied)
    if sent:
        PAYOUT_RETRIES_RESENT.inc(sent)
        log.warning(
            "sent again the commands of %d payouts waiting for processing and %d waiting for an "
            "accepted PSP outcome (payouts %s)",
            len(unprocessed),
            len(unapplied),
            some_of(list(dict.fromkeys([payout.id for payout in unprocessed] + list(unapplied)))),
        )
    return sent


async def clock_times(session: AsyncSession, payout_ids: Sequence[str]) -> dict[str, datetime]:
    """The sandbox time of each payout whose latest change its merchant's sandbox clock caused
    (a step that started it from the queue, or the attempts since): its command carried that
    time, and a copy must too. Sent without it, a payout a 51-hour advance started at 10 h ran
    its script from 51 h, its reversal put off by 41 hours."""
    if not payout_ids:
        return {}
    rows = await session.execute(
        select(PayoutEvent.payout_id, PayoutEvent.body)
        .where(PayoutEvent.payout_id.in_(payout_ids))
        .order_by(PayoutEvent.created_at)
    )
    latest = {payout_id: body for payout_id, body in rows}  # the last of each payout's wins
    times = {
        payout_id: PayoutStatusChanged.model_validate_json(body).sandbox_time
        for payout_id, body in latest.items()
    }
    return {payout_id: naive_utc(at) for payout_id, at in times.items() if at is not None}


def awaiting_processing(waiting_since: datetime) -> Select[Payout]:
    """RETRY, or PENDING not submitted, since before `waiting_since`, not scripted; locked,
    skipping any the processor holds (ix_payouts_status_updated)."""
    return (
        select(Payout)
        .where(
            Payout.status.in_([PayoutStatus.RETRY.value, PayoutStatus.PENDING.value]),
            Payout.updated_at <= waiting_since,
            # PENDING with a PSP reference was submitted: it waits for an IPN by design.
            or_(Payout.status == PayoutStatus.RETRY.value, Payout.psp_reference.is_(None)),
            # Not scripted: a scripted attempt waits for its steps (ix_scheduled_actions_payout).
            # A started payout's queue expiry is no step.
            ~exists().where(
                ScheduledAction.payout_id == Payout.id,
                ScheduledAction.hold_cycle == Payout.hold_cycle,
                ScheduledAction.action != Action.EXPIRE_QUEUE.value,
            ),
        )
        .order_by(Payout.updated_at, Payout.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )


def awaiting_accepted_outcomes(waiting_since: datetime) -> Select[Payout, PspCallback]:
    """The outcomes of payouts' current attempts accepted before `waiting_since` and not
    applied, with their payouts."""
    return (
        select(Payout, PspCallback)
        .join(Payout, accepted_outcome_waiting(waiting_since))
        .order_by(PspCallback.received_at, PspCallback.accept_seq)
        .limit(BATCH)
    )
