"""The audit of the whole ledger (contracts/reconcile.py), run in the background and kept: the
Operations page shows the last one rather than running it (at 300,000 payouts one of its
statements took 16 s, past the API's database timeout). The outbox relay audits every
AUDIT_EVERY, the first of several relays to claim the row (the database's clock); `payouts
reconcile` records its own. Of audits that overlap, the one of the latest snapshot is kept."""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import (
    DATABASE_NOW,
    SessionFactory,
    begin_snapshot,
    database_now_plus,
    seconds_between,
    transaction,
)
from contracts.db.models import LedgerAudit
from contracts.reconcile import ledger_problems

log = logging.getLogger(__name__)

AUDIT_EVERY = timedelta(minutes=10)
KEPT_PROBLEMS = 100  # the first ones; the count says how many more
_ROW = 1


@dataclass(frozen=True)
class Audit:
    problems: list[str]  # at most 100 of each kind, then how many more
    problem_count: int  # every problem, listed or not
    took_seconds: float
    as_of: datetime  # the database's clock as its snapshot began


@dataclass(frozen=True)
class LastAudit:
    finished_at: datetime | None  # None: never audited
    took_ms: int | None
    problem_count: int
    problems: list[str]  # the first KEPT_PROBLEMS
    age_seconds: int | None = None  # by the database's clock

    @property
    def current(self) -> bool:
        """Audited within three rounds: an older audit says no relay is running its chores, and
        vouches for nothing done since."""
        return self.age_seconds is not None and self.age_seconds <= 3 * AUDIT_EVERY.total_seconds()


async def audit_if_due(sessions: SessionFactory, every: timedelta = AUDIT_EVERY) -> bool:
    """Audit the ledger unless another process claimed an audit within `every`; whether it did."""
    async with transaction(sessions) as session:
        claimed = await session.execute(
            update(LedgerAudit)
            .where(
                LedgerAudit.id == _ROW,
                or_(
                    LedgerAudit.claimed_at.is_(None),
                    LedgerAudit.claimed_at <= database_now_plus(-int(every.total_seconds())),
                ),
            )
            .values(claimed_at=DATABASE_NOW)
        )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    async with sessions() as session:
        audit = await timed_reconcile(session)
    await record_audit(sessions, audit)
    if audit.problems:
        log.warning(
            "ledger audit: %d problems, the first: %s", audit.problem_count, audit.problems[0]
        )
    else:
        log.info("ledger audit: clean (%.1fs)", audit.took_seconds)
    return True


async def timed_reconcile(session: AsyncSession) -> Audit:
    """`reconcile` in a session that has not begun a transaction: its problems, how many seconds
    it took, and when its snapshot began."""
    started = time.monotonic()
    await begin_snapshot(session)
    # Before the first read of a table, which is when InnoDB takes the snapshot.
    as_of = (await session.execute(select(DATABASE_NOW))).scalar_one()
    problems = await ledger_problems(session)
    return Audit(problems.lines, problems.count, time.monotonic() - started, as_of)


async def record_audit(sessions: SessionFactory, audit: Audit) -> bool:
    """Keep the audit unless one of a later snapshot is kept (one that began after it and
    finished first); whether it was kept."""
    async with transaction(sessions) as session:
        kept = await session.execute(
            update(LedgerAudit)
            .where(
                LedgerAudit.id == _ROW,
                or_(LedgerAudit.as_of.is_(None), LedgerAudit.as_of <= audit.as_of),
            )
            .values(
                as_of=audit.as_of,
                finished_at=DATABASE_NOW,
                took_ms=round(audit.took_seconds * 1000),
                problem_count=audit.problem_count,
                problems=audit.problems[:KEPT_PROBLEMS],
            )
        )
    return bool(kept.rowcount == 1)  # type: ignore[attr-defined]


async def last_audit(sessions: SessionFactory) -> LastAudit:
    age = seconds_between(LedgerAudit.finished_at, DATABASE_NOW)
    async with sessions() as session:
        found = (
            await session.execute(select(LedgerAudit, age).where(LedgerAudit.id == _ROW))
        ).first()
    if found is None or found[0].finished_at is None:
        return LastAudit(None, None, 0, [])
    row, age_seconds = found
    return LastAudit(
        row.finished_at, row.took_ms, row.problem_count, list(row.problems or []), age_seconds
    )
