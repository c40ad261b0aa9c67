"""Merchant operations on webhooks: the delivery log, resends, the event log, the endpoint and
its secret. Functions take the request's session and never commit: the endpoint commits."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, String, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.errors import ApiError, NotFound, ValidationFailed
from api_service.pagination import Listed, ListQuery, Window, item_key, list_newest_first
from contracts.api_keys import new_webhook_secret
from contracts.db.engine import utcnow
from contracts.db.models import (
    EXACT,
    Merchant,
    PayoutEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from contracts.db.sealed import keyring
from contracts.domain.statuses import EventType
from contracts.messages import PayoutStatusChanged
from contracts.outbox import outbox_row, write_outbox
from contracts.topology import DEFAULT_EXCHANGE
from contracts.waiting_retries import payout_in_bulk
from contracts.webhooks import (
    DeliveryStatus,
    Resolve,
    endpoint_destination_problem,
    resend_generation_headers,
    resend_routing_key,
)


class WebhookEndpointMissing(ApiError):
    status_code: ClassVar[int] = 409
    code: ClassVar[str] = "WEBHOOK_ENDPOINT_NOT_CONFIGURED"
    default_message: ClassVar[str] = "Set a webhook URL (PUT /webhook-endpoint) before resending"


@dataclass(frozen=True)
class DeliveryFilters:
    event_id: str | None = None
    payout_id: str | None = None
    status: DeliveryStatus | None = None


@dataclass(frozen=True)
class DeliveryPage:
    listed: Listed
    deliveries: list[WebhookDelivery]
    attempts: dict[str, list[WebhookAttempt]]


_DELIVERY_ORDER = (WebhookDelivery.created_at, WebhookDelivery.id)
_EVENT_ORDER = (PayoutEvent.created_at, PayoutEvent.id)


def delivery_cursor(merchant: Merchant) -> Callable[[Any], ListQuery]:
    return item_key(_DELIVERY_ORDER, WebhookDelivery.id, WebhookDelivery.merchant_id == merchant.id)


def event_cursor(merchant: Merchant) -> Callable[[Any], ListQuery]:
    return item_key(_EVENT_ORDER, PayoutEvent.id, PayoutEvent.merchant_id == merchant.id)


# A delivery shows at most its latest attempts (its attemptCount counts them all): resends and
# chaos duplicates add attempts without end, and a page of 100 deliveries must stay small.
ATTEMPTS_SHOWN = 25


async def attempts_of(
    session: AsyncSession, deliveries: Sequence[WebhookDelivery]
) -> dict[str, list[WebhookAttempt]]:
    """The latest ATTEMPTS_SHOWN attempts of each given delivery, in order, with one query.

    Attempt numbers run 1, 2, … up to the delivery's attempts: the latest are those above its
    count less ATTEMPTS_SHOWN, read through the (delivery_id, attempt_number) index."""
    by_delivery: dict[str, list[WebhookAttempt]] = {delivery.id: [] for delivery in deliveries}
    if not by_delivery:
        return by_delivery
    rows = await session.scalars(
        select(WebhookAttempt)
        .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
        .where(
            WebhookAttempt.delivery_id.in_(list(by_delivery)),
            WebhookAttempt.attempt_number > WebhookDelivery.attempts - ATTEMPTS_SHOWN,
        )
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt_number)
    )
    for attempt in rows:
        by_delivery[attempt.delivery_id].append(attempt)
    return by_delivery


async def list_deliveries(
    session: AsyncSession, merchant: Merchant, filters: DeliveryFilters, window: Window
) -> DeliveryPage:
    conditions: list[ColumnElement[bool]] = [WebhookDelivery.merchant_id == merchant.id]
    if filters.event_id:
        # The column compares as the table does (general_ci: `EVT_…` and `évt_…` found `evt_…`):
        # its index finds the row, the exact collation keeps only the id given.
        event_id = WebhookDelivery.event_id
        conditions += [event_id == filters.event_id, event_id.collate(EXACT) == filters.event_id]
    if filters.payout_id:
        conditions.append(WebhookDelivery.payout_id == filters.payout_id)
    if filters.status:
        conditions.append(WebhookDelivery.status == filters.status.value)
    listed = await list_newest_first(
        session, select(WebhookDelivery), conditions, _DELIVERY_ORDER, window
    )
    deliveries: list[WebhookDelivery] = listed.firsts()
    return DeliveryPage(listed, deliveries, await attempts_of(session, deliveries))


async def resend_delivery(
    session: AsyncSession, merchant: Merchant, delivery_id: str, *, request_id: str
) -> WebhookDelivery:
    """Queue the stored event again (same webhook-id; the service signs it afresh)."""
    delivery = await session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.merchant_id == merchant.id)
        .with_for_update()
    )
    if delivery is None:
        raise NotFound("Webhook delivery not found")
    # From the row, not the merchant this process cached with the API key (up to 2 s old): a
    # resend just after the URL was set through another API process was refused, and the 409
    # stored under its key replayed for a day.
    if not await session.scalar(select(Merchant.webhook_url).where(Merchant.id == merchant.id)):
        raise WebhookEndpointMissing
    recorded = await session.get(PayoutEvent, delivery.event_id)
    assert recorded is not None, "deliveries reference their event"
    in_bulk = await payout_in_bulk(session, delivery.payout_id)
    # Under the row lock: concurrent resends get distinct generations.
    delivery.generation += 1
    row = outbox_row(
        PayoutStatusChanged.model_validate_json(recorded.body),
        exchange=DEFAULT_EXCHANGE,
        routing_key=resend_routing_key(in_bulk=in_bulk),
        payout_id=delivery.payout_id,
        merchant_id=merchant.id,
        correlation_id=request_id,
        extra_headers=resend_generation_headers(delivery.generation),
        in_bulk=in_bulk,
    )
    await write_outbox(session, [row])
    delivery.status = DeliveryStatus.PENDING.value
    delivery.next_attempt_at = None
    delivery.updated_at = utcnow()
    await session.flush()
    return delivery


# Deliveries whose last attempt failed: retrying on the ladder, or parked after it.
RECOVERABLE_STATUSES = (DeliveryStatus.RETRYING.value, DeliveryStatus.PARKED.value)
MAX_RECOVERED = 1000


async def recover_deliveries(
    session: AsyncSession, merchant: Merchant, *, since: datetime, request_id: str
) -> list[WebhookDelivery]:
    """Resend every delivery of an event since `since` (naive UTC) that is retrying or parked,
    oldest first, at most MAX_RECOVERED: the merchant's endpoint was down and is back (as
    Svix's "recover"). Each is a `resend_delivery`."""
    delivery_ids = await session.scalars(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.merchant_id == merchant.id,
            WebhookDelivery.created_at >= since,
            WebhookDelivery.status.in_(RECOVERABLE_STATUSES),
        )
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        .limit(MAX_RECOVERED)
    )
    return [
        await resend_delivery(session, merchant, delivery_id, request_id=request_id)
        for delivery_id in list(delivery_ids)
    ]


async def list_events(
    session: AsyncSession,
    merchant: Merchant,
    *,
    payout_id: str | None,
    event_type: EventType | None,
    window: Window,
) -> Listed:
    conditions: list[ColumnElement[bool]] = [PayoutEvent.merchant_id == merchant.id]
    if payout_id:
        conditions.append(PayoutEvent.payout_id == payout_id)
    if event_type:
        conditions.append(PayoutEvent.type == event_type.value)
    return await list_newest_first(session, select(PayoutEvent), conditions, _EVENT_ORDER, window)


async def _locked(session: AsyncSession, merchant: Merchant) -> Merchant:
    """The merchant's row, locked, without its secrets: neither a URL's change nor a rotation
    opens them (one no key opens answered both 500, and a rotation is the merchant's way out)."""
    locked = await session.scalar(
        select(Merchant)
        .where(Merchant.id == merchant.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert locked is not None, "the authenticated merchant exists"
    return locked


async def update_endpoint(
    session: AsyncSession,
    merchant: Merchant,
    url: str | None,
    *,
    allow_private: bool,
    resolve: Resolve,
) -> Merchant:
    if url is not None:
        problem = await endpoint_destination_problem(
            url, allow_private=allow_private, resolve=resolve
        )
        if problem:
            raise ValidationFailed.on("url", problem)
    locked = await _locked(session, merchant)
    locked.webhook_url = url
    await session.flush()
    return locked


async def rotate_secret(
    session: AsyncSession, merchant: Merchant, *, grace: timedelta
) -> tuple[Merchant, str]:
    """A new secret; the current one keeps signing (alongside) until the grace period ends.
    Rotating again within the grace period retires the oldest secret at once."""
    await _locked(session, merchant)
    secret = new_webhook_secret()
    now = utcnow()
    # The current secret moved aside in SQL, as stored (sealed): this process need not open it.
    # Before the new one is set: MySQL assigns left to right, each assignment seeing those before
    # it. One sealed with a key no longer held is dropped: it signs nothing, and kept as the
    # previous secret, it failed every page that shows or signs with the secrets for the whole
    # grace period (the dashboard's reveal and timeline).
    stored = await session.scalar(
        select(type_coerce(Merchant.webhook_secret, String)).where(Merchant.id == merchant.id)
    )
    kept = Merchant.webhook_secret if stored is None or keyring().can_open(stored) else None
    await session.execute(
        update(Merchant)
        .where(Merchant.id == merchant.id)
        .ordered_values(
            (Merchant.previous_webhook_secret, kept),
            (Merchant.webhook_secret, secret),
            (Merchant.previous_secret_expires_at, None if kept is None else now + grace),
            (Merchant.secret_rotated_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    return await _locked(session, merchant), secret
