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

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import database_now_plus
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


def advanced_before(merchant_id: SQLColumnExpression[str], moment: datetime) -> ColumnElement[bool]:
    """The merchant's clock was last advanced before `moment` (real time), or never was."""
    last_advance = (
        select(SandboxClock.updated_at)
        .where(SandboxClock.merchant_id == merchant_id)
        .scalar_subquery()
    )
    return or_(last_advance.is_(None), last_advance < moment)


def due_before(
    due_at: SQLColumnExpression[datetime], merchant_id: SQLColumnExpression[str], moment: datetime
) -> ColumnElement[bool]:
    """`due_at` (sandbox time) came due before `moment` (real time): on the database's clock
    (never ahead of a merchant's), or on the merchant's clock advanced before `moment` (what an
    advance made due is taken up within seconds: it is late only once the advance is older)."""
    offset = offset_seconds_of(merchant_id)
    return or_(
        due_at < moment,
        and_(
            due_at < func.timestampadd(literal_column("SECOND"), offset, moment),
            advanced_before(merchant_id, moment),
        ),
    )


async def sandbox_now(session: AsyncSession, merchant_id: str) -> datetime:
    return (await session.execute(select(sandbox_now_of(merchant_id)))).scalar_one()
