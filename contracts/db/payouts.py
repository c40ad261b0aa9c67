"""Loading a payout: the one query every service uses (merchant-scoped where a merchant asks)."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import Payout


async def load_payout(
    session: AsyncSession, payout_id: str, *, merchant_id: str | None, lock: bool = False
) -> Payout | None:
    """The payout, or None; `lock` takes its row lock until the transaction ends."""
    statement = select(Payout).where(Payout.id == payout_id)
    if merchant_id is not None:
        statement = statement.where(Payout.merchant_id == merchant_id)
    if lock:
        statement = statement.with_for_update()
    payout: Payout | None = await session.scalar(statement)
    return payout
