"""Webhook retries whose message was lost, sent again: the outbox relay's housekeeping.

The webhook service records a failed attempt (RETRYING, and when the retry is due) and then
publishes the retry's message. A service killed between the two leaves a delivery that waits for
a message no queue holds, and it would wait for ever. So every little while the relay looks for
retries overdue by `PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS` whose delivery no attempt holds, and
sends an exact copy of each one's message (contracts.waiting_retries). Should the live message
only be late (the webhook service was down), the copy and it both arrive: whichever comes first
is attempted, and the other is dropped as superseded.
"""

import logging

from contracts.db.engine import SessionFactory, transaction
from contracts.waiting_retries import send_copies, stalled_for, waiting_retries

log = logging.getLogger("outbox-relay")

BATCH = 500


async def resend_stalled_retries(sessions: SessionFactory, *, stalled_seconds: int) -> int:
    """Send a copy of every stalled retry, a batch per transaction, each batch's deliveries
    locked while they are read and marked (so two relays never both send one); how many."""
    statement = waiting_retries(stalled_for(stalled_seconds)).limit(BATCH).with_for_update()
    sent = 0
    while True:
        async with transaction(sessions) as session:
            rows = (await session.execute(statement)).all()
            count = await send_copies(session, rows, correlation_id=None)
        if count:
            log.warning("sent %d webhook retries again: their messages were lost", count)
        sent += count
        if count < BATCH:
            return sent
