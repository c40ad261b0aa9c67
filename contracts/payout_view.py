"""The payout object as merchants see it: REST responses and webhook snapshots share it."""

from pydantic import Field

from contracts.db.models import Payout
from contracts.domain.statuses import FAILURE_CODE_MEANINGS, FailureCode, PayoutStatus
from contracts.wire import MoneyString, RowId, Timestamp, WireModel

# Documented as enums (a client generated from the OpenAPI or the AsyncAPI gets them), read as
# the strings they are stored as: nothing is validated twice on the way out.
DEST_TYPES = ("BANK", "WALLET")
FAILURE_CODES = "; ".join(f"`{code}`: {meaning}" for code, meaning in FAILURE_CODE_MEANINGS.items())


class PayoutView(WireModel):
    id: RowId
    merchant_reference: str
    amount: MoneyString
    currency: str
    dest_type: str = Field(json_schema_extra={"enum": list(DEST_TYPES)})
    bank_code: str | None
    wallet_code: str | None
    account_number: str
    account_title: str
    purpose: str | None
    status: str = Field(json_schema_extra={"enum": [status.value for status in PayoutStatus]})
    failure_reason: str | None
    failure_code: str | None = Field(
        description=f"Why the payout FAILED or was REVERSED (null otherwise). {FAILURE_CODES}.",
        json_schema_extra={"enum": [*FailureCode, None]},
    )
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
