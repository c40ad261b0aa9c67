import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from api_service.deps import (
    SANDBOX_ONLY,
    CurrentMerchant,
    RequestId,
    SessionDep,
    SettingsDep,
    header_is_repeated,
    reject_credentials,
)
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import (
    AUTH_ERRORS,
    IDEMPOTENCY_ERRORS,
    EventIdReused,
    InvalidSignature,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    PspReferenceOfAnotherPayout,
    SandboxDisabled,
    StalePspReference,
    UnsupportedMediaType,
    error_responses,
)
from api_service.idempotency import (
    IdempotencyDep,
    answered_by_its_own_work,
    run_again_after_deadlocks,
)
from api_service.payouts.service import find_payout
from api_service.psp import service
from api_service.request_body import documented_body, read_body, require_json, validate_body
from api_service.schemas import HumanText, PayoutIdPath, RequestModel, SettingRequest
from contracts.db.models import FAILURE_REASON_LENGTH, PSP_REFERENCE_LENGTH
from contracts.domain.psp_references import simulated_reference
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_of

PSP_SIGNATURE_HEADER = "X-PSP-Signature"

log = logging.getLogger("api.psp")

router = APIRouter(tags=["psp"])

IPN_RULES = """
Each callback is judged against the newest outcome already accepted for the payout, so callbacks
sent back to back get the same answers as callbacks sent a minute apart:
PENDING / ON_HOLD / IN_REVIEW / RETRY / PROCESSING -> SUCCESS or FAILED, and SUCCESS -> REVERSED
are accepted (200) and applied in the order they were accepted; any other transition is 409
`INVALID_TRANSITION` and changes nothing.

Outcomes belong to an attempt: a callback whose `pspReference` names an attempt from before the
payout was reinitiated is 409 `STALE_PSP_REFERENCE` and changes nothing; one whose
`pspReference` names another payout is 409 `PSP_REFERENCE_OF_ANOTHER_PAYOUT` and changes
nothing; a callback without `pspReference` applies to the current attempt. The same `eventId`
twice is 200, applied once; an `eventId` already sent for another payout, or with another
`status`, is 422 `EVENT_ID_REUSED` and changes nothing.
"""


class PspCallbackRequest(RequestModel):
    event_id: Annotated[str, Field(min_length=1, max_length=100)]
    payout_id: Annotated[str, Field(min_length=1, max_length=36)]
    # Any payout status: one a callback cannot move a payout to (PENDING, say) is a transition
    # the table does not allow (409 INVALID_TRANSITION, as the contract says), not a 400.
    status: Annotated[
        PayoutStatus, Field(description="SUCCESS, FAILED or REVERSED; any other is 409")
    ]
    psp_reference: Annotated[str, Field(max_length=PSP_REFERENCE_LENGTH)] | None = None
    failure_reason: Annotated[HumanText, Field(max_length=FAILURE_REASON_LENGTH)] | None = None


class SimulateRequest(SettingRequest):  # a typo (`failureReasn`) is a 400, not ignored
    outcome: PspOutcome
    failure_reason: Annotated[HumanText, Field(max_length=FAILURE_REASON_LENGTH)] | None = None


class CallbackReceipt(BaseModel):
    eventId: str
    payoutId: str
    duplicate: bool = Field(description="The eventId was already accepted: applied once, not again")


class CallbackReceiptEnvelope(SuccessEnvelope[CallbackReceipt]):
    pass


class SimulationReceipt(BaseModel):
    eventId: str = Field(description="The IPN event the sandbox made up for this outcome")
    payoutId: str
    outcome: PspOutcome


class SimulationReceiptEnvelope(SuccessEnvelope[SimulationReceipt]):
    pass


@router.post(
    "/ipn/psp",
    response_model=CallbackReceiptEnvelope,
    responses=error_responses(
        InvalidSignature,
        NotFound,
        InvalidTransition,
        StalePspReference,
        PspReferenceOfAnotherPayout,
        EventIdReused,
        PayloadTooLarge,
        UnsupportedMediaType,
    ),
    summary="PSP callback (HMAC-SHA256 of the raw body in X-PSP-Signature)",
    description=IPN_RULES,
    openapi_extra=documented_body(PspCallbackRequest),
)
async def psp_callback(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    request_id: RequestId,
    signature: Annotated[
        str | None,
        Header(
            alias=PSP_SIGNATURE_HEADER,
            description="Hex HMAC-SHA256 of the raw body, keyed with the PSP secret; missing, "
            "wrong or given twice: 401",
        ),
    ] = None,
) -> Response:
    raw = await request.body()
    if header_is_repeated(request, PSP_SIGNATURE_HEADER):  # which one is meant? (as an API key)
        reject_credentials(
            "psp_signature",
            InvalidSignature(f"{PSP_SIGNATURE_HEADER} is given more than once"),
            "PSP callback signature given more than once",
        )
    if not service.signature_matches(settings.psp_secret, raw, signature):  # forged ones show up
        reject_credentials(
            "psp_signature", InvalidSignature, "missing or wrong PSP callback signature"
        )
    require_json(request, raw)
    callback = validate_body(PspCallbackRequest, raw)

    async def accepted() -> tuple[bool, str, str]:
        """Whether the callback was recorded (not a duplicate), and the payout's id as stored:
        the lookup ignores a UUID's case, and the receipt echoed the caller's (IPN review)."""
        payout = await find_payout(session, callback.payout_id, merchant_id=None, lock=True)
        outcome = psp_outcome_of(callback.status)
        if outcome is None:
            raise InvalidTransition(
                f"{payout.status} -> {callback.status} is not allowed", field="status"
            )
        recorded = await service.accept_psp_outcome(
            session,
            payout,
            event_id=callback.event_id,
            outcome=outcome,
            psp_reference=callback.psp_reference,
            failure_reason=callback.failure_reason,
            source="IPN",
            request_id=request_id,
        )
        await session.commit()
        return recorded, payout.id, payout.merchant_id

    # Callbacks naming one new reference wait on its claim row; when the first rolls back (a
    # refusal), InnoDB may pick one of the others as a deadlock's victim: it runs again.
    recorded, payout_id, merchant_id = await run_again_after_deadlocks(
        accepted, roll_back=session.rollback
    )
    if recorded:  # committed; a repeated event id changed nothing, and says nothing new
        log.info(
            "PSP outcome %s accepted (event %s)",
            callback.status.value,
            callback.event_id,
            extra={
                "payout_id": payout_id,
                "merchant_id": merchant_id,
                "outcome": callback.status.value,
            },
        )
    # A repeated event id is acknowledged the same way, so the PSP stops resending it.
    data = {"eventId": callback.event_id, "payoutId": payout_id, "duplicate": not recorded}
    return json_response(success_body(data, "Callback accepted"))


@router.post(
    "/sandbox/payouts/{payout_id}/simulate",
    status_code=202,
    response_model=SimulationReceiptEnvelope,
    dependencies=SANDBOX_ONLY,
    responses=error_responses(*AUTH_ERRORS, *IDEMPOTENCY_ERRORS, NotFound, InvalidTransition),
    summary="Sandbox: settle a payout as the PSP would (test mode only)",
    description="Judged like an IPN for the payout's current attempt (see `POST /ipn/psp`).",
    openapi_extra=documented_body(SimulateRequest),
)
async def simulate_outcome(
    request: Request,
    merchant: CurrentMerchant,
    payout_id: PayoutIdPath,
    idempotency: IdempotencyDep,
    session: SessionDep,
    settings: SettingsDep,
    request_id: RequestId,
) -> Response:
    if not settings.sandbox_enabled:  # the dashboard calls this function, not the route
        raise SandboxDisabled
    accepted: tuple[str, PspOutcome, str] | None = None  # by this request's work, if it ran

    async def operation() -> tuple[int, bytes]:
        nonlocal accepted
        body = await read_body(request, SimulateRequest)
        payout = await find_payout(session, payout_id, merchant_id=merchant.id, lock=True)
        event_id = f"sim_{uuid.uuid4().hex}"
        await service.accept_psp_outcome(
            session,
            payout,
            event_id=event_id,
            outcome=body.outcome,
            psp_reference=payout.psp_reference or simulated_reference(payout.id, payout.hold_cycle),
            failure_reason=body.failure_reason,
            source="SANDBOX",
            request_id=request_id,
        )
        accepted = (payout.id, body.outcome, event_id)
        data = {"eventId": event_id, "payoutId": payout.id, "outcome": body.outcome.value}
        return 202, success_body(data, "Outcome accepted; the payout changes shortly")

    response = await idempotency.run(request, session, operation)
    if accepted is not None and answered_by_its_own_work(response, 202):
        accepted_id, outcome, event_id = accepted
        log.info(
            "PSP outcome %s accepted (simulated, event %s)",
            outcome.value,
            event_id,
            extra={"payout_id": accepted_id, "outcome": outcome.value},
        )
    return response
