"""What the database holds about a payout: its journals, its events, its merchant's balance."""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select

from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Balance, LedgerJournal, LedgerLine, Payout, PayoutEvent
from contracts.payout_queue import expire_queued_payouts


async def journal_kinds(sessions: SessionFactory, payout_id: str) -> tuple[str, ...]:
    async with sessions() as session:
        kinds = await session.scalars(
            select(LedgerJournal.kind)
            .where(LedgerJournal.payout_id == payout_id)
            .order_by(LedgerJournal.id)
        )
        return tuple(kinds)


async def event_types(sessions: SessionFactory, payout_id: str) -> tuple[str, ...]:
    """The payout's status events in order of createdAt (arrival order is not promised)."""
    async with sessions() as session:
        types = await session.scalars(
            select(PayoutEvent.type)
            .where(PayoutEvent.payout_id == payout_id)
            .order_by(PayoutEvent.created_at, PayoutEvent.id)
        )
        return tuple(types)


async def balance_and_ledger(
    sessions: SessionFactory, merchant_id: str
) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal]]:
    """((available, held) of the balance row, (available, held) summed from ledger lines)."""
    async with sessions() as session:
        balance = await session.get(Balance, merchant_id)
        assert balance is not None
        rows = await session.execute(
            select(LedgerLine.account, func.sum(LedgerLine.amount))
            .where(LedgerLine.merchant_id == merchant_id)
            .group_by(LedgerLine.account)
        )
        sums = {account: total for account, total in rows}
        zero = Decimal("0.00")
        return (balance.available, balance.held), (
            sums.get("AVAILABLE", zero),
            sums.get("HELD", zero),
        )


async def expired_by(sessions: SessionFactory, merchant_id: str, due_by: datetime) -> list[Payout]:
    """The merchant's queued payouts whose expiry is due by `due_by`, expired now (what the
    processor's scheduled action does), in one transaction."""
    async with transaction(sessions) as session:
        expired, _ = await expire_queued_payouts(
            session, merchant_id=merchant_id, due_by=due_by, time=SANDBOX_TIME, correlation_id=None
        )
    return expired
