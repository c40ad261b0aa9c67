import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import Field
from starlette.responses import Response

from api_service.deps import CurrentMerchant, RequestId, SessionDep, SettingsDep
from api_service.envelope import json_response, success_body
from api_service.errors import (
    AUTH_ERRORS,
    IDEMPOTENCY_ERRORS,
    InvalidSignature,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    SandboxDisabled,
    error_responses,
)
from api_service.idempotency import IdempotencyDep
from api_service.psp import service
from api_service.request_body import documented_body, read_body, validate_body
from api_service.schemas import RequestModel
from contracts.domain.statuses import PspOutcome

router = APIRouter(tags=["psp"])


class PspCallbackRequest(RequestModel):
    event_id: Annotated[str, Field(min_length=1, max_length=100)]
    payout_id: Annotated[str, Field(min_length=1, max_length=36)]
    status: PspOutcome
    psp_reference: Annotated[str, Field(max_length=64)] | None = None
    failure_reason: Annotated[str, Field(max_length=255)] | None = None


class SimulateRequest(RequestModel):
    outcome: PspOutcome
    failure_reason: Annotated[str, Field(max_length=255)] | None = None


@router.post(
    "/ipn/psp",
    responses=error_responses(InvalidSignature, NotFound, InvalidTransition, PayloadTooLarge),
    summary="PSP callback (HMAC-SHA256 of the raw body in X-PSP-Signature)",
    openapi_extra=documented_body(PspCallbackRequest),
)
async def psp_callback(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    request_id: RequestId,
    signature: Annotated[str | None, Header(alias="X-PSP-Signature")] = None,
) -> Response:
    raw = await request.body()
    if not service.signature_matches(settings.psp_secret, raw, signature):
        raise InvalidSignature
    callback = validate_body(PspCallbackRequest, raw)
    recorded = False
    if not await service.callback_already_recorded(session, callback.event_id):
        payout = await service.find_payout(session, callback.payout_id)
        recorded = await service.record_psp_outcome(
            session,
            payout,
            event_id=callback.event_id,
            outcome=callback.status,
            psp_reference=callback.psp_reference,
            failure_reason=callback.failure_reason,
            source="IPN",
            request_id=request_id,
        )
        await session.commit()
    # A repeated event id is acknowledged the same way, so the PSP stops resending it.
    data = {"eventId": callback.event_id, "payoutId": callback.payout_id, "duplicate": not recorded}
    return json_response(success_body(data, "Callback accepted"))


@router.post(
    "/sandbox/payouts/{payout_id}/simulate",
    responses=error_responses(*AUTH_ERRORS, *IDEMPOTENCY_ERRORS, NotFound, InvalidTransition),
    summary="Sandbox: settle a payout as the PSP would (test mode only)",
    openapi_extra=documented_body(SimulateRequest),
)
async def simulate_outcome(
    payout_id: str,
    request: Request,
    merchant: CurrentMerchant,
    idempotency: IdempotencyDep,
    session: SessionDep,
    settings: SettingsDep,
    request_id: RequestId,
) -> Response:
    if not settings.sandbox_enabled:
        raise SandboxDisabled

    async def operation() -> tuple[int, bytes]:
        body = await read_body(request, SimulateRequest)
        payout = await service.find_payout(session, payout_id, merchant.id)
        event_id = f"sim_{uuid.uuid4().hex}"
        await service.record_psp_outcome(
            session,
            payout,
            event_id=event_id,
            outcome=body.outcome,
            psp_reference=payout.psp_reference or f"SIM-{payout.id[:8].upper()}",
            failure_reason=body.failure_reason,
            source="SANDBOX",
            request_id=request_id,
        )
        data = {"eventId": event_id, "payoutId": payout.id, "outcome": body.outcome.value}
        return 202, success_body(data, "Outcome accepted; the payout changes shortly")

    return await idempotency.run(request, session, operation)
