"""The processor's scheduler loop: applies the scheduled actions that came due, each in the
merchant's sandbox time (the database's clock plus the merchant's offset).

Each action is claimed with `SELECT ... FOR UPDATE SKIP LOCKED` (earliest due first: those due on
the database's clock, then those due only on an advanced clock) and applied
in the same transaction that marks its row applied: a crash before the commit leaves the row
to be claimed again, a commit applies it once, and several processors never take the same row.
Moving a merchant's clock forward is one UPDATE of its offset; the next poll finds whatever
that made due, and applies it in due-time order (a chained step scheduled by an applied one is
claimed next if it falls due too).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from contracts.clock import (
    SANDBOX_TIME,
    START_WAIT_LIMIT,
    MerchantTime,
    outcome_waiting_to_be_applied,
    waiting_to_be_submitted,
)
from contracts.db.engine import (
    DATABASE_NOW,
    SessionFactory,
    database_now_plus,
    transaction,
    utcnow,
)
from contracts.db.models import Payout, PspCallback, SandboxClock, ScheduledAction
from contracts.db.outages import is_outage, is_row_lock_failure
from contracts.domain.scheduled_actions import Result, correlation_id_of
from contracts.logging import bind_log_context
from processor_service.handlers import apply_scheduled_action
from processor_service.metrics import PAYOUT_STATUSES
from processor_service.schedule import Timetable

log = logging.getLogger("processor.scheduler")

MAX_BACKOFF_SECONDS = 5.0
MERCHANTS_TRIED = 50  # a claim tries the first merchants with actions due ahead, in this number
# How long the scheduler passes over an action whose rows another transaction held (its
# merchant's later actions wait for it: first_of_its_merchant).
PASS_OVER_SECONDS = 1.0
# How long the heartbeat's check must fail before the processor counts as not working: a pool
# busy for its 2 s, once, is not a night down (final review).
NOT_WORKING_AFTER_SECONDS = 60.0
# How long the scheduler lists the merchants with actions due ahead from one side before it
# counts both again (ListedFrom).
SIDE_COUNTED_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class ClaimRules:
    """What a claim leaves aside, besides applied actions and those other claims hold."""

    # Actions passed over a while (their payout's row held: Scheduler.apply_next).
    passing_over: Collection[int] = ()
    # A payout or PSP outcome waiting over START_WAIT_LIMIT holds up nothing: stuck. Not until
    # the processor has worked that long (Scheduler.note_working): after a night with it or its
    # broker down, every payout of the night had waited over an hour, and a queue's expiry due
    # in the night was applied before the failure whose release should have started the queue
    # (overnight and late fixes reviews).
    stuck_ones_aside: bool = True


def no_earlier_start_waits(
    time: MerchantTime,
    merchant_id: SQLColumnExpression[str] = ScheduledAction.merchant_id,
    due_at: SQLColumnExpression[datetime] = ScheduledAction.due_at,
    *,
    stuck_ones_aside: bool = True,
) -> ColumnElement[bool]:
    """No payout of the action's merchant that started (in sandbox time) by the action's due time
    still waits for the processor to submit it (of the action's columns, or of `merchant_id` and
    `due_at`), and no PSP outcome it accepted by then waits to be applied. Those come first: a
    release that starts the queue, say, before the queue's expiry. Claimed in due order alone,
    an advance made while the processor was behind (or before it took the payout's command, or
    the outcome's) applied the expiry first, and the queued payout failed where the released
    money should have started it (the second: reversals review). A payout or an outcome that
    has waited over START_WAIT_LIMIT holds up nothing with `stuck_ones_aside`: it is stuck (its
    command failing into the dead-letter queue, say; reconcile names it), and the merchant's
    clock must not stop for it."""
    waiting = select(Payout.id).where(
        *waiting_to_be_submitted(merchant_id, stuck_ones_aside=stuck_ones_aside),
        # The first implied by the last (a clock is never behind real time): an index range.
        Payout.updated_at <= due_at,
        time.at(Payout.merchant_id, Payout.updated_at) <= due_at,
    )
    outcome_waiting = select(PspCallback.event_id).where(
        *outcome_waiting_to_be_applied(merchant_id, stuck_ones_aside=stuck_ones_aside),
        PspCallback.received_at <= due_at,  # as above
        time.at(Payout.merchant_id, PspCallback.received_at) <= due_at,
    )
    return ~exists(waiting) & ~exists(outcome_waiting)


def claim_due_action(
    time: MerchantTime, rules: ClaimRules = ClaimRules()
) -> Select[ScheduledAction]:
    """The earliest action due on the database's clock that nobody else holds: due on every
    merchant's clock (a clock is never behind the database's), found in a range of the claim
    index."""
    return _earliest_unclaimed(
        select(ScheduledAction)
        # The optimizer took ix_scheduled_actions_pending_merchant (applied_at first too) on a
        # small table: every pending action read and sorted at each poll.
        .with_hint(ScheduledAction, "FORCE INDEX (ix_scheduled_actions_claim)", "mysql")
        .where(
            ScheduledAction.applied_at.is_(None),
            ScheduledAction.due_at <= DATABASE_NOW,
            no_earlier_start_waits(time, stuck_ones_aside=rules.stuck_ones_aside),
        ),
        rules,
    )


class ListedFrom(Enum):
    """Where the merchants with actions due ahead are found from: the side with fewer rows. Each
    clock ever advanced (an offset only grows) probed at every poll read 20,202 rows at 10,000
    clocks with nothing scheduled (scale review); each merchant with an action to apply, 15,005
    at 3,000 with actions days ahead and no clock advanced (scheduler review)."""

    CLOCKS = "clocks"  # each clock ahead, then a probe of its merchant's actions
    PENDING = "pending"  # each merchant with actions to apply (a loose index scan), then its clock


def merchants_with_actions_due_ahead(
    rules: ClaimRules = ClaimRules(), listed_from: ListedFrom = ListedFrom.PENDING
) -> Select[str]:
    """The merchants with an action due only on their advanced clock that nothing holds back, the
    least recently advanced first (read, not locked). (Bounding a scan of the claim index by the
    furthest clock made one clock a year ahead read every pending action of every merchant, at
    each poll.) Both sides list the same merchants in the same order."""
    if listed_from is ListedFrom.CLOCKS:
        # A probe per clock: a subquery with a LIMIT stays one (an EXISTS became a semi-join that
        # read every pending action in the claim index).
        first_due_at: ColumnElement[datetime] = (
            select(ScheduledAction.due_at)
            .with_hint(ScheduledAction, "FORCE INDEX (ix_scheduled_actions_merchant)", "mysql")
            .where(
                ScheduledAction.merchant_id == SandboxClock.merchant_id,
                ScheduledAction.applied_at.is_(None),
                ScheduledAction.due_at <= database_now_plus(SandboxClock.offset_seconds),
            )
            .order_by(ScheduledAction.due_at)
            .limit(1)
            .correlate(SandboxClock)  # the clock's, also where the payouts' subquery reads it
            .scalar_subquery()
        )
        listed = select(SandboxClock.merchant_id).where(first_due_at.is_not(None))
    else:
        pending = _pending_merchants().subquery("pending")
        first_due_at = pending.c.first_due_at
        listed = (
            select(SandboxClock.merchant_id)
            .select_from(pending)
            .join(SandboxClock, SandboxClock.merchant_id == pending.c.merchant_id)
            .prefix_with("STRAIGHT_JOIN")  # the merchants with actions first, then their clocks
            .where(first_due_at <= database_now_plus(SandboxClock.offset_seconds))
        )
    return (
        listed.where(
            SandboxClock.offset_seconds > 0,
            # One the claim may take: merchants whose due actions all waited for a payout to be
            # submitted filled the ones listed, and another merchant's action, which nothing
            # held back, was not applied (scheduler review). The earliest tells: a payout that
            # holds back an action holds back every action due after it.
            no_earlier_start_waits(
                SANDBOX_TIME,
                SandboxClock.merchant_id,
                first_due_at,
                stuck_ones_aside=rules.stuck_ones_aside,
            ),
        )
        .order_by(SandboxClock.updated_at, SandboxClock.merchant_id)
        .limit(MERCHANTS_TRIED)
    )


def _pending_merchants() -> Select[str, datetime]:
    """Each merchant with actions to apply, and its first due: one dive per merchant into the
    index that starts with applied_at (migration 0041)."""
    return (
        select(ScheduledAction.merchant_id, func.min(ScheduledAction.due_at).label("first_due_at"))
        .with_hint(ScheduledAction, "FORCE INDEX (ix_scheduled_actions_pending_merchant)", "mysql")
        .where(ScheduledAction.applied_at.is_(None))
        # applied_at too: the index's first column, which makes the GROUP BY a loose scan.
        .group_by(ScheduledAction.applied_at, ScheduledAction.merchant_id)
    )


async def smaller_side(session: AsyncSession) -> ListedFrom:
    """The side with fewer rows now: a count of each (a read of each side, once in a while)."""
    clocks = await session.scalar(
        select(func.count()).select_from(SandboxClock).where(SandboxClock.offset_seconds > 0)
    )
    pending = await session.scalar(
        select(func.count()).select_from(_pending_merchants().subquery("pending"))
    )
    return ListedFrom.CLOCKS if (clocks or 0) < (pending or 0) else ListedFrom.PENDING


def claim_action_due_ahead(
    merchant_id: str, rules: ClaimRules = ClaimRules()
) -> Select[ScheduledAction]:
    """The merchant's earliest action due only on its advanced clock, unless another claim holds
    its clock: a range of its merchant index, in index order, so only the rows read up to it are
    locked. (Claimed across every advanced clock at once, the sort of every clock's due actions
    locked them all: a second scheduler, or processor, applied no other merchant's actions
    meanwhile, and one merchant's advance over 1,000 scripted payouts held another's for 10 s:
    neighbours review.) The clock's row is locked with the action's: an advance of that merchant
    waits for the action's transaction, or the claim skips the merchant meanwhile."""
    due_by = database_now_plus(SandboxClock.offset_seconds)
    return _earliest_unclaimed(
        select(ScheduledAction)
        .select_from(SandboxClock)
        .join(ScheduledAction, ScheduledAction.merchant_id == SandboxClock.merchant_id)
        .prefix_with("STRAIGHT_JOIN")
        .with_hint(ScheduledAction, "FORCE INDEX (ix_scheduled_actions_merchant)", "mysql")
        .where(
            SandboxClock.merchant_id == merchant_id,
            SandboxClock.offset_seconds > 0,
            ScheduledAction.applied_at.is_(None),
            ScheduledAction.due_at <= due_by,
            no_earlier_start_waits(SANDBOX_TIME, stuck_ones_aside=rules.stuck_ones_aside),
        ),
        rules,
    )


async def claim_due_ahead(
    session: AsyncSession,
    rules: ClaimRules = ClaimRules(),
    listed_from: ListedFrom = ListedFrom.PENDING,
) -> ScheduledAction | None:
    """The earliest action of the first merchant whose clock no other claim holds."""
    listed = merchants_with_actions_due_ahead(rules, listed_from)
    for merchant_id in await session.scalars(listed):
        claimed = await session.scalar(claim_action_due_ahead(merchant_id, rules))
        if claimed is not None:
            return claimed
    return None


def first_of_its_merchant() -> ColumnElement[bool]:
    """No action of the merchant due before it (or with it, and made before it) is still to be
    applied: a merchant's actions are applied one at a time, in due-time order, whichever
    worker or processor claims them. Claims side by side skip the rows other claims hold, and a
    merchant's later action (a queue's expiry) was applied while its earlier one (the release
    that starts the queue) was in flight, or passed over for its held payout (diff reviews).
    A probe of the merchant index; a plain read, which locks nothing."""
    earlier = aliased(ScheduledAction, name="earlier")
    return ~exists(
        select(earlier.id)
        # Left to itself, the optimizer may pick the claim index: every pending action of
        # every merchant read for each one probed.
        .with_hint(earlier, "FORCE INDEX (ix_scheduled_actions_merchant)", "mysql")
        .where(
            earlier.merchant_id == ScheduledAction.merchant_id,
            earlier.applied_at.is_(None),
            or_(
                earlier.due_at < ScheduledAction.due_at,
                and_(earlier.due_at == ScheduledAction.due_at, earlier.id < ScheduledAction.id),
            ),
        )
    )


def _earliest_unclaimed(
    candidates: Select[ScheduledAction], rules: ClaimRules
) -> Select[ScheduledAction]:
    candidates = candidates.where(first_of_its_merchant())
    if rules.passing_over:
        candidates = candidates.where(ScheduledAction.id.not_in(rules.passing_over))
    return (
        candidates.order_by(ScheduledAction.due_at, ScheduledAction.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


@dataclass
class Scheduler:
    sessions: SessionFactory
    timetable: Timetable
    poll_interval_seconds: float
    batch: int = 100
    # Actions whose payout row another transaction held, by when to try them again (monotonic).
    _passed_over: dict[int, float] = field(default_factory=dict)
    # Since when the processor has worked, and since when its checks have failed (monotonic;
    # None: not yet, or not now). Not since its start: it may wait hours for RabbitMQ there.
    _working_since: float | None = None
    _failing_since: float | None = None
    # Where the merchants with actions due ahead are listed from, and since when (monotonic).
    _side: tuple[ListedFrom, float] | None = None

    async def apply_next(self) -> bool:
        """Claim and apply one due action; False when none is due. An action that fails for
        a reason other than an outage is marked ERROR (in a transaction of its own) rather
        than blocking those behind it. One whose rows another transaction holds (a stuck
        session, a frozen process) is passed over for PASS_OVER_SECONDS: the earliest due, it
        was claimed again and again, each worker that took it waiting out the lock wait (50 s),
        and a few such payouts stopped every merchant's scheduled steps. Its merchant's later
        actions wait for it (first_of_its_merchant); other merchants' go on."""
        claimed: ScheduledAction | None = None
        with contextlib.ExitStack() as log_context:
            try:
                async with transaction(self.sessions) as session:
                    claimed = await self._claim(session)
                    if claimed is None:
                        return False
                    action_id, payout_id = claimed.id, claimed.payout_id  # as claimed
                    # Its lines carry the ids its messages carry (docs/operations.md, tracing).
                    log_context.enter_context(
                        bind_log_context(
                            correlation_id=correlation_id_of(action_id),
                            payout_id=payout_id,
                            merchant_id=claimed.merchant_id,
                        )
                    )
                    status = await apply_scheduled_action(session, claimed, self.timetable)
                if status is not None:  # as the consumer counts what processing commits
                    PAYOUT_STATUSES.labels(status.value).inc()
                log.info(
                    "scheduled action %s (%s) of payout %s applied: %s",
                    *(action_id, claimed.action, payout_id, status or "no change"),
                )
                return True
            except Exception as error:
                if claimed is not None and is_row_lock_failure(error):
                    log.warning("scheduled action %s: its rows are held (%s)", action_id, error)
                    self._passed_over[action_id] = time.monotonic() + PASS_OVER_SECONDS
                    return True
                if claimed is None or is_outage(error):
                    raise
                log.exception("scheduled action %s of payout %s failed", action_id, payout_id)
            async with transaction(self.sessions) as session:
                await session.execute(
                    update(ScheduledAction)
                    .where(ScheduledAction.id == action_id, ScheduledAction.applied_at.is_(None))
                    .values(applied_at=utcnow(), result=Result.ERROR.value)
                )
            return True

    async def _claim(self, session: AsyncSession) -> ScheduledAction | None:
        """The next action due: on the database's clock, then (test mode only) on an advanced
        clock. In production no clock is read, whatever offset test mode left."""
        merchant_time = self.timetable.time
        rules = self.claim_rules()
        claimed = await session.scalar(claim_due_action(merchant_time, rules))
        if claimed is None and merchant_time.sandbox_clocks:
            claimed = await claim_due_ahead(session, rules, await self._listed_from(session))
        return claimed

    async def _listed_from(self, session: AsyncSession) -> ListedFrom:
        """The smaller side (smaller_side), counted again every SIDE_COUNTED_EVERY_SECONDS."""
        now = time.monotonic()
        if self._side is None or now - self._side[1] >= SIDE_COUNTED_EVERY_SECONDS:
            self._side = (await smaller_side(session), now)
        return self._side[0]

    def claim_rules(self) -> ClaimRules:
        """What a claim leaves aside now."""
        worked = self._working_since is not None and (
            time.monotonic() - self._working_since >= START_WAIT_LIMIT.total_seconds()
        )
        return ClaimRules(self._passing_over(), stuck_ones_aside=worked)

    def note_working(self, works: bool) -> None:
        """What the processor's heartbeat found: its broker and database answering, its
        consumers consuming (contracts/consumer_health.py), or not. It works from its first
        good check, and stops once its checks have failed NOT_WORKING_AFTER_SECONDS."""
        now = time.monotonic()
        if works:
            self._failing_since = None
            self._working_since = self._working_since or now
            return
        self._failing_since = self._failing_since or now
        if now - self._failing_since >= NOT_WORKING_AFTER_SECONDS:
            self._working_since = None

    def _passing_over(self) -> list[int]:
        now = time.monotonic()
        for action_id in [key for key, until in self._passed_over.items() if until <= now]:
            del self._passed_over[action_id]
        return list(self._passed_over)

    async def apply_due(self) -> int:
        """Apply due actions until none is left or a batch is done."""
        applied = 0
        while applied < self.batch and await self.apply_next():
            applied += 1
        return applied

    async def run(self, stop: asyncio.Event, *, worker: int = 0, workers: int = 1) -> None:
        """Poll until `stop` is set (the action in flight finishes); back off while the
        database is down. Worker `worker` of `workers`: each idle one polls `workers` times less
        often, their polls spread over the interval, so that idle they ask the database as
        often as one would."""
        idle_seconds = self.poll_interval_seconds * workers
        await _pause(stop, self.poll_interval_seconds * worker)
        backoff = self.poll_interval_seconds
        while not stop.is_set():
            try:
                applied = await self.apply_due()
            except Exception as error:
                log.warning("scheduler round failed (%s); retrying in %.2fs", error, backoff)
                await _pause(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = self.poll_interval_seconds
            if applied < self.batch:
                await _pause(stop, idle_seconds)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep unless asked to stop first (a wait on the stop event, not a blind sleep)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
