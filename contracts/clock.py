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

from sqlalchemy import ColumnElement, SQLColumnExpression, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import database_now_plus, plus_seconds
from contracts.db.models import SandboxClock

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
    the offset before its last advance if that came after `moment`. (Two advances since then
    read as the later one's previous offset: what the earlier made due counts from its due time,
    which a running scheduler has long applied.)"""
    offset_then = (
        select(
            case(
                (SandboxClock.updated_at <= moment, SandboxClock.offset_seconds),
                else_=SandboxClock.previous_offset_seconds,
            )
        )
        .where(SandboxClock.merchant_id == merchant_id)
        .scalar_subquery()
    )
    return plus_seconds(func.coalesce(offset_then, 0), moment)


async def sandbox_time_then(session: AsyncSession, merchant_id: str, moment: datetime) -> datetime:
    """The merchant's sandbox time as its clock read at `moment` (see `sandbox_time_at`)."""
    return (await session.execute(select(sandbox_time_at(merchant_id, moment)))).scalar_one()
