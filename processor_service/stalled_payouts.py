"""RETRY payouts whose delayed command was lost, sent on again: part of the outbox relay's
housekeeping.

A payout that fails transiently (account ending 0002) goes to RETRY with a ProcessPayout command
that waits `PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS` in a RabbitMQ TTL queue. RabbitMQ can lose
such a message when it stops while dead-lettering it at the end of its wait (seen in this
repository's fault tests: `rabbitmqctl stop_app` a moment after five payouts went to RETRY, and
their commands never came back). The payout would wait in RETRY for ever. So the relay looks,
every `PAYOUTS_PROCESSOR_STALLED_RETRY_SECONDS`, for payouts in RETRY for longer than the delay
and that time whose attempt is not scripted (a scripted one waits for the sandbox clock, not for
a message), and sends each one's command again. The command names its attempt: whichever copy
comes first makes the attempt, and any other finds it made and changes nothing.

The payout is not marked: while it stays in RETRY (the processor down or far behind, its command
failing into the dead-letter queue) it gets a copy every round, and one from each relay replica.
"""

import logging
from datetime import timedelta

from sqlalchemy import exists, select

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Payout, ScheduledAction
from contracts.domain.statuses import PayoutStatus
from contracts.payout_events import Announcements, write_announcements
from processor_service.metrics import PAYOUT_RETRIES_RESENT

log = logging.getLogger("outbox-relay")

BATCH = 500


async def resend_stalled_payout_retries(
    sessions: SessionFactory, *, stalled_seconds: int, retry_delay_seconds: float
) -> int:
    """Send again the command of up to BATCH payouts stalled in RETRY (the next round takes
    more), in one transaction (ix_payouts_status_updated; the payouts locked, skipping any the
    processor holds); how many."""
    waiting_since = utcnow() - timedelta(seconds=retry_delay_seconds + stalled_seconds)
    stalled = (
        select(Payout)
        .where(
            Payout.status == PayoutStatus.RETRY.value,
            Payout.updated_at <= waiting_since,
            # Not scripted: a scripted attempt waits for its steps (ix_scheduled_actions_payout).
            ~exists().where(
                ScheduledAction.payout_id == Payout.id,
                ScheduledAction.hold_cycle == Payout.hold_cycle,
            ),
        )
        .order_by(Payout.updated_at, Payout.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )
    async with transaction(sessions) as session:
        payouts = list(await session.scalars(stalled))
        announcements = Announcements(correlation_id=None)
        for payout in payouts:
            announcements.process(payout)
        await write_announcements(session, [announcements])
    if payouts:
        PAYOUT_RETRIES_RESENT.inc(len(payouts))
        log.warning("sent again the commands of %d payouts stalled in RETRY", len(payouts))
    return len(payouts)
