"""Delivering one payout event to its merchant: one HTTP attempt, recorded, and the decision of
what happens to the message next (done, retry after a wait, park, dead-letter).

The body is the event as recorded in `payout_events` (the payout as it was at that change),
never a fresh read of the payout; the message only names the event. The delivery row is locked
for the attempt, so duplicates of a message (at-least-once delivery) never send twice: the second
copy waits for the lock and then finds the delivery DELIVERED.

A merchant without a webhook URL gets no HTTP call: the delivery is PARKED at once with the
reason, and no message goes to the parking lot (it needs the merchant, not an operator). After
setting a URL the merchant can resend it.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Merchant, PayoutEvent, WebhookDelivery
from contracts.messages import PayoutStatusChanged
from contracts.webhooks import DeliveryStatus
from contracts.wire import dumps
from webhook_service.delivery_records import (
    ensure_delivery,
    lock_delivery,
    mark_delivered,
    mark_parked,
    mark_retrying,
    record_attempt,
)
from webhook_service.retry_ladder import RetryLadder, RetryStep, retry_after_seconds
from webhook_service.sender import AttemptResult, WebhookSender
from webhook_service.signing import active_secrets, webhook_headers

log = logging.getLogger("webhooks")

NO_ENDPOINT = "merchant has no webhook URL configured"
DELIVERED = "delivered"
ALREADY_DELIVERED = "already delivered"


class Disposition(StrEnum):
    DONE = "done"  # delivered, already delivered, or nothing to send: ack
    RETRY = "retry"  # wait in a retry queue, then attempt again
    PARK = "park"  # the ladder is exhausted: to the parking lot
    DEAD_LETTER = "dead-letter"  # the message names no recorded event


@dataclass(frozen=True)
class Decision:
    disposition: Disposition
    reason: str = ""
    step: RetryStep | None = None


def webhook_body(recorded: PayoutEvent) -> tuple[PayoutStatusChanged, bytes]:
    event = PayoutStatusChanged.model_validate_json(recorded.body)
    return event, dumps(event.webhook_body())


def already_delivered(delivery: WebhookDelivery, generation: int) -> bool:
    """Delivered, and (for a resend) by an attempt that honoured the message's generation."""
    return (
        delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_generation >= generation
    )


@dataclass
class EventDelivery:
    sessions: SessionFactory
    sender: WebhookSender
    ladder: RetryLadder
    clock: Callable[[], datetime] = field(default=utcnow)

    async def deliver(self, event_id: str, *, ladder_attempt: int, generation: int) -> Decision:
        """`ladder_attempt`: this message's attempt number on the retry ladder (1-based);
        `generation`: the resend it carries out (0 for the first delivery)."""
        try:
            return await self._deliver(event_id, ladder_attempt, generation)
        except SQLAlchemyError as exc:
            # The database failed (not the endpoint): the attempt takes the ladder like any
            # other failure, so an outage never spins a message in a tight redelivery loop.
            log.warning("webhook %s: database error, retrying later: %r", event_id, exc)
            return self._failed(ladder_attempt, f"database unavailable: {type(exc).__name__}")

    async def _deliver(self, event_id: str, ladder_attempt: int, generation: int) -> Decision:
        async with transaction(self.sessions) as session:
            recorded = await session.get(PayoutEvent, event_id)
            if recorded is None:
                return Decision(Disposition.DEAD_LETTER, f"event {event_id} is not recorded")
            # Its own short transaction: creating the row must not hold a lock while we send.
            await ensure_delivery(session, recorded, self.clock())

        async with transaction(self.sessions) as session:
            delivery = await lock_delivery(session, event_id)
            if already_delivered(delivery, generation):
                return Decision(Disposition.DONE, ALREADY_DELIVERED)
            merchant = await session.get(Merchant, delivery.merchant_id)
            assert merchant is not None, "deliveries reference their merchant"
            if not merchant.webhook_url:
                mark_parked(delivery, self.clock(), reason=NO_ENDPOINT)
                log.info("webhook %s parked: %s", event_id, NO_ENDPOINT)
                return Decision(Disposition.DONE, NO_ENDPOINT)

            started = self.clock()
            result = await self._attempt(merchant, merchant.webhook_url, recorded, started)
            finished = self.clock()
            await record_attempt(
                session, delivery, url=merchant.webhook_url, result=result, attempted_at=started
            )
            log.info(
                "webhook %s attempt %d: %s in %d ms",
                event_id,
                delivery.attempts,
                result.status_code or result.error,
                result.latency_ms,
            )
            if result.delivered:
                mark_delivered(delivery, finished)
                return Decision(Disposition.DONE, DELIVERED)
            retry_after = retry_after_seconds(result.status_code, result.retry_after, now=finished)
            decision = self._failed(ladder_attempt, result.error or "failed", retry_after)
            if decision.step is None:
                mark_parked(delivery, finished)
            else:
                mark_retrying(delivery, finished, decision.step.delay_seconds)
            return decision

    async def _attempt(
        self, merchant: Merchant, url: str, recorded: PayoutEvent, now: datetime
    ) -> AttemptResult:
        event, body = webhook_body(recorded)
        headers = webhook_headers(
            event_id=event.id,
            legacy_event=event.event,
            timestamp=int(now.replace(tzinfo=UTC).timestamp()),
            body=body,
            secrets=active_secrets(
                merchant.webhook_secret,
                merchant.previous_webhook_secret,
                merchant.previous_secret_expires_at,
                now,
            ),
        )
        return await self.sender.post(url, body, headers)

    def _failed(
        self, ladder_attempt: int, reason: str, retry_after: float | None = None
    ) -> Decision:
        step = self.ladder.after_failure(ladder_attempt, retry_after=retry_after)
        if step is None:
            return Decision(Disposition.PARK, reason)
        return Decision(Disposition.RETRY, reason, step)
