"""The sandbox top-up (test mode only; production answers 404): add funds to your own balance,
which starts your QUEUED payouts the new available balance covers, oldest first."""

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import select
from starlette.responses import Response

from api_service.deps import SANDBOX_ONLY, CurrentMerchant, RequestId, SessionDep
from api_service.envelope import SuccessEnvelope, success_body
from api_service.errors import (
    AUTH_ERRORS,
    IDEMPOTENCY_ERRORS,
    SandboxDisabled,
    ValidationFailed,
    error_responses,
)
from api_service.idempotency import IdempotencyDep
from api_service.payouts.endpoints import payout_json
from api_service.request_body import documented_body, read_body
from api_service.schemas import AmountIn, RequestModel
from contracts.clock import SANDBOX_TIME
from contracts.db.models import Balance
from contracts.domain.money import format_amount
from contracts.funding import top_up_and_start_queued
from contracts.ledger import TOP_UP_PAST_THE_LIMIT, BalanceLimitExceeded
from contracts.payout_view import PayoutView
from contracts.wire import MoneyText

router = APIRouter(prefix="/sandbox", tags=["sandbox"], dependencies=SANDBOX_ONLY)


class TopUpRequest(RequestModel):
    amount: AmountIn


class TopUpView(BaseModel):
    amount: MoneyText
    availableBalance: MoneyText
    startedPayouts: list[PayoutView]


class TopUpEnvelope(SuccessEnvelope[TopUpView]):
    pass


@router.post(
    "/top-up",
    response_model=TopUpEnvelope,
    responses=error_responses(*AUTH_ERRORS, *IDEMPOTENCY_ERRORS, SandboxDisabled),
    summary="Sandbox: add funds to your balance (starts your QUEUED payouts it covers)",
    description=(
        "A TOPUP journal (psp_settlement -> available); refused (400 on `amount`) when your "
        "balance plus your SUCCESS payouts (a reversal may still return them) would pass the "
        "largest balance, 9999999999999999.99. Then your QUEUED payouts start in the "
        "order they were created while the available balance covers them; the first it does not "
        "cover waits, and so do the ones behind it. Each started payout is PENDING with its "
        "amount held (event `payout.dequeued`) and is processed like any other."
    ),
    openapi_extra=documented_body(TopUpRequest),
)
async def top_up(
    request: Request,
    merchant: CurrentMerchant,
    idempotency: IdempotencyDep,
    session: SessionDep,
    request_id: RequestId,
) -> Response:
    async def operation() -> tuple[int, bytes]:
        body = await read_body(request, TopUpRequest)
        try:
            done = await top_up_and_start_queued(
                session, merchant.id, body.amount, time=SANDBOX_TIME, correlation_id=request_id
            )
        except BalanceLimitExceeded as exc:
            raise ValidationFailed.on("amount", TOP_UP_PAST_THE_LIMIT) from exc
        available = await session.scalar(
            select(Balance.available).where(Balance.merchant_id == merchant.id)
        )
        data: dict[str, Any] = {
            "amount": format_amount(done.amount),
            "availableBalance": format_amount(Decimal(available or 0)),
            "startedPayouts": [payout_json(payout) for payout in done.started],
        }
        return 200, success_body(data, "Balance topped up")

    return await idempotency.run(request, session, operation)
