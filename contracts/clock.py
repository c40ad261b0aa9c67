"""The sandbox clock: each merchant's sandbox time is the database's clock plus the merchant's
offset (`sandbox_clocks.offset_seconds`, none: zero), which only ever moves forward.

Status events the clock causes (a scheduled action that came due) carry the sandbox time at
which they happened (`sandboxTime`) beside the real `createdAt`: whoever applies such an action
stamps the events written meanwhile with `stamping_sandbox_time`.

The clocks run in test mode only. A service reads a merchant's time through `MerchantTime`: in
production (`REAL_TIME`) every merchant's time is real time and nothing is stamped, whatever
offset a clock advanced in test mode left in the database (it was read there: queue expiries
and webhook retries were timed 41 days ahead, and production events carried `sandboxTime`).
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, SQLColumnExpression, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import database_now_plus, plus_seconds, seconds_between
from contracts.db.models import Payout, PspCallback, SandboxClock, SandboxClockAdvance
from contracts.domain.statuses import PayoutStatus
from contracts.settings import Settings

# A payout the processor has not submitted after this long is stuck (its command failing into
# the dead-letter queue, say; reconcile names it): the merchant's clock waits for it no longer.
START_WAIT_LIMIT = timedelta(hours=1)
_START_WAIT_CUTOFF = database_now_plus(-int(START_WAIT_LIMIT.total_seconds()))

_event_sandbox_time: ContextVar[datetime | None] = ContextVar("event_sandbox_time", default=None)


def event_sandbox_time() -> datetime | None:
    """The sandbox time of the events being written now, if the sandbox clock caused them."""
    return _event_sandbox_time.get()


@contextmanager
def stamping_sandbox_time(sandbox_time: datetime | None) -> Iterator[None]:
    """Events and commands made meanwhile carry `sandbox_time`; None: the stamp already set, if
    any, stays."""
    if sandbox_time is None:
        yield
        return
    token = _event_sandbox_time.set(sandbox_time)
    try:
        yield
    finally:
        _event_sandbox_time.reset(token)


def offset_seconds_of(merchant_id: SQLColumnExpression[str] | str) -> ColumnElement[int]:
    """The merchant's clock offset in seconds (a scalar subquery; zero without a clock row)."""
    offset = (
        select(SandboxClock.offset_seconds)
        .where(SandboxClock.merchant_id == merchant_id)
        .scalar_subquery()
    )
    return func.coalesce(offset, 0)


def sandbox_now_of(merchant_id: SQLColumnExpression[str] | str) -> ColumnElement[datetime]:
    """The merchant's sandbox time, on the database's clock."""
    return database_now_plus(offset_seconds_of(merchant_id))


def sandbox_time_at(
    merchant_id: SQLColumnExpression[str] | str, moment: datetime | SQLColumnExpression[datetime]
) -> ColumnElement[datetime]:
    """The merchant's sandbox time as its clock read at `moment` (real time, in the past): with
    the offset of its last advance at or before `moment` (`sandbox_clock_advances`)."""
    offset_then = (
        select(SandboxClockAdvance.offset_seconds)
        .where(  # ix_sandbox_clock_advances_merchant
            SandboxClockAdvance.merchant_id == merchant_id,
            SandboxClockAdvance.advanced_at <= moment,
        )
        .order_by(SandboxClockAdvance.advanced_at.desc(), SandboxClockAdvance.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return plus_seconds(func.coalesce(offset_then, 0), moment)


def offset_as_reached(
    merchant_id: SQLColumnExpression[str] | str, sandbox_time: datetime
) -> ColumnElement[int]:
    """The merchant's clock offset as its clock reached `sandbox_time` (in the past): that time
    less the real moment it was reached. Reached as the clock ran, it is the offset of the time;
    jumped over by an advance, it is `sandbox_time` less the advance's moment, so that what the
    rest of the jump added counts as a jump and real time since then as real time.

    From each advance on the offset is at least that advance's (it only moves forward), so the
    clock reached `sandbox_time` at the earliest of, per advance, the later of the advance and
    `sandbox_time` less its offset (and of `sandbox_time` itself, at offset zero): the offset
    is the greatest of, per advance, the lesser of its offset and the seconds from it to
    `sandbox_time`."""
    reached = (
        select(
            func.max(
                func.least(
                    seconds_between(SandboxClockAdvance.advanced_at, sandbox_time),
                    SandboxClockAdvance.offset_seconds,
                )
            )
        )
        .where(SandboxClockAdvance.merchant_id == merchant_id)  # ix_sandbox_clock_advances_merchant
        .scalar_subquery()
    )
    return func.greatest(func.coalesce(reached, 0), 0)


@dataclass(frozen=True)
class MerchantTime:
    """A merchant's time as a service reads it: on the merchant's sandbox clock (test mode), or
    real time whatever the clock says (production: `REAL_TIME`)."""

    sandbox_clocks: bool

    @classmethod
    def of(cls, settings: Settings) -> "MerchantTime":
        """Test mode's sandbox clocks, or production's real time."""
        return cls(sandbox_clocks=settings.sandbox_enabled)

    def offset_of(self, merchant_id: SQLColumnExpression[str] | str) -> ColumnElement[int]:
        """The merchant's clock offset in seconds (see `offset_seconds_of`); zero in production."""
        return offset_seconds_of(merchant_id) if self.sandbox_clocks else literal(0)

    def now_of(self, merchant_id: SQLColumnExpression[str] | str) -> ColumnElement[datetime]:
        """The merchant's time now, on the database's clock."""
        return database_now_plus(self.offset_of(merchant_id))

    def at(
        self,
        merchant_id: SQLColumnExpression[str] | str,
        moment: datetime | SQLColumnExpression[datetime],
    ) -> ColumnElement[datetime]:
        """The merchant's time as its clock read at `moment` (see `sandbox_time_at`)."""
        if self.sandbox_clocks:
            return sandbox_time_at(merchant_id, moment)
        return plus_seconds(0, moment)  # the moment itself

    def offset_as_reached(
        self, merchant_id: SQLColumnExpression[str] | str, sandbox_time: datetime
    ) -> ColumnElement[int]:
        """See `offset_as_reached`; zero in production."""
        if self.sandbox_clocks:
            return offset_as_reached(merchant_id, sandbox_time)
        return literal(0)

    async def offset_now(self, session: AsyncSession, merchant_id: str) -> int:
        """The merchant's clock offset now, in seconds (production asks the database nothing)."""
        if not self.sandbox_clocks:
            return 0
        return int(await session.scalar(select(offset_seconds_of(merchant_id))) or 0)

    async def then(self, session: AsyncSession, merchant_id: str, moment: datetime) -> datetime:
        """The merchant's time as its clock read at `moment` (in the past)."""
        if not self.sandbox_clocks:
            return moment
        return (await session.execute(select(sandbox_time_at(merchant_id, moment)))).scalar_one()

    def stamping(self, sandbox_time: datetime | None) -> AbstractContextManager[None]:
        """`stamping_sandbox_time`: events made meanwhile carry `sandbox_time`, on sandbox clocks
        only (a production event carries no sandbox time)."""
        return stamping_sandbox_time(sandbox_time if self.sandbox_clocks else None)


SANDBOX_TIME = MerchantTime(sandbox_clocks=True)
REAL_TIME = MerchantTime(sandbox_clocks=False)


def waiting_to_be_submitted(
    merchant_id: SQLColumnExpression[str] | str, *, stuck_ones_aside: bool = True
) -> list[ColumnElement[bool]]:
    """A payout of the merchant that the processor has yet to submit (its steps are scheduled
    from when it started); with `stuck_ones_aside`, not one stuck past START_WAIT_LIMIT."""
    waiting = [
        Payout.merchant_id == merchant_id,
        Payout.status == PayoutStatus.PENDING.value,
        Payout.psp_reference.is_(None),
    ]
    if stuck_ones_aside:
        waiting.append(Payout.updated_at > _START_WAIT_CUTOFF)
    return waiting


def outcome_waiting_to_be_applied(
    merchant_id: SQLColumnExpression[str] | str, *, stuck_ones_aside: bool = True
) -> list[ColumnElement[bool]]:
    """Over psp_callbacks and payouts: a PSP outcome of the merchant's payout, of its current
    attempt, that the API accepted and the processor has yet to apply (ix_psp_callbacks_unapplied;
    one of an earlier attempt is never applied); with `stuck_ones_aside`, not one waiting past
    START_WAIT_LIMIT."""
    waiting = [
        PspCallback.applied_at.is_(None),
        Payout.id == PspCallback.payout_id,
        Payout.hold_cycle == PspCallback.hold_cycle,
        Payout.merchant_id == merchant_id,
    ]
    if stuck_ones_aside:
        waiting.insert(1, PspCallback.received_at > _START_WAIT_CUTOFF)
    return waiting
