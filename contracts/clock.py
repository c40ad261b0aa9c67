"""The sandbox clock: each merchant's sandbox time is the database's clock plus the merchant's
offset (`sandbox_clocks.offset_seconds`, none: zero), which only ever moves forward.

Status events the clock causes (a scheduled action that came due) carry the sandbox time at
which they happened (`sandboxTime`) beside the real `createdAt`: whoever applies such an action
stamps the events written meanwhile with `stamping_sandbox_time`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from sqlalchemy import ColumnElement, SQLColumnExpression, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import database_now_plus, plus_seconds
from contracts.db.models import SandboxClock, SandboxClockAdvance

_event_sandbox_time: ContextVar[datetime | None] = ContextVar("event_sandbox_time", default=None)


def event_sandbox_time() -> datetime | None:
    """The sandbox time of the events being written now, if the sandbox clock caused them."""
    return _event_sandbox_time.get()


@contextmanager
def stamping_sandbox_time(sandbox_time: datetime) -> Iterator[None]:
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
    merchant_id: SQLColumnExpression[str] | str, moment: datetime
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


async def sandbox_time_then(session: AsyncSession, merchant_id: str, moment: datetime) -> datetime:
    """The merchant's sandbox time as its clock read at `moment` (see `sandbox_time_at`)."""
    return (await session.execute(select(sandbox_time_at(merchant_id, moment)))).scalar_one()
