"""Is work flowing? Payouts stuck between statuses and outbox rows waiting too long to be
published. Part of `payouts reconcile`, next to the ledger invariants (contracts.reconcile)."""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import OutboxMessage, Payout
from contracts.domain.statuses import PayoutStatus

MAX_REPORTED = 20


@dataclass(frozen=True)
class Thresholds:
    stuck_after: timedelta = timedelta(minutes=5)
    max_outbox_lag: timedelta = timedelta(seconds=60)


def _stuck(older_than: timedelta) -> ColumnElement[bool]:
    """PROCESSING, RETRY, or PENDING not yet submitted to the PSP, untouched for too long.
    (PENDING with a PSP reference, ON_HOLD and IN_REVIEW wait for an IPN by design.)"""
    return and_(
        Payout.updated_at < utcnow() - older_than,
        or_(
            Payout.status.in_([PayoutStatus.PROCESSING.value, PayoutStatus.RETRY.value]),
            and_(Payout.status == PayoutStatus.PENDING.value, Payout.psp_reference.is_(None)),
        ),
    )


async def pipeline_problems(session: AsyncSession, thresholds: Thresholds) -> list[str]:
    stuck = await session.execute(
        select(Payout.id, Payout.status, Payout.updated_at)
        .where(_stuck(thresholds.stuck_after))
        .order_by(Payout.updated_at)
        .limit(MAX_REPORTED)
    )
    problems = [
        f"payout {payout_id} stuck in {status} since {updated_at:%Y-%m-%d %H:%M:%S} UTC"
        for payout_id, status, updated_at in stuck.tuples()
    ]
    oldest_unsent = await session.scalar(
        select(func.min(OutboxMessage.created_at)).where(OutboxMessage.sent_at.is_(None))
    )
    if oldest_unsent is not None:
        lag = utcnow() - oldest_unsent
        if lag > thresholds.max_outbox_lag:
            problems.append(
                f"outbox lag {lag.total_seconds():.0f}s: an unsent message is older than "
                f"{thresholds.max_outbox_lag.total_seconds():.0f}s (is the outbox relay running?)"
            )
    return problems
