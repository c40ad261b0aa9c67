"""Adding funds to a merchant's balance: the one service function every top-up goes through
(`payouts merchant topup`, `POST /api/v1/sandbox/top-up`, the dashboard's top-up)."""

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import ledger
from contracts.db.models import Payout
from contracts.payout_queue import start_queued_payouts


@dataclass(frozen=True)
class TopUp:
    amount: Decimal
    started: list[Payout]  # the queued payouts it started (now PENDING), oldest first


async def top_up_and_start_queued(
    session: AsyncSession, merchant_id: str, amount: Decimal, *, correlation_id: str | None = None
) -> TopUp:
    """psp_settlement -> available (a TOPUP journal), then the merchant's queued payouts the
    available balance now covers start, in FIFO order: all in the caller's transaction (which
    commits). The top-up's UPDATE takes the merchant's balance row, the queue's lock, first.
    ledger.UnknownMerchantBalance when the merchant has no balance row."""
    await ledger.top_up(session, merchant_id=merchant_id, amount=amount)
    started = await start_queued_payouts(
        session, merchant_id=merchant_id, correlation_id=correlation_id
    )
    return TopUp(amount=amount, started=started)
