"""A merchant orders a payout's webhooks by `createdAt` (README): a payout's `payout.dequeued`
never shares a millisecond with its `payout.queued`, in one transaction or the next. The clock
stands still in these tests, as it may for a fast transaction."""

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from api_service.payouts.service import new_payout_of, store_queued_payouts
from contracts import payout_events
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Merchant, PayoutEvent
from contracts.funding import top_up_and_start_queued
from contracts.payout_queue import QueueExpiry
from tests.conftest import MerchantFactory
from tests.support.api_helpers import payout_body


async def test_a_payout_queued_and_started_in_one_transaction_is_announced_in_order(
    make_merchant: MerchantFactory, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payroll's item queued for want of money, which a top-up committed meanwhile covers by
    the time the queue is read: its `payout.queued` and `payout.dequeued` were stamped by two
    announcements of the one transaction, both in the same millisecond (read-after-webhook
    review)."""
    merchant = await make_merchant(balance="500.00")
    now = utcnow()
    monkeypatch.setattr(payout_events, "utcnow", lambda: now)

    payout_id = await _queued(sessions, merchant.merchant_id)

    await _announced_in_order(sessions, payout_id)


async def test_a_payout_queued_then_started_by_a_top_up_is_announced_in_order(
    make_merchant: MerchantFactory, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The top-up waited for the balance row the queuing transaction held, and started the
    payout as soon as that committed (diff review)."""
    merchant = await make_merchant(balance="50.00")
    now = utcnow()
    monkeypatch.setattr(payout_events, "utcnow", lambda: now)
    payout_id = await _queued(sessions, merchant.merchant_id)

    async with transaction(sessions) as session:
        top_up = await top_up_and_start_queued(
            session, merchant.merchant_id, Decimal("500.00"), time=SANDBOX_TIME
        )

    assert [started.id for started in top_up.started] == [payout_id]
    await _announced_in_order(sessions, payout_id)


async def _queued(sessions: SessionFactory, merchant_id: str) -> str:
    """A payroll's item of 100.00 with queueIfLowBalance, stored as a payroll stores it."""
    async with transaction(sessions) as session:
        payer = await session.get_one(Merchant, merchant_id)
        _, payout = await new_payout_of(session, payer, payout_body(amount="100.00"))
        await store_queued_payouts(
            session,
            [payout],
            request_id="req-queued",
            balance_locked=False,
            queue_expiry=QueueExpiry(timedelta(hours=72), SANDBOX_TIME),
        )
    return payout.id


async def _announced_in_order(sessions: SessionFactory, payout_id: str) -> None:
    async with sessions() as session:
        rows = await session.execute(
            select(PayoutEvent.type, PayoutEvent.created_at).where(
                PayoutEvent.payout_id == payout_id
            )
        )
        events = {event_type: created_at for event_type, created_at in rows}
    assert set(events) == {"payout.queued", "payout.dequeued"}
    assert events["payout.dequeued"] > events["payout.queued"]
