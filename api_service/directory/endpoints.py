import hashlib
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from api_service.deps import CurrentMerchant, SessionDep
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import AUTH_ERRORS, IDEMPOTENCY_ERRORS, ValidationFailed, error_responses
from api_service.idempotency import IdempotencyDep
from api_service.payouts.schemas import PayoutDestination
from api_service.payouts.service import validate_destination
from api_service.request_body import documented_body, read_body
from contracts.db.models import DirectoryInstitution
from contracts.domain.scenarios import Outcome, account_rule

router = APIRouter(tags=["directory"])

_SANDBOX_TITLES = (
    "Ayesha Khan",
    "Muhammad Ali",
    "Fatima Siddiqui",
    "Usman Tariq",
    "Zainab Ahmed",
    "Bilal Hussain",
    "Hira Malik",
    "Imran Qureshi",
)


class InstitutionView(BaseModel):
    code: str = Field(description="What a payout names as `bankCode` or `walletCode`")
    name: str
    isActive: bool


class BankView(InstitutionView):
    ibanCode: str | None


class Directory(BaseModel):
    banks: list[BankView]
    wallets: list[InstitutionView]


class DirectoryEnvelope(SuccessEnvelope[Directory]):
    pass


@router.get(
    "/directory",
    response_model=DirectoryEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary="Banks and wallets",
)
async def get_directory(merchant: CurrentMerchant, session: SessionDep) -> Response:
    institutions = await session.scalars(
        select(DirectoryInstitution).order_by(DirectoryInstitution.code)
    )
    listing: dict[str, list[dict[str, Any]]] = {"banks": [], "wallets": []}
    for institution in institutions:
        entry = {
            "code": institution.code,
            "name": institution.name,
            "isActive": institution.is_active,
        }
        if institution.kind == "BANK":
            listing["banks"].append({**entry, "ibanCode": institution.iban_code})
        else:
            listing["wallets"].append(entry)
    return json_response(success_body(listing))


def sandbox_account_title(account_number: str) -> str:
    digest = hashlib.sha256(account_number.encode()).digest()
    return _SANDBOX_TITLES[digest[0] % len(_SANDBOX_TITLES)]


class AccountCheck(BaseModel):
    isValid: bool
    accountTitle: str | None = Field(
        default=None, description="The account holder's name; only when `isValid`"
    )
    message: str


class AccountCheckEnvelope(SuccessEnvelope[AccountCheck]):
    pass


@router.post(
    "/verify-account",
    response_model=AccountCheckEnvelope,
    responses=error_responses(*AUTH_ERRORS, *IDEMPOTENCY_ERRORS),
    summary="Check a destination account (sandbox title lookup; suffix 0003 is invalid)",
    openapi_extra=documented_body(PayoutDestination),
)
async def verify_account(
    request: Request,
    merchant: CurrentMerchant,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    async def operation() -> tuple[int, bytes]:
        body = await read_body(request, PayoutDestination)
        return 200, success_body(await _verify(session, body))

    return await idempotency.run(request, session, operation)


async def _verify(session: AsyncSession, body: PayoutDestination) -> dict[str, Any]:
    try:
        _bank, _wallet, number = await validate_destination(session, body)
    except ValidationFailed as failure:
        if failure.details and failure.details[0]["field"] == "accountNumber":
            return {"isValid": False, "message": failure.message}
        raise
    rule = account_rule(number)
    if rule.outcome is Outcome.FAILED:
        return {"isValid": False, "message": rule.reason}
    return {
        "isValid": True,
        "accountTitle": sandbox_account_title(number),
        "message": rule.reason if rule.outcome is Outcome.ON_HOLD else "Account verified",
    }
