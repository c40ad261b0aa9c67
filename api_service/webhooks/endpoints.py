from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api_service.deps import CurrentMerchant, RequestId, SessionDep, SettingsDep
from api_service.envelope import json_response, success_body
from api_service.errors import (
    AUTH_ERRORS,
    IDEMPOTENCY_ERRORS,
    NotFound,
    PayloadTooLarge,
    error_responses,
)
from api_service.idempotency import IdempotencyDep, run_again_after_deadlocks
from api_service.pagination import (
    STARTING_AFTER,
    PageNumber,
    PageSize,
    pagination_json,
    window_of,
)
from api_service.request_body import documented_body, optional_body, read_body, require_json
from api_service.schemas import DeliveryIdPath, QueryText
from api_service.webhooks import service
from api_service.webhooks.schemas import (
    PayoutEventListEnvelope,
    RotateSecretRequest,
    UpdateWebhookEndpoint,
    WebhookDeliveryEnvelope,
    WebhookDeliveryListEnvelope,
    WebhookEndpointEnvelope,
    WebhookSecretEnvelope,
)
from contracts.db.engine import utcnow
from contracts.db.models import (
    Merchant,
    PayoutEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from contracts.domain.statuses import EventType
from contracts.messages import PayoutStatusChanged
from contracts.webhooks import DeliveryStatus
from contracts.wire import format_timestamp

router = APIRouter()


def _starting_after(max_length: int) -> Any:
    return Query(
        alias=STARTING_AFTER,
        min_length=1,
        max_length=max_length,
        description="The previous page's `nextCursor`: the items older than it (not with `page`)",
    )


def attempt_json(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "attemptNumber": attempt.attempt_number,
        "url": attempt.url,
        "statusCode": attempt.status_code,
        "latencyMs": attempt.latency_ms,
        "error": attempt.error,
        "responseExcerpt": attempt.response_excerpt,
        "chaos": attempt.chaos,
        "createdAt": format_timestamp(attempt.created_at),
    }


def delivery_json(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "eventId": delivery.event_id,
        "eventType": delivery.event_type,
        "payoutId": delivery.payout_id,
        "url": delivery.url,
        "status": delivery.status,
        "attemptCount": delivery.attempts,
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "nextAttemptAt": format_timestamp(delivery.next_attempt_at)
        if delivery.next_attempt_at
        else None,
        "deliveredAt": format_timestamp(delivery.delivered_at) if delivery.delivered_at else None,
        "createdAt": format_timestamp(delivery.created_at),
        "updatedAt": format_timestamp(delivery.updated_at),
        "attempts": [attempt_json(attempt) for attempt in attempts],
    }


def event_json(recorded: PayoutEvent) -> dict[str, Any]:
    return PayoutStatusChanged.model_validate_json(recorded.body).webhook_body()


def endpoint_json(merchant: Merchant) -> dict[str, Any]:
    """The endpoint without its secrets; the rotation's end while the previous one still signs."""
    expires = merchant.previous_secret_expires_at  # set with the previous secret, cleared with it
    in_grace = expires is not None and expires > utcnow()
    return {
        "url": merchant.webhook_url,
        "previousSecretExpiresAt": format_timestamp(expires) if in_grace and expires else None,
    }


@router.get(
    "/webhooks/deliveries",
    tags=["webhooks"],
    response_model=WebhookDeliveryListEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary="Webhook deliveries with every attempt, newest first (page/limit or cursor)",
)
async def list_deliveries(
    merchant: CurrentMerchant,
    session: SessionDep,
    page: PageNumber = None,
    limit: PageSize = 20,
    event_id: Annotated[
        QueryText | None, Query(alias="eventId", min_length=1, max_length=40)
    ] = None,
    payout_id: Annotated[
        QueryText | None, Query(alias="payoutId", min_length=1, max_length=36)
    ] = None,
    status: DeliveryStatus | None = None,
    starting_after: Annotated[QueryText | None, _starting_after(36)] = None,
) -> Response:
    filters = service.DeliveryFilters(event_id=event_id, payout_id=payout_id, status=status)
    window = await window_of(
        session,
        page=page,
        starting_after=starting_after,
        limit=limit,
        cursor_key=service.delivery_cursor(merchant),
        items="webhook deliveries",
    )
    result = await service.list_deliveries(session, merchant, filters, window)
    deliveries = result.deliveries
    last = deliveries[-1].id if deliveries else None
    data = {
        "deliveries": [delivery_json(one, result.attempts[one.id]) for one in deliveries],
        "pagination": pagination_json(result.listed, window, last),
    }
    return json_response(success_body(data))


@router.post(
    "/webhooks/deliveries/{delivery_id}/resend",
    status_code=202,
    tags=["webhooks"],
    response_model=WebhookDeliveryEnvelope,
    responses=error_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, NotFound, service.WebhookEndpointMissing
    ),
    summary="Send the delivery's event again (same webhook-id, fresh timestamp and signature)",
)
async def resend_delivery(
    request: Request,
    merchant: CurrentMerchant,
    delivery_id: DeliveryIdPath,
    idempotency: IdempotencyDep,
    session: SessionDep,
    request_id: RequestId,
) -> Response:
    async def operation() -> tuple[int, bytes]:
        require_json(request, await request.body())  # it takes no body, but a labelled one
        delivery = await service.resend_delivery(
            session, merchant, delivery_id, request_id=request_id
        )
        attempts = await service.attempts_of(session, [delivery])
        body = delivery_json(delivery, attempts[delivery.id])
        return 202, success_body(body, "Webhook resend queued")

    return await idempotency.run(request, session, operation)


@router.get(
    "/events",
    tags=["events"],
    response_model=PayoutEventListEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary=(
        "The merchant's payout events (the webhook bodies), newest first (page/limit or "
        "startingAfter cursor)"
    ),
)
async def list_events(
    merchant: CurrentMerchant,
    session: SessionDep,
    page: PageNumber = None,
    limit: PageSize = 20,
    payout_id: Annotated[
        QueryText | None, Query(alias="payoutId", min_length=1, max_length=36)
    ] = None,
    event_type: Annotated[EventType | None, Query(alias="type")] = None,
    starting_after: Annotated[QueryText | None, _starting_after(40)] = None,
) -> Response:
    window = await window_of(
        session,
        page=page,
        starting_after=starting_after,
        limit=limit,
        cursor_key=service.event_cursor(merchant),
        items="events",
    )
    listed = await service.list_events(
        session, merchant, payout_id=payout_id, event_type=event_type, window=window
    )
    events: list[PayoutEvent] = listed.firsts()
    data = {
        "events": [event_json(recorded) for recorded in events],
        "pagination": pagination_json(listed, window, events[-1].id if events else None),
    }
    return json_response(success_body(data))


@router.get(
    "/webhook-endpoint",
    tags=["webhooks"],
    response_model=WebhookEndpointEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary="The webhook endpoint (secrets are never shown here)",
)
async def get_endpoint(merchant: CurrentMerchant, session: SessionDep) -> Response:
    """Read from its row, not from the merchant this process cached with the API key: a PUT
    answered by another API process showed the old URL here for up to 2 s. Without its
    secrets: a secret no key opens answered this 500."""
    stored = await session.get(Merchant, merchant.id, populate_existing=True)
    assert stored is not None, "merchants are never deleted"
    return json_response(success_body(endpoint_json(stored)))


@router.put(
    "/webhook-endpoint",
    tags=["webhooks"],
    response_model=WebhookEndpointEnvelope,
    responses=error_responses(*AUTH_ERRORS, PayloadTooLarge),
    summary="Set (or, with null, remove) the webhook URL; it must resolve to a public address",
    openapi_extra=documented_body(UpdateWebhookEndpoint),
)
async def put_endpoint(
    request: Request,
    merchant: CurrentMerchant,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    # Read here, not as a typed parameter: the API key is checked before the body is parsed.
    body = await read_body(request, UpdateWebhookEndpoint)

    async def saved() -> Merchant:
        updated = await service.update_endpoint(
            session,
            merchant,
            body.url,
            allow_private=settings.webhook_allow_private_urls,
            resolve=request.app.state.host_resolver.of(merchant.id),
        )
        await session.commit()
        return updated

    # A rotation holds a shared lock on the merchant row (its idempotency key's foreign key)
    # before it locks the row to rotate: a PUT waiting between the two was InnoDB's deadlock
    # victim, and answered 503 with the database up.
    updated = await run_again_after_deadlocks(saved, roll_back=session.rollback)
    request.app.state.merchants.forget(merchant.id)
    return json_response(success_body(endpoint_json(updated), "Webhook endpoint updated"))


@router.post(
    "/webhook-endpoint/rotate-secret",
    tags=["webhooks"],
    response_model=WebhookSecretEnvelope,
    responses=error_responses(*AUTH_ERRORS, *IDEMPOTENCY_ERRORS),
    summary="New signing secret; the old one keeps signing during the grace period",
    description="The API shows the secret in this answer only (the dashboard's Webhooks page, "
    "signed in, can reveal the current one). One previous secret is kept: a second rotation "
    "within the grace period retires the first secret at once (retry a rotation with its own "
    "X-IDEMPOTENCY-KEY to get the same secret back). The webhook service reads your endpoint "
    "and secrets at most 2 s old: for up to 2 s after a rotation an attempt may still be "
    "signed with the secrets from before it alone.",
    openapi_extra=optional_body(RotateSecretRequest),
)
async def rotate_secret(
    request: Request,
    merchant: CurrentMerchant,
    idempotency: IdempotencyDep,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    async def operation() -> tuple[int, bytes]:
        asked = (
            await read_body(request, RotateSecretRequest)
            if await request.body()
            else RotateSecretRequest()
        )
        hours = asked.previous_secret_grace_hours
        grace = settings.webhook_secret_grace_hours if hours is None else hours
        rotated, secret = await service.rotate_secret(
            session, merchant, grace=timedelta(hours=grace)
        )
        data = {**endpoint_json(rotated), "secret": secret}
        return 200, success_body(
            data,
            "Store this secret now: the API does not show it again (the dashboard can reveal it)",
        )

    # A retry with the same key gets the same secret back, stored only encrypted (see
    # api_service/sealed_responses.py).
    response = await idempotency.run(request, session, operation, sealed=True)
    request.app.state.merchants.forget(merchant.id)
    return response
