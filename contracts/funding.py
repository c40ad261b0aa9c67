"""Adding funds to a merchant's balance: the one service function every top-up goes through
(`payouts merchant topup`, `POST /api/v1/sandbox/top-up`, the dashboard's top-up)."""

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import ledger
from contracts.clock import MerchantTime
from contracts.db.models import Payout
from contracts.payout_queue import expire_queued_payouts, start_queued_payouts


@dataclass(frozen=True)
class TopUp:
    amount: Decimal
    started: list[Payout]  # the queued payouts it started (now PENDING), oldest first


async def top_up_and_start_queued(
    session: AsyncSession,
    merchant_id: str,
    amount: Decimal,
    *,
    time: MerchantTime,
    correlation_id: str | None = None,
) -> TopUp:
    """psp_settlement -> available (a TOPUP journal), then the merchant's queued payouts the
    available balance now covers start, in FIFO order: all in the caller's transaction (which
    commits). ledger.UnknownMerchantBalance when the merchant has no balance row.

    First, under the merchant's balance row (the queue's lock), the queue's expiries due by the
    merchant's `time` apply, as the scheduler would have applied them before now. Behind the
    sandbox clock (an advance still running, the processor down) it had not, and a top-up just
    after a 73 h advance started a payout that expired at 72 h (mid-flight review).

    The merchant's other steps due by then (a decision window that ended) the scheduler applies
    after it: one whose released hold would have started a queued payout before its expiry, in
    due order, leaves that payout expired. Stopping the expiries at such a step instead started
    payouts whose 72 h had run out (diff reviews): no rule short of applying every due step in
    order is right in both cases, and the README says which one this is."""
    started = await _queue_on_time(
        session, merchant_id, time=time, correlation_id=correlation_id, top_up=amount
    )
    return TopUp(amount=amount, started=started)


async def start_queued_on_time(
    session: AsyncSession, merchant_id: str, *, time: MerchantTime
) -> list[Payout]:
    """The queue's expiries due by the merchant's `time`, then the queued payouts the available
    balance covers start (a merchant activated: `payouts merchant activate`). Those started."""
    return await _queue_on_time(session, merchant_id, time=time, correlation_id=None)


async def _queue_on_time(
    session: AsyncSession,
    merchant_id: str,
    *,
    time: MerchantTime,
    correlation_id: str | None,
    top_up: Decimal | None = None,
) -> list[Payout]:
    """Under the merchant's balance row: the queue's expiries due by its clock now, `top_up`
    (if any), then the queued payouts the available balance covers start. Those started."""
    _, started_before = await expire_queued_payouts(
        session,
        merchant_id=merchant_id,
        due_by=time.now_of(merchant_id),
        time=time,
        correlation_id=correlation_id,
    )
    if top_up is not None:
        await ledger.top_up(session, merchant_id=merchant_id, amount=top_up)
    started = await start_queued_payouts(
        session, merchant_id=merchant_id, correlation_id=correlation_id
    )
    return started_before + started
