"""The payout object as merchants see it: REST responses and webhook snapshots share it."""

from contracts.db.models import Payout
from contracts.wire import MoneyString, Timestamp, WireModel


class PayoutView(WireModel):
    id: str
    merchant_reference: str
    amount: MoneyString
    currency: str
    dest_type: str
    bank_code: str | None
    wallet_code: str | None
    account_number: str
    account_title: str
    purpose: str | None
    status: str
    failure_reason: str | None
    failure_code: str | None
    psp_reference: str | None
    attempts: int
    processed_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, payout: Payout) -> "PayoutView":
        return cls(
            id=payout.id,
            merchant_reference=payout.merchant_reference,
            amount=payout.amount,
            currency=payout.currency,
            dest_type=payout.dest_type,
            bank_code=payout.bank_code,
            wallet_code=payout.wallet_code,
            account_number=payout.account_number,
            account_title=payout.account_title,
            purpose=payout.purpose,
            status=payout.status,
            failure_reason=payout.failure_reason,
            failure_code=payout.failure_code,
            psp_reference=payout.psp_reference,
            attempts=payout.attempts,
            processed_at=payout.processed_at,
            created_at=payout.created_at,
            updated_at=payout.updated_at,
        )
