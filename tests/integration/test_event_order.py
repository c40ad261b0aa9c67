"""A merchant orders a payout's webhooks by `createdAt` (README): two events of one payout in one
transaction never share a millisecond."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from api_service.payouts.service import new_payout_of, store_queued_payouts
from contracts import payout_events
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Merchant, PayoutEvent
from contracts.payout_queue import QueueExpiry
from tests.conftest import MerchantFactory
from tests.support.api_helpers import payout_body


async def test_a_payout_queued_and_started_in_one_transaction_is_announced_in_order(
    make_merchant: MerchantFactory, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payroll's item queued for want of money, which a top-up committed meanwhile covers by
    the time the queue is read: its `payout.queued` and `payout.dequeued` were stamped by two
    announcements of the one transaction, both in the same millisecond (read-after-webhook
    review). The clock stands still here, as it may for a fast transaction."""
    merchant = await make_merchant(balance="500.00")
    now = utcnow()
    monkeypatch.setattr(payout_events, "utcnow", lambda: now)
    async with transaction(sessions) as session:
        payer = await session.get_one(Merchant, merchant.merchant_id)
        _, payout = await new_payout_of(session, payer, payout_body(amount="100.00"))
        await store_queued_payouts(
            session,
            [payout],
            request_id="req-queued-and-started",
            balance_locked=False,
            queue_expiry=QueueExpiry(timedelta(hours=72), SANDBOX_TIME),
        )

    async with sessions() as session:
        events = (
            await session.execute(
                select(PayoutEvent.type, PayoutEvent.created_at)
                .where(PayoutEvent.payout_id == payout.id)
                .order_by(PayoutEvent.created_at)
            )
        ).all()
    assert [event_type for event_type, _ in events] == ["payout.queued", "payout.dequeued"]
    assert events[1].created_at > events[0].created_at
