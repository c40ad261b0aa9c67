"""Webhook retries whose message was lost, sent again: part of the outbox relay's housekeeping.

The webhook service records a failed attempt (RETRYING, and when the retry is due) and then
publishes the retry's message. A service killed between the two leaves a delivery that waits for
a message no queue holds, and it would wait for ever. So every little while the relay looks for
retries overdue by `PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS` and a quarter of their wait, whose
delivery no attempt holds, and sends an exact copy of each one's message, once per due time
unless that copy gets nowhere (contracts.waiting_retries). Should the live message only be late,
both arrive: whichever comes first is attempted, and the other is dropped as superseded.

A batch reads its candidates without a lock, then locks those deliveries alone, skipping any
another transaction holds (a webhook batch leasing or recording them): the sweep never waits for
a lock, so it can neither stall the webhook service nor deadlock with it.
"""

import logging
from datetime import datetime

from sqlalchemy import Select, bindparam, select

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import WebhookDelivery
from contracts.waiting_retries import (
    copyable_after,
    send_copies,
    stalled_for,
    unleased,
    waiting_retries,
)
from contracts.webhooks import DeliveryStatus
from processor_service.metrics import WEBHOOK_RETRIES_RESENT

log = logging.getLogger("outbox-relay")

BATCH = 500


def _locked_if_still_stalled(seconds: int) -> Select[str, datetime | None]:
    """The candidates still stalled, locked, skipping those another transaction holds."""
    return (
        select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
        .where(
            WebhookDelivery.id.in_(bindparam("b_ids", expanding=True)),
            WebhookDelivery.status == DeliveryStatus.RETRYING.value,
            unleased(),
            copyable_after(seconds),
        )
        .with_for_update(skip_locked=True)
    )


async def resend_stalled_retries(sessions: SessionFactory, *, stalled_seconds: int) -> int:
    """Send a copy of every stalled retry, a batch per transaction; how many."""
    candidates_of = waiting_retries(stalled_for(stalled_seconds)).limit(BATCH)
    lock = _locked_if_still_stalled(stalled_seconds)
    sent = 0
    while True:
        async with transaction(sessions) as session:
            candidates = (await session.execute(candidates_of)).all()
            if not candidates:
                return sent
            ids = {"b_ids": [row.id for row in candidates]}
            locked = {row.id: row.next_attempt_at for row in await session.execute(lock, ids)}
            # A delivery that moved on between the two reads is left to the next round.
            still = [row for row in candidates if locked.get(row.id) == row.next_attempt_at]
            count = await send_copies(session, still, correlation_id=None)
        if count:
            WEBHOOK_RETRIES_RESENT.inc(count)
            log.warning(
                "sent %d overdue webhook retries again: their message is lost or late", count
            )
        sent += count
        if len(candidates) < BATCH or not count:
            return sent
