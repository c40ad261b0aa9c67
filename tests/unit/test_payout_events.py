"""The events one transaction announces for a payout are stamped in the order they happened, to
the millisecond the wire shows: the README tells a merchant to keep a payout's state from the
event whose `createdAt` is newest."""

import uuid
from decimal import Decimal

from contracts.db.engine import utcnow
from contracts.db.models import Payout
from contracts.domain.statuses import EventType, PayoutStatus
from contracts.payout_events import Announcements


def _payout(status: PayoutStatus) -> Payout:
    now = utcnow()
    return Payout(
        id=str(uuid.uuid4()),
        merchant_id=str(uuid.uuid4()),
        merchant_reference="ref-1",
        amount=Decimal("100.00"),
        currency="PKR",
        dest_type="WALLET",
        wallet_code="JAZZCASH",
        account_number="03001234567",
        account_title="Ali",
        status=status.value,
        attempts=1,
        created_at=now,
        updated_at=now,
    )


def test_a_payouts_events_of_one_transaction_have_increasing_created_at() -> None:
    announcements = Announcements(correlation_id=None)
    payout, other = _payout(PayoutStatus.PROCESSING), _payout(PayoutStatus.PROCESSING)
    types = (EventType.PROCESSING, EventType.SUCCEEDED, EventType.REVERSED)
    stamps = [
        announcements.event(payout, event_type).webhook_body()["createdAt"] for event_type in types
    ]
    assert stamps == sorted(set(stamps)), stamps  # strictly increasing, as the wire shows them
    # Another payout's events are stamped on their own: the wall clock, not after the first's.
    assert announcements.event(other, EventType.PROCESSING).created_at <= utcnow()
