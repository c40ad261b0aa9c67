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

- A top-up, a released hold (FAILED) and a reversal take the balance row (`ledger.lock_balance`
  in `expire_queued_payouts`; the processor's batch: `ledger.lock_balances`), apply the queue's
  expiries due by then, post, then call `start_queued_payouts`, which updates queued rows (by
  primary key).
- The expiry (a scheduled action of the processor) takes the balance row first (`lock_balance`),
  then updates the queued rows due to expire.
- A create locks only its own new payout row before the balance row (as every create does), and
  a create that ends QUEUED turns that row QUEUED while it holds the balance row.
- A merchant's activation or deactivation (`payouts merchant activate|deactivate`) takes the
  balance row, then the merchant's row; a journal's foreign key takes a shared lock on the
  merchant's row after the balance row, but a create's or a keyed top-up's inserts take it
  before: one of them and a (de)activation may deadlock, and the (de)activation runs again.
- Nothing that holds a queued payout's row ever waits for a balance row: an IPN, a simulation or
  a reinitiate of a QUEUED payout locks its row and refuses (wrong status) without touching money.

So the waits always go balance -> payout rows, never the other way, and two transactions that
change one merchant's queue are serialized on its balance row. That also means no wake-up is
lost: a payout is queued only under the balance row's lock, and every transaction that adds to
the available balance starts what the queue's head allows before it commits (so after each
commit the head, if any, is not covered by the available balance).
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Row, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from contracts import ledger
from contracts.clock import MerchantTime
from contracts.db.engine import utcnow
from contracts.db.models import (
    Balance,
    DirectoryInstitution,
    Merchant,
    Payout,
    PayoutEvent,
    ScheduledAction,
)
from contracts.domain.scheduled_actions import Action, Result
from contracts.domain.statuses import EventType, FailureCode, PayoutStatus
from contracts.payout_events import Announcements
from contracts.status_log import StatusChange, log_once_committed

# Queued payouts read per round while starting a merchant's queue.
START_BATCH = 500
QUEUE_EXPIRED_REASON = "Not started: the available balance stayed short"
# A payout the queue passed over (start_queued_payouts), whatever the balance (diff review).
SWITCHED_OFF_REASON = "Not started: its bank or wallet stayed switched off in the directory"


class QueueChangedConcurrently(Exception):
    """A queued payout changed without the balance row's lock: a bug of the lock order."""


# The directory's row of a payout's bank or wallet: whether it is switched on.
_ITS_INSTITUTION = DirectoryInstitution.code == func.coalesce(Payout.bank_code, Payout.wallet_code)


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

    A deactivated merchant's queue starts nothing: its payouts wait, QUEUED, for its activation
    (`payouts merchant activate`) or their expiry. (Money that came back to it, a released hold
    or a top-up, sent them to the PSP: a suspended merchant's new disbursements.) Nor does a
    payout to a bank or wallet the directory has switched off since it was queued: it waits for
    the code to be switched on again, or its expiry, and the payouts behind it go on (it was
    sent to the closed bank, where a create or a reinitiation is refused: bene review).

    One statement when the queue is empty (the common case)."""
    started: list[Payout] = []
    startable = (
        _queued_of(merchant_id)
        .join(Merchant, Merchant.id == Payout.merchant_id)
        .join(DirectoryInstitution, _ITS_INSTITUTION)
        .where(Merchant.is_active.is_(True), DirectoryInstitution.is_active.is_(True))
        .limit(START_BATCH)
    )
    while True:
        queued = list(await session.scalars(startable))
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


_LAST_EVENTS = (  # ix_events_payout_type_time; built once
    select(PayoutEvent.payout_id, func.max(PayoutEvent.created_at))
    .where(PayoutEvent.payout_id.in_(bindparam("b_payouts", expanding=True)))
    .group_by(PayoutEvent.payout_id)
)


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
    # Each stays in the lane it was created in: one released with others into the bulk lane
    # had its `payout.dequeued` delivered before its `payout.queued`, still in the single
    # payouts' backlog (lanes review).
    await _move_queued(session, payouts, status=PayoutStatus.PENDING.value, updated_at=now)
    await _retire_expiries(session, payouts, Result.SKIPPED, PayoutStatus.PENDING)
    announcements = Announcements(correlation_id)
    # After each payout's `payout.queued`: written by the transaction that queued it, which a
    # top-up waiting for the balance row it held follows at once, or by this one (a payroll's
    # item a top-up covered meanwhile). Stamped in the same millisecond, a merchant ordering a
    # payout's webhooks by `createdAt` could not tell which came last (read-after-webhook and
    # diff reviews).
    for payout_id, stamp in await session.execute(
        _LAST_EVENTS, {"b_payouts": [payout.id for payout in payouts]}
    ):
        announcements.after(payout_id, stamp)
    for payout in payouts:
        set_committed_value(payout, "status", PayoutStatus.PENDING.value)
        set_committed_value(payout, "updated_at", now)
        announcements.event(payout, EventType.DEQUEUED)
        announcements.process(payout)
    await announcements.write(session)
    _log_moves(session, payouts, PayoutStatus.PENDING, correlation_id)
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


async def _retire_expiries(
    session: AsyncSession, payouts: list[Payout], result: Result, status_after: PayoutStatus
) -> None:
    """The expiries of payouts the queue started (SKIPPED) or expired (APPLIED) are done with
    now, not when the scheduler gets to them (the clock listed them as due, and an advance past
    them waited while the scheduler skipped them one by one). One a scheduler holds right now is
    left to it: it finds the payout started, or expired."""
    free = await session.scalars(
        select(ScheduledAction.id)
        .where(
            ScheduledAction.payout_id.in_([payout.id for payout in payouts]),
            # ix_scheduled_actions_payout
            ScheduledAction.action == Action.EXPIRE_QUEUE.value,
            ScheduledAction.applied_at.is_(None),
        )
        .with_for_update(skip_locked=True)
    )
    ids = list(free)
    if ids:
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.id.in_(ids))
            .values(applied_at=utcnow(), result=result.value, status_after=status_after.value)
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


@dataclass(frozen=True)
class QueueExpiry:
    """How long a queued payout waits for money (PAYOUTS_QUEUED_EXPIRY_HOURS), on its merchant's
    time: its sandbox clock in test mode, real time in production."""

    after: timedelta
    time: MerchantTime


async def schedule_expiry(
    session: AsyncSession, payouts: Sequence[Payout], expiry: QueueExpiry
) -> None:
    """The queued payouts' expiry, due `expiry.after` from now on their merchant's time (a
    sandbox clock already ahead counts from where it is): a scheduled action the processor
    applies (`expire_queued_payouts`), so advancing the clock expires queued payouts too. One due
    time for all (a payroll's items queued together expire together). In the transaction that
    queues them; the clock's offset is read without a lock (the balance row is held: the
    scheduler takes a clock's row before a balance row)."""
    merchant_id = payouts[0].merchant_id
    offset = await expiry.time.offset_now(session, merchant_id)
    now = utcnow()
    due_at = now + timedelta(seconds=offset) + expiry.after
    await session.execute(
        insert(ScheduledAction),
        [
            {
                "merchant_id": merchant_id,
                "payout_id": payout.id,
                "hold_cycle": payout.hold_cycle,
                "action": Action.EXPIRE_QUEUE.value,
                "expected_status": PayoutStatus.QUEUED.value,
                "due_at": due_at,
                "created_at": now,
            }
            for payout in payouts
        ],
    )


async def expire_queued_payouts(
    session: AsyncSession,
    *,
    merchant_id: str,
    due_by: datetime | ColumnElement[datetime],
    time: MerchantTime,
    correlation_id: str | None,
) -> tuple[list[Payout], list[Payout]]:
    """QUEUED -> FAILED (QUEUE_EXPIRED, nothing to release: nothing was held), with their
    `payout.failed` events, for the merchant's payouts still QUEUED whose expiry is due by
    `due_by`, in due order: those due at one time expire together (a payroll's items queued
    together, before the money they leave starts anything), then the queue's new head may start,
    and only then do the next ones expire. So the expiry of a later payout, applied first (two
    processors each took one), expires the earlier one as its own expiry would have, and leaves
    alone a payout that expiry would have started. The events of each carry the sandbox time it
    was due at, on `time`'s clocks, as the scheduler's do. (expired, started). Takes the balance row
    first (the queue's lock, see above), so the scheduler's action may run beside any top-up or
    create. Guarded by status: run again, it changes nothing."""
    await ledger.lock_balance(session, merchant_id=merchant_id)
    expiry = (
        select(func.min(ScheduledAction.due_at))
        .where(  # ix_scheduled_actions_payout
            ScheduledAction.payout_id == Payout.id,
            ScheduledAction.action == Action.EXPIRE_QUEUE.value,
            ScheduledAction.applied_at.is_(None),
        )
        .scalar_subquery()
    )
    switched_on = select(DirectoryInstitution.is_active).where(_ITS_INSTITUTION).scalar_subquery()
    due = await session.execute(
        _queued_of(merchant_id).add_columns(expiry, switched_on).where(expiry <= due_by)
    )
    expired: list[Payout] = []
    started: list[Payout] = []
    for due_at, together in groupby(sorted(due, key=_due_at), key=_due_at):
        expiring = [(payout, on) for payout, _, on in together if payout not in started]
        if expiring:
            with time.stamping(due_at):
                for reason, payouts in (
                    (QUEUE_EXPIRED_REASON, [payout for payout, on in expiring if on]),
                    (SWITCHED_OFF_REASON, [payout for payout, on in expiring if not on]),
                ):
                    if payouts:
                        await _expire(session, payouts, reason, correlation_id=correlation_id)
                        expired += payouts
                started += await start_queued_payouts(
                    session, merchant_id=merchant_id, correlation_id=correlation_id
                )
    return expired, started


async def merchants_with_a_queue(session: AsyncSession, merchant_ids: Collection[str]) -> set[str]:
    """Those of the merchants with QUEUED payouts. The caller holds their balance rows (the
    queues' locks), so the answer holds until it commits."""
    found = await session.scalars(
        select(Payout.merchant_id)
        .where(  # ix_payouts_merchant_status_created
            Payout.merchant_id.in_(sorted(merchant_ids)),
            Payout.status == PayoutStatus.QUEUED.value,
        )
        .distinct()
    )
    return set(found)


def _due_at(row: Row[Payout, datetime]) -> datetime:
    return row[1]


async def _expire(
    session: AsyncSession, payouts: list[Payout], reason: str, *, correlation_id: str | None
) -> None:
    now = utcnow()
    changes = {
        "status": PayoutStatus.FAILED.value,
        "failure_code": FailureCode.QUEUE_EXPIRED,
        "failure_reason": reason,
        "processed_at": now,
        "updated_at": now,
    }
    await _move_queued(session, payouts, **changes)
    await _retire_expiries(session, payouts, Result.APPLIED, PayoutStatus.FAILED)
    announcements = Announcements(correlation_id)
    for payout in payouts:
        for name, value in changes.items():
            set_committed_value(payout, name, value)
        announcements.event(payout, EventType.FAILED)
    await announcements.write(session)
    _log_moves(session, payouts, PayoutStatus.FAILED, correlation_id)


def _log_moves(
    session: AsyncSession, payouts: list[Payout], to: PayoutStatus, correlation_id: str | None
) -> None:
    """The queue's moves are status changes too: logged like the processor's, once committed."""
    queued = PayoutStatus.QUEUED.value
    log_once_committed(
        session,
        (
            StatusChange(payout.id, payout.merchant_id, correlation_id, queued, to, payout.attempts)
            for payout in payouts
        ),
    )
