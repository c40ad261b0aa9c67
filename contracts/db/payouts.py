"""Loading a payout: the one query every service uses (merchant-scoped where a merchant asks)."""

import functools
from collections.abc import Sequence

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import Payout


async def load_payout(
    session: AsyncSession,
    payout_id: str,
    *,
    merchant_id: str | None,
    lock: bool = False,
    nowait: bool = False,
) -> Payout | None:
    """The payout, or None; `lock` takes its row lock until the transaction ends (`nowait`: at
    once, or the server's LOCK_REFUSED)."""
    scoped = merchant_id is not None
    parameters = {"b_payout": payout_id} | ({"b_merchant": merchant_id} if scoped else {})
    query = _query(scoped=scoped, lock=lock, nowait=nowait)
    payout: Payout | None = await session.scalar(query, parameters)
    return payout


async def load_payouts(
    session: AsyncSession, payout_ids: Sequence[str], *, nowait: bool = False
) -> dict[str, Payout]:
    """The payouts that exist among `payout_ids`, by id, their rows locked (in id order, as every
    batch takes them) until the transaction ends. `nowait`: a row another transaction holds
    fails the load at once (the server's LOCK_REFUSED) instead of waiting for it."""
    lock = _LOCK_MANY_NOWAIT if nowait else _LOCK_MANY
    payouts = await session.scalars(lock, {"b_payouts": sorted(set(payout_ids))})
    return {payout.id: payout for payout in payouts}


_MANY = select(Payout).where(Payout.id.in_(bindparam("b_payouts", expanding=True)))
_LOCK_MANY = _MANY.order_by(Payout.id).with_for_update()
_LOCK_MANY_NOWAIT = _MANY.order_by(Payout.id).with_for_update(nowait=True)


@functools.cache
def _query(*, scoped: bool, lock: bool, nowait: bool) -> Select[Payout]:
    """Built once per variant: a load neither rebuilds the query nor walks it for its cache key."""
    statement = select(Payout).where(Payout.id == bindparam("b_payout"))
    if scoped:
        statement = statement.where(Payout.merchant_id == bindparam("b_merchant"))
    if lock:
        statement = statement.with_for_update(nowait=nowait)
    return statement
