"""Every payout status transition after creation, one function each.

A consumed message's transitions are collected on a PayoutChange: each is checked against the
status it starts from and applied to the locked payout in memory, with its status event (the
payout as it was at that change). `write_changes` then stores them, one change or a batch's
changes, in the caller's transaction: one guarded UPDATE per payout row, the events and commands
of them all in two multi-row INSERTs, and the ledger postings last, so the merchants' balance
rows are locked only from their UPDATEs to the commit (from before them, in a batch that
returns money). A transition whose expected status is gone raises StaleTransition.
A transition that returns money to available (FAILED, REVERSED) first applies the merchant's
overdue queue expiries, then starts the QUEUED payouts it covers (contracts/payout_queue.py), in
the same transaction.

The queue's own transitions are not here: created -> QUEUED is the create's
(api_service/payouts/service.py); QUEUED -> PENDING and QUEUED -> FAILED (expiry) are in
contracts/payout_queue.py, shared by the API (top-up), the processor (here) and the relay's
housekeeping (expiry). contracts/domain/statuses.py lists them.
"""

import functools
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Update, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from contracts import ledger
from contracts.clock import MerchantTime, stamping_sandbox_time
from contracts.db.engine import utcnow
from contracts.db.models import Payout, table_of
from contracts.domain.psp_references import psp_reference_for
from contracts.domain.statuses import (
    AWAITING_PSP_DECISION,
    EVENT_FOR_STATUS,
    FailureCode,
    PayoutStatus,
)
from contracts.payout_events import Announcements, write_announcements
from contracts.payout_queue import (
    expire_queued_payouts,
    merchants_with_a_queue,
    start_queued_payouts,
)
from contracts.status_log import StatusChange, log_once_committed

AWAITING_PROCESSING = frozenset({PayoutStatus.PENDING, PayoutStatus.RETRY})

# The postings of a payout's hold, in the order they are written: one change may post its
# payout out and reverse it (two PSP outcomes applied together), never the other way round.
POSTING_ORDER = (ledger.PAYOUT, ledger.RELEASE, ledger.REVERSAL)

# Postings that put money back into the merchant's available balance: a released hold (FAILED)
# and a reversal. After them, the merchant's queued payouts may start.
FUNDS_RETURNING = frozenset({ledger.RELEASE, ledger.REVERSAL})


class StaleTransition(Exception):
    """The payout is no longer in a status this transition starts from."""


@functools.cache
def _guarded_update(columns: frozenset[str]) -> Update:
    """UPDATE payouts of `columns` where the payout still has the status it was loaded with,
    built once per set of columns (on the Core table: the ORM would copy and key it per use)."""
    payouts = table_of(Payout)
    return (
        update(payouts)
        .where(payouts.c.id == bindparam("b_id"), payouts.c.status == bindparam("b_loaded_status"))
        .values({name: bindparam(f"v_{name}", type_=payouts.c[name].type) for name in columns})
    )


class PayoutChange:
    """What one transaction does to one payout, whose row the caller has locked."""

    def __init__(
        self,
        payout: Payout,
        *,
        correlation_id: str | None,
        sandbox_time: datetime | None = None,
        step_due_at: datetime | None = None,
    ) -> None:
        """`sandbox_time`: when the change happened on the merchant's sandbox clock, if the clock
        caused it (a payout a clock step started from the queue); the queued payouts the money
        it returns starts carry it too. `step_due_at`: the due time of the scheduled step that
        makes the change, on the merchant's time (its sandbox clock, or real time in
        production)."""
        self.payout = payout
        self.sandbox_time = sandbox_time
        self.step_due_at = step_due_at
        # Real time: when the payout's attempt started (its last change: a processor behind
        # judges the attempt from then, as it schedules its steps), and when the API received
        # the latest PSP outcome the change applies, if any.
        self.attempt_started_at: datetime = payout.updated_at
        self.outcome_received_at: datetime | None = None
        self.announcements = Announcements(correlation_id)
        self._loaded_status = payout.status
        self._values: dict[str, Any] = {}
        self.postings: list[ledger.Posting] = []
        # (from, to, attempt) of each status change, logged once committed (contracts.status_log)
        self.moves: list[tuple[str, PayoutStatus, int]] = []

    def move(
        self, *, allowed_from: Collection[PayoutStatus], to: PayoutStatus, **changes: Any
    ) -> None:
        """A guarded status change and its event; the in-memory payout mirrors it at once."""
        if PayoutStatus(self.payout.status) not in allowed_from:
            raise StaleTransition(f"{self.payout.id}: {self.payout.status} -> {to}")
        moved_from = self.payout.status
        self.set(status=to.value, updated_at=utcnow(), **changes)
        self.announcements.event(self.payout, EVENT_FOR_STATUS[to])
        self.moves.append((moved_from, to, self.payout.attempts))

    def outcome_came(self, received_at: datetime) -> None:
        """The change applies a PSP outcome the API received at `received_at`."""
        self.outcome_received_at = max(self.outcome_received_at or received_at, received_at)

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            set_committed_value(self.payout, name, value)
        self._values.update(values)

    def post(self, posting: ledger.Posting) -> None:
        """A ledger posting of the payout's current hold, written last."""
        self.postings.append(posting)

    @property
    def changed(self) -> bool:
        return bool(self._values)

    async def write(self, session: AsyncSession, time: MerchantTime) -> None:
        await write_changes(session, [self], time)

    async def write_row(self, session: AsyncSession) -> None:
        """The guarded UPDATE of the payout row, if anything changed."""
        if not self._values:
            return
        result = cast(
            CursorResult[Any],
            await session.execute(
                _guarded_update(frozenset(self._values)),
                {f"v_{name}": value for name, value in self._values.items()}
                | {"b_id": self.payout.id, "b_loaded_status": self._loaded_status},
            ),
        )
        if result.rowcount != 1:
            raise StaleTransition(f"{self.payout.id}: changed concurrently")

    def entry(self) -> ledger.Entry:
        """The payout's current hold, as a ledger entry."""
        payout = self.payout
        return ledger.Entry(payout.merchant_id, payout.id, payout.hold_cycle, payout.amount)


async def write_changes(
    session: AsyncSession, changes: Sequence[PayoutChange], time: MerchantTime
) -> None:
    """The changes of one transaction (of one payout each): their rows, then their events and
    commands together, then their postings (`_post`)."""
    for change in changes:
        await change.write_row(session)
    await write_announcements(session, [change.announcements for change in changes])
    await _post(session, changes, time)
    log_once_committed(
        session,
        (
            StatusChange(
                payout_id=change.payout.id,
                merchant_id=change.payout.merchant_id,
                correlation_id=change.announcements.correlation_id,
                from_status=moved_from,
                to_status=to,
                attempt=attempt,
            )
            for change in changes
            for moved_from, to, attempt in change.moves
        ),
    )


async def _post(session: AsyncSession, changes: Sequence[PayoutChange], time: MerchantTime) -> None:
    """The changes' postings, all at once (`ledger.post_many`), but for money that comes back
    (a released hold, a reversal) to a merchant with QUEUED payouts: that comes back one change
    at a time, in the order it came on the merchant's clock (`_money_comes_at`, on `time`),
    each after the queue's expiries due by then and before the queued payouts it then covers
    start (contracts/payout_queue.py). Behind the sandbox clock, a released hold started a
    payout whose 72 h had run out; in a batch, whichever release came first in it judged them
    all (diff review). Where money comes back, every merchant's balance row the postings move
    is taken first, in `post_many`'s order: the queues' locks, before they are looked at."""
    returning = [change for change in changes if FUNDS_RETURNING.intersection(change.postings)]
    if returning:
        await ledger.lock_balances(
            session, {change.payout.merchant_id for change in changes if change.postings}
        )
        queued = await merchants_with_a_queue(
            session, {change.payout.merchant_id for change in returning}
        )
        returning = [change for change in returning if change.payout.merchant_id in queued]
    await ledger.post_many(
        session, _postings([change for change in changes if change not in returning])
    )
    if not returning:
        return
    comes_at = await _money_comes_at(session, returning, time)
    for at, change in sorted(
        zip(comes_at, returning, strict=True),
        key=lambda pair: (pair[1].payout.merchant_id, pair[0]),
    ):
        merchant_id = change.payout.merchant_id
        correlation_id = change.announcements.correlation_id
        with stamping_sandbox_time(change.sandbox_time):
            await expire_queued_payouts(
                session,
                merchant_id=merchant_id,
                due_by=at,
                time=time,
                correlation_id=correlation_id,
            )
            await ledger.post_many(session, _postings([change]))
            await start_queued_payouts(
                session, merchant_id=merchant_id, correlation_id=correlation_id
            )


def _postings(changes: Sequence[PayoutChange]) -> list[tuple[ledger.Posting, ledger.Entry]]:
    """The changes' postings, in POSTING_ORDER."""
    return [
        (posting, change.entry())
        for posting in POSTING_ORDER
        for change in changes
        if posting in change.postings
    ]


async def _money_comes_at(
    session: AsyncSession, changes: Sequence[PayoutChange], time: MerchantTime
) -> list[datetime]:
    """When each change's money comes back, on its merchant's time (`time`): when the PSP's
    outcome it applies came (not before the sandbox time its events carry: a payout a clock step
    started); else that sandbox time, or the due time of the scheduled step that makes it (in
    production too, where events carry no sandbox time: diff review); else when its attempt
    started. One statement."""
    read = (
        await session.execute(
            select(
                *(
                    time.at(
                        change.payout.merchant_id,
                        change.outcome_received_at or change.attempt_started_at,
                    )
                    for change in changes
                )
            )
        )
    ).one()
    comes_at = []
    for change, then in zip(changes, read, strict=True):
        stamp = change.sandbox_time or change.step_due_at
        if change.outcome_received_at is None and stamp is not None:
            comes_at.append(stamp)
        else:
            comes_at.append(then if stamp is None else max(stamp, then))
    return comes_at


def start_processing(change: PayoutChange) -> None:
    """PENDING | RETRY -> PROCESSING: one more attempt at the PSP."""
    change.move(
        allowed_from=AWAITING_PROCESSING,
        to=PayoutStatus.PROCESSING,
        attempts=change.payout.attempts + 1,
        failure_reason=None,
    )


def succeed(change: PayoutChange, *, psp_reference: str | None) -> None:
    """-> SUCCESS: the held funds leave to the PSP."""
    payout = change.payout
    change.move(
        allowed_from=AWAITING_PSP_DECISION,
        to=PayoutStatus.SUCCESS,
        psp_reference=psp_reference
        or payout.psp_reference
        or psp_reference_for(payout.id, payout.hold_cycle),
        failure_code=None,
        failure_reason=None,
        processed_at=utcnow(),
    )
    change.post(ledger.PAYOUT)


def fail(
    change: PayoutChange,
    *,
    failure_code: FailureCode,
    reason: str,
    psp_reference: str | None = None,
) -> None:
    """-> FAILED: the hold goes back to available. `psp_reference`: the PSP's, when it named
    the attempt it refused (an IPN's `pspReference`)."""
    change.move(
        allowed_from=AWAITING_PSP_DECISION,
        to=PayoutStatus.FAILED,
        failure_code=failure_code,
        failure_reason=reason,
        processed_at=utcnow(),
        psp_reference=psp_reference or change.payout.psp_reference,
    )
    change.post(ledger.RELEASE)


def reverse(change: PayoutChange, *, reason: str | None = None) -> None:
    """SUCCESS -> REVERSED: the bank returned the money to the merchant's available balance;
    `reason`: the PSP's (an IPN's `failureReason`)."""
    change.move(
        allowed_from={PayoutStatus.SUCCESS},
        to=PayoutStatus.REVERSED,
        failure_code=FailureCode.RETURNED_BY_BANK,
        failure_reason=reason or "Returned by the beneficiary bank",
    )
    change.post(ledger.REVERSAL)


def await_psp(change: PayoutChange) -> None:
    """PROCESSING -> PENDING at the PSP: submitted, waiting for its IPN. Funds stay held."""
    payout = change.payout
    change.move(
        allowed_from={PayoutStatus.PROCESSING},
        to=PayoutStatus.PENDING,
        psp_reference=psp_reference_for(payout.id, payout.hold_cycle),
    )


def put_on_hold(change: PayoutChange, *, reason: str) -> None:
    """PROCESSING -> ON_HOLD: the PSP holds it, waiting for an IPN. Funds stay held."""
    change.move(
        allowed_from={PayoutStatus.PROCESSING}, to=PayoutStatus.ON_HOLD, failure_reason=reason
    )


def send_to_review(change: PayoutChange) -> None:
    """PROCESSING -> IN_REVIEW: a large amount waits for a decision. Funds stay held."""
    change.move(allowed_from={PayoutStatus.PROCESSING}, to=PayoutStatus.IN_REVIEW)


def schedule_retry(change: PayoutChange, *, reason: str, delay_ms: int) -> None:
    """PROCESSING -> RETRY, and a ProcessPayout command delayed by the broker (never a sleep)."""
    change.move(
        allowed_from={PayoutStatus.PROCESSING}, to=PayoutStatus.RETRY, failure_reason=reason
    )
    change.announcements.process(change.payout, delay_ms=delay_ms)
