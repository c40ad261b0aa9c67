"""Webhook retries whose message was lost, or is late on the merchant's sandbox clock, sent again:
part of the outbox relay's housekeeping.

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
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, bindparam, select

from contracts.clock import SANDBOX_TIME, MerchantTime
from contracts.db.engine import SessionFactory, plus_seconds, transaction
from contracts.db.models import SandboxClock, WebhookDelivery
from contracts.logging import some_of
from contracts.waiting_retries import (
    copyable_after,
    not_copied,
    send_copies,
    stalled_for,
    unleased,
    waiting_retries,
)
from contracts.webhooks import DeliveryStatus
from processor_service.metrics import WEBHOOK_RETRIES_RESENT

log = logging.getLogger("outbox-relay")

BATCH = 500
# The correlation id of what this sweep sends (no request caused it): its messages, its log lines.
CORRELATION_ID = "sweep-stalled-retries"
# An advance made up to this long before a failed attempt was recorded may be one the attempt
# did not see (due_on_an_advanced_clock).
ADVANCE_OVERLAP = timedelta(seconds=10)


def _locked_if_still(condition: ColumnElement[bool]) -> Select[str, datetime | None]:
    """The candidates still retrying and meeting `condition`, locked, skipping those another
    transaction holds."""
    return (
        select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
        .where(
            WebhookDelivery.id.in_(bindparam("b_ids", expanding=True)),
            WebhookDelivery.status == DeliveryStatus.RETRYING.value,
            condition,
        )
        .with_for_update(skip_locked=True)
    )


async def _copy_in_batches(
    sessions: SessionFactory,
    candidates: ColumnElement[bool],
    still: ColumnElement[bool],
    sent_copies: Callable[[list[str]], None],
    time: MerchantTime,
) -> int:
    """Send a copy of every retry that meets `candidates`, and `still` once locked, a batch per
    transaction; `sent_copies` hears of each batch's copies (their payouts); how many in all."""
    candidates_of = waiting_retries(candidates, time).limit(BATCH)
    lock = _locked_if_still(still)
    sent = 0
    while True:
        async with transaction(sessions) as session:
            rows = (await session.execute(candidates_of)).all()
            if not rows:
                return sent
            ids = {"b_ids": [row.id for row in rows]}
            locked = {row.id: row.next_attempt_at for row in await session.execute(lock, ids)}
            # A delivery that moved on between the two reads is left to the next round.
            moved_on = [row for row in rows if locked.get(row.id) == row.next_attempt_at]
            copied = await send_copies(session, moved_on, correlation_id=CORRELATION_ID)
        if copied:
            sent_copies(copied)
        sent += len(copied)
        if len(rows) < BATCH or not copied:
            return sent


async def resend_stalled_retries(
    sessions: SessionFactory, *, stalled_seconds: int, time: MerchantTime
) -> int:
    """Send a copy of every stalled retry (late on `time`); how many."""

    def stalled(payouts: list[str]) -> None:
        WEBHOOK_RETRIES_RESENT.inc(len(payouts))
        log.warning(
            "sent %d overdue webhook retries again: their message is lost or late (payouts %s)",
            len(payouts),
            some_of(payouts),
        )

    still_stalled = and_(unleased(), copyable_after(stalled_seconds))
    return await _copy_in_batches(
        sessions, stalled_for(stalled_seconds, time), still_stalled, stalled, time
    )


_ADVANCED_CLOCKS = select(SandboxClock.merchant_id).where(SandboxClock.offset_seconds > 0)


def due_on_an_advanced_clock() -> ColumnElement[bool]:
    """A retry that its merchant's sandbox clock made due after an advance that did not reach
    it: the clock was advanced after the failed attempt before it was recorded, so its message
    waits in its TTL queue for the rest of its step in real time, and the sandbox time, moving on
    from the advance, reached its due time since. Held by no attempt, and not copied yet. (The
    advance itself sends the retries it makes due: api_service.sandbox.webhook_retries.)

    "After" allows ADVANCE_OVERLAP: an attempt that read the clock while an advance was under
    way (stamped, not committed) was timed on the old offset and recorded after the stamp, and
    the advance's own release skipped it, leased. A retry recorded just after an advance, timed
    on the new clock, gets a copy it did not need, which is dropped as superseded. The merchants
    with an advanced clock only."""
    advanced_at = (
        select(SandboxClock.updated_at)
        .where(SandboxClock.merchant_id == WebhookDelivery.merchant_id)
        .scalar_subquery()
    )
    recorded_before_the_advance = WebhookDelivery.updated_at < plus_seconds(
        int(ADVANCE_OVERLAP.total_seconds()), advanced_at
    )
    return and_(
        WebhookDelivery.merchant_id.in_(_ADVANCED_CLOCKS),
        recorded_before_the_advance,
        WebhookDelivery.next_attempt_at <= SANDBOX_TIME.now_of(WebhookDelivery.merchant_id),
        unleased(),
        not_copied(),
    )


async def release_retries_due_on_advanced_clocks(sessions: SessionFactory) -> int:
    """Send a copy of every retry due_on_an_advanced_clock; how many. (Its message would come
    back a step of real time after its attempt: after its due time on the merchant's clock.)"""

    def released(payouts: list[str]) -> None:
        log.info(
            "sent %d webhook retries their merchant's advanced clock made due (payouts %s)",
            len(payouts),
            some_of(payouts),
        )

    async with sessions() as session:  # the idle case: one read of a few rows, every second
        if await session.scalar(_ADVANCED_CLOCKS.limit(1)) is None:
            return 0
    due = due_on_an_advanced_clock()
    return await _copy_in_batches(sessions, due, due, released, SANDBOX_TIME)
