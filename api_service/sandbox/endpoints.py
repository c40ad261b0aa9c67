"""Sandbox controls (test mode only; production answers 404): merchant-wide faults, webhook
chaos, and the go-live readiness report."""

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, update
from sqlalchemy.dialects.mysql import insert
from starlette.responses import Response

from api_service.deps import SANDBOX_ONLY, CurrentMerchant, SessionDep
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import (
    AUTH_ERRORS,
    IDEMPOTENCY_ERRORS,
    PayloadTooLarge,
    SandboxDisabled,
    error_responses,
)
from api_service.idempotency import IdempotencyDep
from api_service.request_body import documented_body, read_body, require_json
from api_service.sandbox.fault_settings import (
    FaultShares,
    clear_fault_share,
    load_fault_share,
    save_fault_share,
)
from api_service.sandbox.faults import FAULT_RULE, FaultShare, parse_fault
from api_service.sandbox.readiness import Verdict, readiness_report
from api_service.schemas import WHOLE_NUMBER, SettingRequest
from contracts.db.engine import utcnow
from contracts.db.models import Merchant, WebhookChaosSetting
from contracts.webhook_chaos import (
    CHAOS_FIELDS,
    MAX_CHAOS_DELAY_SECONDS,
    MAX_INJECTED_FAILURES,
    WebhookChaos,
    chaos_of,
)
from contracts.wire import TimestampText

SANDBOX_PREFIX = "/sandbox"
router = APIRouter(prefix=SANDBOX_PREFIX, tags=["sandbox"], dependencies=SANDBOX_ONLY)
SANDBOX_ERRORS = (*AUTH_ERRORS, SandboxDisabled)


Percent = Annotated[int, Field(ge=0, le=100), WHOLE_NUMBER]
Flag = Annotated[bool, Field(strict=True)]  # true or false, not "true" or 1


class FaultSettingRequest(SettingRequest):
    fault: Annotated[str, Field(max_length=40, examples=["status=503"], description=FAULT_RULE)]
    percent: Annotated[
        int, Field(ge=1, le=100, description="Share of your calls, in %"), WHOLE_NUMBER
    ]

    @field_validator("fault")
    @classmethod
    def _a_fault(cls, value: str) -> str:
        return parse_fault(value).label


class FaultSettingView(BaseModel):
    fault: str | None
    percent: int


class FaultSettingEnvelope(SuccessEnvelope[FaultSettingView]):
    pass


def _fault_json(share: FaultShare | None) -> dict[str, Any]:
    if share is None:
        return {"fault": None, "percent": 0}
    return {"fault": share.fault.label, "percent": share.percent}


@router.get(
    "/faults",
    response_model=FaultSettingEnvelope,
    responses=error_responses(*SANDBOX_ERRORS),
    summary="Sandbox: the fault injected into a share of your API calls, if any",
)
async def get_faults(merchant: CurrentMerchant, session: SessionDep) -> Response:
    return json_response(success_body(_fault_json(await load_fault_share(session, merchant.id))))


@router.put(
    "/faults",
    response_model=FaultSettingEnvelope,
    responses=error_responses(*SANDBOX_ERRORS, PayloadTooLarge),
    summary="Sandbox: inject a fault into a share of your API calls",
    description=(
        "The fault (as in the `X-Sandbox-Fault` header) hits `percent` % of your calls, drawn "
        "at random, except the /sandbox controls themselves. A call's own header wins."
    ),
    openapi_extra=documented_body(FaultSettingRequest),
)
async def put_faults(request: Request, merchant: CurrentMerchant, session: SessionDep) -> Response:
    body = await read_body(request, FaultSettingRequest)
    share = FaultShare(parse_fault(body.fault), body.percent)
    await save_fault_share(session, merchant.id, share)
    await session.commit()
    _fault_shares(request).expire()
    return json_response(success_body(_fault_json(share), "Fault setting saved"))


@router.delete(
    "/faults",
    response_model=FaultSettingEnvelope,
    responses=error_responses(*SANDBOX_ERRORS),
    summary="Sandbox: stop injecting faults into your API calls",
)
async def delete_faults(
    request: Request, merchant: CurrentMerchant, session: SessionDep
) -> Response:
    await clear_fault_share(session, merchant.id)
    await session.commit()
    _fault_shares(request).expire()
    return json_response(success_body(_fault_json(None), "Fault setting removed"))


def _fault_shares(request: Request) -> FaultShares:
    shares: FaultShares = request.app.state.fault_shares
    return shares


class WebhookChaosRequest(SettingRequest):
    """The whole setting: a field left out is off."""

    duplicate_percent: Annotated[Percent, Field(description="Deliveries sent twice (same id)")] = 0
    out_of_order: Annotated[
        Flag, Field(description="Hold payout.processing until after the final event")
    ] = False
    delay_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_CHAOS_DELAY_SECONDS,
            description="Hold an attempt this long: the first, unless other chaos comes first",
        ),
        WHOLE_NUMBER,
    ] = 0
    stale_timestamp_percent: Annotated[
        Percent, Field(description="First attempts signed with a 10-minute-old timestamp")
    ] = 0
    old_secret_only: Annotated[
        Flag,
        Field(
            description="First attempts signed with the old secret, once a rotation's grace "
            "period is over"
        ),
    ] = False
    fail_first_attempts: Annotated[
        int,
        Field(ge=0, le=MAX_INJECTED_FAILURES, description="Attempts we fail ourselves"),
        WHOLE_NUMBER,
    ] = 0


class WebhookChaosView(BaseModel):
    duplicatePercent: int
    outOfOrder: bool
    delaySeconds: int
    staleTimestampPercent: int
    oldSecretOnly: bool
    failFirstAttempts: int


class WebhookChaosEnvelope(SuccessEnvelope[WebhookChaosView]):
    pass


def _chaos_json(chaos: WebhookChaos) -> dict[str, Any]:
    return {
        "duplicatePercent": chaos.duplicate_percent,
        "outOfOrder": chaos.out_of_order,
        "delaySeconds": chaos.delay_seconds,
        "staleTimestampPercent": chaos.stale_timestamp_percent,
        "oldSecretOnly": chaos.old_secret_only,
        "failFirstAttempts": chaos.fail_first_attempts,
    }


def _chaos_of(row: WebhookChaosSetting | None) -> WebhookChaos:
    if row is None:
        return WebhookChaos()
    return chaos_of([getattr(row, name) for name in CHAOS_FIELDS])


CHAOS_DESCRIPTION = (
    "Each changed attempt is marked with its `chaos` kind in the delivery log "
    "(GET /webhooks/deliveries). Shares are per event (the same event always gets the same "
    "treatment). An event picked for several kinds meets them on consecutive attempts, in "
    "this order: injected failures, stale timestamp, old secret, then the hold (delay, or "
    "out of order for payout.processing), which is sent clean; a receiver that refuses what "
    "it must refuse gets the event on the retry ladder's next attempt. A resend is always "
    "clean. Takes effect within a couple of seconds."
)


@router.get(
    "/webhook-chaos",
    response_model=WebhookChaosEnvelope,
    responses=error_responses(*SANDBOX_ERRORS),
    summary="Sandbox: how webhooks misbehave towards your endpoint",
)
async def get_webhook_chaos(merchant: CurrentMerchant, session: SessionDep) -> Response:
    row = await session.get(WebhookChaosSetting, merchant.id)
    return json_response(success_body(_chaos_json(_chaos_of(row))))


@router.put(
    "/webhook-chaos",
    response_model=WebhookChaosEnvelope,
    responses=error_responses(*SANDBOX_ERRORS, PayloadTooLarge),
    summary="Sandbox: make webhooks to your endpoint misbehave (duplicates, order, delay, …)",
    description=CHAOS_DESCRIPTION,
    openapi_extra=documented_body(WebhookChaosRequest),
)
async def put_webhook_chaos(
    request: Request, merchant: CurrentMerchant, session: SessionDep
) -> Response:
    body = await read_body(request, WebhookChaosRequest)
    values = {**body.model_dump(), "updated_at": utcnow()}
    await session.execute(
        insert(WebhookChaosSetting)
        .values(merchant_id=merchant.id, **values)
        .on_duplicate_key_update(**values)
    )
    await session.commit()
    chaos = WebhookChaos(**body.model_dump())
    return json_response(success_body(_chaos_json(chaos), "Webhook chaos saved"))


@router.delete(
    "/webhook-chaos",
    response_model=WebhookChaosEnvelope,
    responses=error_responses(*SANDBOX_ERRORS),
    summary="Sandbox: webhooks behave again",
)
async def delete_webhook_chaos(merchant: CurrentMerchant, session: SessionDep) -> Response:
    await session.execute(
        delete(WebhookChaosSetting).where(WebhookChaosSetting.merchant_id == merchant.id)
    )
    await session.commit()
    return json_response(success_body(_chaos_json(WebhookChaos()), "Webhook chaos removed"))


class ReadinessItemView(BaseModel):
    id: str
    title: str
    status: Verdict
    evidence: str


class ReadinessSummaryView(BaseModel):
    ready: bool
    passed: int
    failed: int
    notTried: int


class ReadinessView(BaseModel):
    items: list[ReadinessItemView]
    summary: ReadinessSummaryView
    since: TimestampText | None = Field(
        description=(
            "When this readiness run started (`POST /sandbox/readiness/restart`): the report "
            "counts the payouts you created, the webhooks made (with their attempts), and the "
            "API calls you started since then; null: everything you ever did here. Or later: see "
            "`limitedToLatestPayouts`"
        )
    )
    limitedToLatestPayouts: int | None = Field(
        default=None,
        description=(
            "Set when the run holds more payouts than this: the report counts your latest ones "
            "and what you did since the oldest of them, whose createdAt `since` is (a longer "
            "history took seconds to read at each view). null: the whole run counts"
        ),
    )


class ReadinessEnvelope(SuccessEnvelope[ReadinessView]):
    pass


@router.get(
    "/readiness",
    response_model=ReadinessEnvelope,
    responses=error_responses(*SANDBOX_ERRORS),
    summary="Sandbox: the go-live readiness report, computed from what you did here",
    description=(
        "A checklist, each item `passed`, `failed` or `not_tried` with its evidence: every "
        "scenario seen to its final status, a reversal received, a reinitiation, a retry "
        "after `timeout-after-commit` that reused its idempotency key, 429s honoured, your "
        "webhook endpoint's speed, duplicates accepted, stale and wrongly signed deliveries "
        "refused."
    ),
)
async def get_readiness(merchant: CurrentMerchant, session: SessionDep) -> Response:
    return json_response(success_body(await readiness_report(session, merchant.id)))


@router.post(
    "/readiness/restart",
    response_model=ReadinessEnvelope,
    responses=error_responses(*SANDBOX_ERRORS, *IDEMPOTENCY_ERRORS),
    summary="Sandbox: start the readiness report over, from now",
    description=(
        "Once you have fixed your integration: the report stops counting what you did before "
        "(a receiver that accepted a stale delivery, a retry sent too early, the payouts of "
        "every scenario) and starts again from `not_tried`. Answers the new report. Nothing "
        "else is deleted: your payouts, webhooks and request log stay."
    ),
)
async def restart_readiness(
    request: Request, merchant: CurrentMerchant, idempotency: IdempotencyDep, session: SessionDep
) -> Response:
    async def operation() -> tuple[int, bytes]:
        require_json(request, await request.body())  # it takes no body, but a labelled one
        await session.execute(
            update(Merchant).where(Merchant.id == merchant.id).values(readiness_since=utcnow())
        )
        report = await readiness_report(session, merchant.id)
        return 200, success_body(report, "Readiness restarted: it counts what you do from now on")

    return await idempotency.run(request, session, operation)
