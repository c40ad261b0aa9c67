"""Delivering payout events to merchants: lease, call, record, in batches; and the decision of
what happens to each message next (done, retry after a wait, park, dead-letter).

The consumed message is the event: PayoutStatusChanged carries the payout as it was at that
change, exactly what `payout_events` records, so the body is built from it and never from a
fresh read. Messages are handled in batches (those arriving within a few milliseconds, up to the
prefetch), and no transaction or lock is held while an endpoint is called:

1. lease: one transaction reads the endpoints of the merchants not cached (one SELECT), creates
   the missing delivery rows and leases the rows neither delivered at the message's generation
   nor leased by a live attempt elsewhere (one statement), and reads which rows it holds;
2. call: each leased delivery is POSTed on its own, concurrently;
3. record: the attempts that finish within a few milliseconds of each other are recorded in one
   transaction, each delivery's new state only where its lease is still held.

Duplicates of a message (at-least-once) never send twice. A copy in the same batch is acked: the
copy asking for the highest generation carries the event. A copy that finds the delivery leased
elsewhere waits in a retry queue until the lease runs out, then finds it delivered (ack) or
leases it itself. A consumer that dies mid-attempt leaves a lease that expires, and RabbitMQ
redelivers its unacked message.

A merchant without a webhook URL gets no HTTP call: the delivery is PARKED at once with the
reason, and no message goes to the parking lot (it needs the merchant, not an operator). After
setting a URL the merchant can resend it.
"""

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.messages import PayoutStatusChanged
from contracts.webhooks import DeliveryStatus
from contracts.wire import dumps
from webhook_service.batching import MicroBatcher
from webhook_service.delivery_records import (
    Attempt,
    Delivery,
    DeliveryRequest,
    after_attempt,
    attempt_of,
    delivered,
    deliveries_of,
    lease_deliveries,
    new_lease_token,
    parked,
    record_attempts,
    retrying,
)
from webhook_service.endpoints import Endpoint, EndpointCache
from webhook_service.retry_ladder import RetryLadder, RetryStep, retry_after_seconds
from webhook_service.sender import AttemptResult, WebhookSender
from webhook_service.signing import webhook_headers

log = logging.getLogger("webhooks")

NO_ENDPOINT = "merchant has no webhook URL configured"
DELIVERED = "delivered"
ALREADY_DELIVERED = "already delivered"
DUPLICATE = "a copy of this message in the same batch carries the event"
LEASED_ELSEWHERE = "another attempt holds the delivery's lease"

# How long a batch gathers: a few milliseconds of latency buys one round trip for many messages.
BATCH_WINDOW_SECONDS = 0.005
# The HTTP attempt is bounded by the webhook timeout; the lease also covers recording it.
LEASE_MARGIN_SECONDS = 5


def lease_seconds_for(timeout_seconds: float) -> int:
    return math.ceil(timeout_seconds) + LEASE_MARGIN_SECONDS


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


@dataclass(frozen=True)
class Lease:
    """A delivery this consumer holds, and where to send it (None: the merchant has no URL)."""

    request: DeliveryRequest
    delivery: Delivery
    endpoint: Endpoint | None


@dataclass(frozen=True)
class Outcome:
    """What to record of a leased delivery, and what the message becomes once it is recorded."""

    request: DeliveryRequest
    delivery: Delivery  # the new state, still carrying the lease token it is recorded under
    attempt: Attempt | None  # None: no HTTP call was made
    decision: Decision


def already_delivered(delivery: Delivery, generation: int) -> bool:
    """Delivered, and (for a resend) by an attempt that honoured the message's generation."""
    return (
        delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_generation >= generation
    )


def carriers(requests: Sequence[DeliveryRequest]) -> dict[str, DeliveryRequest]:
    """Per event of a batch, the message that carries it: the one asking for the highest
    generation, whose attempt honours the others'."""
    chosen: dict[str, DeliveryRequest] = {}
    for request in requests:
        current = chosen.get(request.event.id)
        if current is None or request.generation > current.generation:
            chosen[request.event.id] = request
    return chosen


def signed_request(
    event: PayoutStatusChanged, endpoint: Endpoint, now: datetime
) -> tuple[bytes, dict[str, str]]:
    body = dumps(event.webhook_body())
    headers = webhook_headers(
        event_id=event.id,
        legacy_event=event.event,
        timestamp=int(now.replace(tzinfo=UTC).timestamp()),
        body=body,
        secrets=endpoint.secrets_at(now),
    )
    return body, headers


class EventDelivery:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        sender: WebhookSender,
        ladder: RetryLadder,
        lease_seconds: int,
        max_batch: int,
        window_seconds: float = BATCH_WINDOW_SECONDS,
        endpoints: EndpointCache | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.sender = sender
        self.ladder = ladder
        self.lease_seconds = lease_seconds
        self.endpoints = endpoints or EndpointCache()
        self.clock = clock
        self._leasing = MicroBatcher(self._lease, window_seconds=window_seconds, max_size=max_batch)
        self._recording = MicroBatcher(
            self._record, window_seconds=window_seconds, max_size=max_batch
        )

    async def deliver(self, request: DeliveryRequest) -> Decision:
        leased = await self._leasing.submit(request)
        if isinstance(leased, Decision):
            return leased
        return await self._recording.submit(await self._attempt(leased))

    async def aclose(self) -> None:
        await self._leasing.aclose()
        await self._recording.aclose()

    async def _lease(self, requests: Sequence[DeliveryRequest]) -> list[Lease | Decision]:
        carried = carriers(requests)
        token = new_lease_token()
        try:
            async with transaction(self.sessions) as session:
                merchant_ids = {request.event.merchant_id for request in carried.values()}
                endpoints = await self.endpoints.endpoints(session, merchant_ids)
                await lease_deliveries(
                    session,
                    list(carried.values()),
                    token=token,
                    lease_seconds=self.lease_seconds,
                    now=self.clock(),
                )
                found = await deliveries_of(session, list(carried))
        except SQLAlchemyError as exc:
            log.warning(
                "webhook batch of %d: database error, retrying later: %r", len(requests), exc
            )
            return [self._database_failed(request, exc) for request in requests]

        def lease_or_decision(request: DeliveryRequest) -> Lease | Decision:
            event_id = request.event.id
            if carried[event_id] is not request:
                return Decision(Disposition.DONE, DUPLICATE)
            delivery = found.get(event_id)
            if delivery is None:  # its row could not be created: the event is not recorded
                return Decision(Disposition.DEAD_LETTER, f"event {event_id} is not recorded")
            if delivery.lease_token == token:
                return Lease(request, delivery, endpoints.get(request.event.merchant_id))
            if already_delivered(delivery, request.generation):
                return Decision(Disposition.DONE, ALREADY_DELIVERED)
            return self._leased_elsewhere(request, delivery)

        return [lease_or_decision(request) for request in requests]

    async def _attempt(self, lease: Lease) -> Outcome:
        request, endpoint = lease.request, lease.endpoint
        if endpoint is None or not endpoint.url:
            log.info("webhook %s parked: %s", request.event.id, NO_ENDPOINT)
            state = parked(lease.delivery, self.clock(), reason=NO_ENDPOINT)
            return Outcome(request, state, None, Decision(Disposition.DONE, NO_ENDPOINT))

        started = self.clock()
        body, headers = signed_request(request.event, endpoint, started)
        result = await self.sender.post(endpoint.url, body, headers)
        attempted = after_attempt(lease.delivery, endpoint.url, result)
        log.info(
            "webhook %s attempt %d: %s in %d ms",
            request.event.id,
            attempted.attempts,
            result.status_code or result.error,
            result.latency_ms,
        )
        attempt = attempt_of(attempted, endpoint.url, result, attempted_at=started)
        return self._judged(request, attempted, attempt, result)

    def _judged(
        self, request: DeliveryRequest, attempted: Delivery, attempt: Attempt, result: AttemptResult
    ) -> Outcome:
        """The delivery's new state and the message's decision after an HTTP attempt."""
        now = self.clock()
        if result.delivered:
            decision = Decision(Disposition.DONE, DELIVERED)
            return Outcome(request, delivered(attempted, now), attempt, decision)
        retry_after = retry_after_seconds(result.status_code, result.retry_after, now=now)
        decision = self._failed(request.ladder_attempt, result.error or "failed", retry_after)
        if decision.step is None:
            return Outcome(request, parked(attempted, now), attempt, decision)
        return Outcome(
            request, retrying(attempted, now, decision.step.delay_seconds), attempt, decision
        )

    async def _record(self, outcomes: Sequence[Outcome]) -> list[Decision]:
        try:
            async with transaction(self.sessions) as session:
                held = await record_attempts(
                    session,
                    [outcome.delivery for outcome in outcomes],
                    [outcome.attempt for outcome in outcomes if outcome.attempt is not None],
                )
        except SQLAlchemyError as exc:
            log.warning("recording %d webhook attempts failed: %r", len(outcomes), exc)
            return [self._database_failed(outcome.request, exc) for outcome in outcomes]
        if held < len(outcomes):
            # A lease ran out before its attempt was recorded (the database was that slow): the
            # attempt row is kept, the delivery's state is left to the attempt that took over.
            log.warning("%d webhook lease(s) expired before recording", len(outcomes) - held)
        return [outcome.decision for outcome in outcomes]

    def _leased_elsewhere(self, request: DeliveryRequest, delivery: Delivery) -> Decision:
        """Look again once the other attempt's lease runs out (waiting at most the ladder's
        longest step). Not a failure of this message: it never parks it."""
        attempt = min(request.ladder_attempt, self.ladder.tiers)
        step = self.ladder.after_failure(attempt, retry_after=delivery.lease_seconds_left)
        return Decision(Disposition.RETRY, LEASED_ELSEWHERE, step)

    def _database_failed(self, request: DeliveryRequest, exc: SQLAlchemyError) -> Decision:
        """The database failed (not the endpoint): the message takes the ladder like any other
        failure, so an outage never spins it in a tight redelivery loop."""
        return self._failed(request.ladder_attempt, f"database unavailable: {type(exc).__name__}")

    def _failed(
        self, ladder_attempt: int, reason: str, retry_after: float | None = None
    ) -> Decision:
        step = self.ladder.after_failure(ladder_attempt, retry_after=retry_after)
        if step is None:
            return Decision(Disposition.PARK, reason)
        return Decision(Disposition.RETRY, reason, step)
