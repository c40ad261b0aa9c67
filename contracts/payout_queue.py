"""A merchant's queue of QUEUED payouts (queue when short, `queueIfLowBalance`): putting a payout
in it, starting the queued payouts the available balance covers, expiring the old ones.

Order: strict FIFO by (created_at, id). The queue's head that the available balance does not
cover blocks the payouts behind it, even smaller ones that would fit: a payroll queued in order
starts in order, and a large queued payout is never overtaken by smaller queued ones. A new
payout the available balance covers is not queued at all (it is held at once, even while older
payouts wait): money that comes back goes to the queue first, but creates may spend what is left.

Lock order (deadlock freedom). The merchant's balance row is the lock of the merchant's queue:
every change to the queue (a payout queued, started, or expired) happens in a transaction that
holds that row, taken before any queued payout row:

    balance row (the money move's UPDATE, or `ledger.lock_balance`)  ->  queued payout rows

- A top-up, a released hold (FAILED) and a reversal lock the balance row by their own posting,
  then call `start_queued_payouts`, which updates queued rows (by primary key).
- The expiry takes the balance row first (`lock_balance`), then updates its queued rows.
- A create locks only its own new payout row before the balance row (as every create does), and
  a create that ends QUEUED turns that row QUEUED while it holds the balance row.
- Nothing that holds a queued payout's row ever waits for a balance row: an IPN, a simulation or
  a reinitiate of a QUEUED payout locks its row and refuses (wrong status) without touching money.

So the waits always go balance -> payout rows, never the other way, and two transactions that
change one merchant's queue are serialized on its balance row. That also means no wake-up is
lost: a payout is queued only under the balance row's lock, and every transaction that adds to
the available balance starts what the queue's head allows before it commits (so after each
commit the head, if any, is not covered by the available balance).
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from contracts import ledger
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Balance, Payout
from contracts.domain.statuses import QUEUE_EXPIRED, EventType, PayoutStatus
from contracts.payout_events import Announcements

log = logging.getLogger("payout-queue")

# Queued payouts read per round while starting a merchant's queue.
START_BATCH = 500
# Expired payouts claimed per round across merchants (each merchant then in its own transaction).
EXPIRY_BATCH = 500
QUEUE_EXPIRED_REASON = "Not started: the available balance stayed short"


class QueueChangedConcurrently(Exception):
    """A queued payout changed without the balance row's lock: a bug of the lock order."""


def _queued_of(merchant_id: str) -> Any:
    return (
        select(Payout)
        .where(Payout.merchant_id == merchant_id, Payout.status == PayoutStatus.QUEUED.value)
        .order_by(Payout.created_at, Payout.id)
        .execution_options(populate_existing=True)
    )


async def start_queued_payouts(
    session: AsyncSession, *, merchant_id: str, correlation_id: str | None
) -> list[Payout]:
    """QUEUED -> PENDING for the merchant's queued payouts the available balance covers, oldest
    first, stopping at the first that it does not cover; each exactly like a create that had the
    funds: its HOLD journal, its `payout.dequeued` event and its ProcessPayout command, all in the
    caller's transaction. The caller must hold the merchant's balance row (see the module's lock
    order): it has just moved money into available, or called `ledger.lock_balance`.

    One statement when the queue is empty (the common case)."""
    started: list[Payout] = []
    while True:
        queued = list(await session.scalars(_queued_of(merchant_id).limit(START_BATCH)))
        if not queued:
            return started
        available = await session.scalar(
            select(Balance.available).where(Balance.merchant_id == merchant_id)
        )
        fitting = _covered_in_order(queued, Decimal(available or 0))
        if fitting:
            await _start(session, fitting, correlation_id=correlation_id)
            started += fitting
        if len(fitting) < len(queued) or len(queued) < START_BATCH:
            return started


def _covered_in_order(queued: Sequence[Payout], available: Decimal) -> list[Payout]:
    """The queue's longest head the available balance covers (strict FIFO)."""
    fitting = []
    for payout in queued:
        if payout.amount > available:
            break
        available -= payout.amount
        fitting.append(payout)
    return fitting


async def _start(
    session: AsyncSession, payouts: list[Payout], *, correlation_id: str | None
) -> None:
    now = utcnow()
    await _move_queued(session, payouts, status=PayoutStatus.PENDING.value, updated_at=now)
    announcements = Announcements(correlation_id)
    for payout in payouts:
        set_committed_value(payout, "status", PayoutStatus.PENDING.value)
        set_committed_value(payout, "updated_at", now)
        announcements.event(payout, EventType.DEQUEUED)
        announcements.process(payout)
    await announcements.write(session)
    # The holds last: the balance row is this transaction's already, but the postings read the
    # balances they leave behind from it.
    if len(payouts) == 1:
        [payout] = payouts
        await ledger.hold_funds(
            session,
            merchant_id=payout.merchant_id,
            payout_id=payout.id,
            hold_cycle=payout.hold_cycle,
            amount=payout.amount,
        )
    else:
        await ledger.hold_many(
            session,
            merchant_id=payouts[0].merchant_id,
            holds=[(payout.id, payout.amount) for payout in payouts],
        )


async def _move_queued(session: AsyncSession, payouts: list[Payout], **values: Any) -> None:
    """One guarded UPDATE of the payouts, every one of which must still be QUEUED."""
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(Payout)
            .where(
                Payout.id.in_([payout.id for payout in payouts]),
                Payout.status == PayoutStatus.QUEUED.value,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != len(payouts):
        raise QueueChangedConcurrently([payout.id for payout in payouts])


async def expire_merchant_queue(
    session: AsyncSession, *, merchant_id: str, queued_before: datetime, correlation_id: str | None
) -> tuple[list[Payout], list[Payout]]:
    """QUEUED -> FAILED (QUEUE_EXPIRED, nothing to release: nothing was held) for the merchant's
    payouts queued before `queued_before`, with their `payout.failed` events; then the queue's
    new head may start. (expired, started). Guarded by status: running it twice changes nothing
    the second time."""
    await ledger.lock_balance(session, merchant_id=merchant_id)  # the queue's lock, first
    expired = list(
        await session.scalars(
            _queued_of(merchant_id).where(Payout.created_at < queued_before).limit(EXPIRY_BATCH)
        )
    )
    if not expired:
        return [], []
    now = utcnow()
    changes = {
        "status": PayoutStatus.FAILED.value,
        "failure_code": QUEUE_EXPIRED,
        "failure_reason": QUEUE_EXPIRED_REASON,
        "processed_at": now,
        "updated_at": now,
    }
    await _move_queued(session, expired, **changes)
    announcements = Announcements(correlation_id)
    for payout in expired:
        for name, value in changes.items():
            set_committed_value(payout, name, value)
        announcements.event(payout, EventType.FAILED)
    await announcements.write(session)
    started = await start_queued_payouts(
        session, merchant_id=merchant_id, correlation_id=correlation_id
    )
    return expired, started


async def expire_queued_payouts(
    sessions: SessionFactory, *, max_age: timedelta, now: datetime | None = None
) -> int:
    """Every payout QUEUED for longer than `max_age` fails with QUEUE_EXPIRED: the oldest found
    across merchants through `ix_payouts_status_created`, then one transaction per merchant.
    At-least-once safe: each transaction re-reads its payouts under the merchant's balance row
    lock and changes only those still QUEUED (another relay's round, or a start, may have come
    first). The number of payouts expired."""
    cutoff = (now or utcnow()) - max_age
    total = 0
    while True:
        async with sessions() as session:
            merchants = list(
                await session.scalars(
                    select(Payout.merchant_id)
                    .where(Payout.status == PayoutStatus.QUEUED.value, Payout.created_at < cutoff)
                    .order_by(Payout.created_at)
                    .limit(EXPIRY_BATCH)
                )
            )
        if not merchants:
            return total
        expired_this_round = 0
        for merchant_id in dict.fromkeys(merchants):  # distinct, oldest first
            async with transaction(sessions) as session:
                expired, started = await expire_merchant_queue(
                    session, merchant_id=merchant_id, queued_before=cutoff, correlation_id=None
                )
            expired_this_round += len(expired)
            if expired:
                log.info(
                    "expired %d queued payouts of merchant %s (%d started after)",
                    len(expired),
                    merchant_id,
                    len(started),
                )
        total += expired_this_round
        if len(merchants) < EXPIRY_BATCH or not expired_this_round:
            return total
