"""Request bodies and (for the OpenAPI document) response shapes of the webhook endpoints."""

from typing import Annotated

from pydantic import BaseModel, Field

from api_service.envelope import SuccessEnvelope
from api_service.pagination import Pagination
from api_service.schemas import WHOLE_NUMBER, RequestModel, SettingRequest
from api_service.webhooks.service import ATTEMPTS_SHOWN
from contracts.domain.statuses import LEGACY_EVENT_NAMES, EventType
from contracts.payout_view import PayoutView
from contracts.webhook_chaos import ChaosKind
from contracts.webhooks import MAX_URL_LENGTH, DeliveryStatus
from contracts.wire import TimestampText


class UpdateWebhookEndpoint(RequestModel):
    url: Annotated[
        Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)] | None,
        Field(
            description="http(s) URL that receives the webhooks; null removes the endpoint",
            examples=["https://merchant.example/webhooks/mypay"],
        ),
    ]


MAX_GRACE_HOURS = 168


class RotateSecretRequest(SettingRequest):
    """Optional: without a body the previous secret keeps signing beside the new one for
    `PAYOUTS_WEBHOOK_SECRET_GRACE_HOURS` (24). A field it does not know is a 400 naming it: a
    typo (`previousSecretGraceHour: 0`) kept a leaked secret signing for the default 24 h."""

    previous_secret_grace_hours: Annotated[
        Annotated[int, Field(ge=0, le=MAX_GRACE_HOURS), WHOLE_NUMBER] | None,
        Field(
            description="How long the previous secret keeps signing; 0 retires it at once (a "
            "leaked secret, or to meet the readiness report's rotated-out-secret chaos today)",
        ),
    ] = None


class WebhookAttemptView(BaseModel):
    attemptNumber: int
    url: str
    statusCode: int | None
    latencyMs: int
    error: str | None
    responseExcerpt: str | None
    chaos: ChaosKind | None = Field(
        description="What sandbox webhook chaos did to this attempt (PUT /sandbox/webhook-chaos)"
    )
    createdAt: TimestampText


class WebhookDeliveryView(BaseModel):
    id: str
    eventId: str
    eventType: str
    payoutId: str
    url: str | None
    status: DeliveryStatus
    attemptCount: int = Field(
        description="Every attempt made, including those `attempts` leaves out"
    )
    lastStatusCode: int | None = Field(
        description="What your endpoint answered the latest attempt (none: no answer). A resend "
        "shows the attempt before it until its own is made"
    )
    lastError: str | None
    nextAttemptAt: TimestampText | None = Field(
        description="RETRYING: when the next attempt is due, on your sandbox clock (real time "
        "unless you advanced it)"
    )
    deliveredAt: TimestampText | None = Field(
        description="When an attempt last got a 2xx. A resend (PENDING again) keeps the earlier "
        "time until its own attempt gets one"
    )
    createdAt: TimestampText
    updatedAt: TimestampText
    attempts: list[WebhookAttemptView] = Field(
        description=f"The latest {ATTEMPTS_SHOWN} attempts, oldest first "
        "(`attemptCount` counts them all)"
    )


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDeliveryView]
    pagination: Pagination


class WebhookDeliveryListEnvelope(SuccessEnvelope[WebhookDeliveryList]):
    pass


class WebhookDeliveryEnvelope(SuccessEnvelope[WebhookDeliveryView]):
    pass


class PayoutEventView(BaseModel):
    """Exactly the body the webhook carries."""

    id: str
    type: str = Field(json_schema_extra={"enum": [event_type.value for event_type in EventType]})
    createdAt: TimestampText
    event: str = Field(json_schema_extra={"enum": list(LEGACY_EVENT_NAMES)})
    payout: PayoutView
    sandboxTime: TimestampText | None = Field(
        default=None,
        description="Only on a change the sandbox clock caused (a scheduled step that came "
        "due, e.g. after POST /sandbox/clock/advance): your sandbox time it was due at. "
        "`createdAt` stays the real time. Absent otherwise.",
    )


class PayoutEventList(BaseModel):
    events: list[PayoutEventView]
    pagination: Pagination


class PayoutEventListEnvelope(SuccessEnvelope[PayoutEventList]):
    pass


class WebhookEndpointView(BaseModel):
    url: str | None
    previousSecretExpiresAt: TimestampText | None = Field(
        description="While set, webhooks are signed with the previous secret too"
    )


class WebhookEndpointEnvelope(SuccessEnvelope[WebhookEndpointView]):
    pass


class WebhookSecretView(WebhookEndpointView):
    secret: str = Field(
        description=(
            "The new signing secret, shown by the API in this response only (the dashboard can "
            "reveal it)"
        )
    )


class WebhookSecretEnvelope(SuccessEnvelope[WebhookSecretView]):
    pass
