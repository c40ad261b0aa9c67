from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from api_service.envelope import ErrorDetail, SuccessEnvelope
from api_service.pagination import Pagination
from api_service.schemas import (
    AccountNumberIn,
    AmountIn,
    DestType,
    HumanText,
    InstitutionCode,
    RequestModel,
)
from contracts.domain.statuses import PayoutStatus
from contracts.payout_view import PayoutView

MERCHANT_REFERENCE_MAX_LENGTH = 64
MERCHANT_REFERENCE_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MERCHANT_REFERENCE_MAX_LENGTH}}}$"


class PayoutInstitution(RequestModel):
    # The bank or wallet alone: judged on its own when the account number is refused for its
    # form (service.new_payout_of).
    dest_type: DestType
    bank_code: Annotated[
        InstitutionCode | None, Field(description="BANK only: a directory bank code")
    ] = None
    wallet_code: Annotated[
        InstitutionCode | None, Field(description="WALLET only: a directory wallet code")
    ] = None


# Also judged on its own for a payout whose other fields are refused, so that the answer names
# its destination's problems too (service.new_payout_of). Its docstring is the OpenAPI
# description of `POST /verify-account`'s body: it is written for the merchant.
class PayoutDestination(PayoutInstitution):
    """Where the money goes: a bank account (`destType` BANK, `bankCode`) or a wallet (WALLET,
    `walletCode`), and its account number."""

    account_number: AccountNumberIn


class CreatePayoutRequest(PayoutDestination):
    merchant_reference: Annotated[str, Field(pattern=MERCHANT_REFERENCE_PATTERN)]
    amount: AmountIn
    currency: Annotated[str, Field(pattern="^PKR$")] = "PKR"
    account_title: Annotated[HumanText, Field(min_length=1, max_length=100)] = "Account Holder"
    purpose: Annotated[HumanText, Field(max_length=140)] | None = None
    queue_if_low_balance: Annotated[
        bool,
        Field(
            strict=True,  # true or false, not "true" or 1
            description=(
                "When the available balance is short: accept the payout as QUEUED (nothing "
                "held; `payout.queued`) instead of answering 422 INSUFFICIENT_BALANCE. It starts "
                "(PENDING, funds held; `payout.dequeued`) when a top-up or a released hold covers "
                "it, queued payouts oldest first; it fails with QUEUE_EXPIRED if not started "
                "within 72 hours of your sandbox time."
            ),
        ),
    ] = False


# Read as any JSON value, each judged on its own (an invalid item is a result, not a 400 for the
# batch), and documented as what it must be: the body of POST /payouts (documented as `{}`, a
# client generated from the document had untyped items).
PayrollItem = Annotated[Any, WithJsonSchema(CreatePayoutRequest.model_json_schema(by_alias=True))]


class CreatePayoutBatchRequest(RequestModel):
    # An empty payroll is a 400, as the dashboard refuses an empty file.
    payouts: Annotated[list[PayrollItem], Field(min_length=1, max_length=1000)]


class PayoutListFilters(BaseModel):
    status: PayoutStatus | None = None
    created_from: datetime | None = None  # naive UTC (api_service.schemas.TimestampIn)
    created_to: datetime | None = None
    merchant_reference: str | None = None


class PayoutEnvelope(SuccessEnvelope[PayoutView]):
    pass


class PayoutList(BaseModel):
    payouts: list[PayoutView]
    pagination: Pagination


class PayoutBatchItem(BaseModel):
    index: int
    merchantReference: str | None = Field(
        description="The item's merchantReference (null: none sent, or one that is no text)"
    )
    status: Literal["created", "duplicate", "invalid"]  # created: the payout's status may be QUEUED
    payout: PayoutView | None = None
    payoutId: str | None = None
    errors: list[ErrorDetail] | None = None


class PayoutBatchSummary(BaseModel):
    created: int
    duplicate: int
    invalid: int


class PayoutBatch(BaseModel):
    results: list[PayoutBatchItem]
    summary: PayoutBatchSummary


class PayoutBatchEnvelope(SuccessEnvelope[PayoutBatch]):
    pass


class PayoutListEnvelope(SuccessEnvelope[PayoutList]):
    pass
