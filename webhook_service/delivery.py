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
leases it itself. A copy that finds the delivery parked is acked: every path that sends a parked
delivery again reopens it first. A consumer that dies mid-attempt leaves a lease that
expires, and RabbitMQ redelivers its unacked message.

A merchant without a webhook URL gets no HTTP call: the delivery is PARKED at once with the
reason, and no message goes to the parking lot (it needs the merchant, not an operator). After
setting a URL the merchant can resend it.

In test mode a merchant's sandbox webhook chaos changes some attempts (webhook_service.chaos
decides which and how): an injected failure makes no call and takes the retry ladder like any
failure; a stale timestamp or the previous secret signs an attempt; a hold (delay, out of order)
waits before the call, between the lease and the call, so no transaction or connection is held
meanwhile, under a lease taken longer by the hold's limit; a duplicate follows a 2xx attempt
under the same lease. Every attempt chaos changed is recorded with its kind.
"""

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from contracts.batching import BatchInterrupted, MicroBatcher
from contracts.clock import SANDBOX_TIME, MerchantTime
from contracts.db.engine import SessionFactory, naive_utc, transaction, utcnow
from contracts.db.models import WebhookDelivery
from contracts.db.outages import is_outage, is_row_lock_failure, is_statement_timeout
from contracts.messages import PayoutStatusChanged
from contracts.webhook_chaos import MAX_CHAOS_DELAY_SECONDS, ChaosKind, signing_for
from contracts.webhook_signing import webhook_headers
from contracts.webhooks import DeliveryStatus
from contracts.wire import dumps
from webhook_service.chaos import (
    HOLDS,
    INJECTED_FAILURE_ERROR,
    attempt_chaos,
    delay_seconds,
    extra_lease_seconds,
    sends_duplicate,
)
from webhook_service.delivery_records import (
    Attempt,
    Delivery,
    DeliveryRequest,
    after_attempt,
    after_duplicate,
    already_delivered,
    attempt_of,
    compile_batch_statements,
    delivered,
    deliveries_of,
    final_event_delivered,
    lease_deliveries,
    new_lease_token,
    parked,
    record_attempts,
    retrying,
)
from webhook_service.endpoints import Endpoint, EndpointCache, can_be_called
from webhook_service.in_flight import counted
from webhook_service.retry_ladder import RetryLadder, RetryStep, retry_after_seconds
from webhook_service.sender import AttemptResult, WebhookSender
from webhook_service.slow_endpoints import SlowEndpoints

log = logging.getLogger("webhooks")

NO_ENDPOINT = "merchant has no webhook URL configured"
SECRETS_NOT_OPENED = "merchant's webhook secrets sealed with a key this service does not hold"
DELIVERED = "delivered"
ALREADY_DELIVERED = "already delivered"
DUPLICATE = "a copy of this message in the same batch carries the event"
LEASED_ELSEWHERE = "another attempt holds the delivery's lease"
ENDPOINT_BUSY = "the merchant's slow endpoint has its share of calls in flight"
ALREADY_PARKED = "the delivery is parked: its ladder took this message already"
SUPERSEDED = "the delivery no longer waits for this retry (the clock advanced, or a resend)"
PARKED_AGAIN = "the retry ladder was exhausted"
MOVED_BY_HAND = (
    "moved out of the parking lot while its delivery is parked: "
    "`payouts webhooks replay-parked` sends it again"
)

# The HTTP attempt is bounded by the webhook timeout; the lease also covers recording it.
LEASE_MARGIN_SECONDS = 5
# Waits before writing again the attempts the database did not record. A row another
# transaction holds, or a statement the server timed out: twice, briefly (a cause that lasts
# would hold every other record). The database down, or refusing writes (a failover's read-only
# server): every 5 s for 5 minutes more, past the lease (a row keeps the token of a lease that
# ran out until another attempt leases it): an attempt the endpoint took is recorded once the
# database is back, not sent again unrecorded (failover review).
RECORD_RETRY_WAITS = (0.2, 1.0)
RECORD_OUTAGE_WAITS = (*RECORD_RETRY_WAITS, *[5.0] * 60)
# How often a payout.processing event held out of order asks whether the final event went out.
FINAL_EVENT_POLL_SECONDS = 1.0
INJECTED_FAILURE = AttemptResult(status_code=None, latency_ms=0, error=INJECTED_FAILURE_ERROR)


def lease_seconds_for(timeout_seconds: float) -> int:
    return math.ceil(timeout_seconds) + LEASE_MARGIN_SECONDS


@dataclass(frozen=True)
class RecordWaits:
    """The waits taken so far before reading back or writing unrecorded attempts again, counted
    by cause: the database (down, or refusing writes: RECORD_OUTAGE_WAITS), or the row and the
    statement (a row lock, a deadlock, a statement timeout: RECORD_RETRY_WAITS). Counted
    together, an outage used up the row lock's waits, and a row held as the database came back
    sent the whole batch again (diff review); by read and write, a read-only server's refusals
    got the short waits, and the attempt was sent again (late fixes review)."""

    database: int = 0
    row: int = 0

    def after(self, error: SQLAlchemyError) -> "tuple[float, RecordWaits] | None":
        """The wait before trying again after `error`, and the waits then taken; None when
        none is left (or `error` is a bug, not an outage)."""
        if not is_outage(error):
            return None
        if is_row_lock_failure(error) or is_statement_timeout(error):
            if self.row == len(RECORD_RETRY_WAITS):
                return None
            return RECORD_RETRY_WAITS[self.row], replace(self, row=self.row + 1)
        if self.database == len(RECORD_OUTAGE_WAITS):
            return None
        return RECORD_OUTAGE_WAITS[self.database], replace(self, database=self.database + 1)


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
    chaos: tuple[ChaosKind, ...] = ()  # what sandbox chaos did to the message's attempts
    due_at: datetime | None = None  # a retry: when it is due on the merchant's sandbox clock
    clock_offset: int | None = None  # a retry: the clock offset its wait is measured under
    # False: a retry that only waits (for another attempt's lease) and takes no step of the
    # ladder. Counted, the waits of a copy redelivered after a crash parked it at its first failure.
    failed: bool = True
    # Sent back to wait for a slot of its merchant's slow endpoint: the how-manieth time in a row.
    busy_waits: int = 0


# The delivery rows of these events, locked now or refused (LOCK_REFUSED); built once.
_HELD_ROWS = (
    select(WebhookDelivery.id)
    .where(WebhookDelivery.event_id.in_(bindparam("b_events", expanding=True)))
    .with_for_update(nowait=True)
)


class LeaseAlone:
    """The lease of a batch that failed: each of its requests is leased again alone, by its own
    handler (`EventDelivery.deliver`)."""


LEASE_ALONE = LeaseAlone()


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
    attempts: tuple[Attempt, ...]  # none: no attempt was made; two: a chaos duplicate followed
    decision: Decision

    @property
    def chaos(self) -> tuple[ChaosKind, ...]:
        return tuple(ChaosKind(attempt.chaos) for attempt in self.attempts if attempt.chaos)


def superseded(request: DeliveryRequest, delivery: Delivery) -> bool:
    """A waiting retry's copy that the delivery no longer waits for; or a message without a due
    time (a copy of the event's own, of a resend) once the delivery's ladder has started: its
    retries carry the event on (a resend made meanwhile leaves the delivery PENDING)."""
    retrying = delivery.status == DeliveryStatus.RETRYING
    if request.due_at is None:
        return retrying
    return not (retrying and delivery.next_attempt_at == request.due_at)


def carriers(requests: Sequence[DeliveryRequest]) -> dict[str, DeliveryRequest]:
    """Per event of a batch, the message that carries it: the one asking for the highest
    generation, whose attempt honours the others'; of one generation, the retry due last. A
    delivery's retries fall due ever later, so only that one can be the retry it still waits
    for: an earlier copy (redelivered because its consumer died between republishing the next
    retry and acking) is superseded, and carrying the event it would ack the live retry as its
    duplicate."""
    chosen: dict[str, DeliveryRequest] = {}
    for request in requests:
        current = chosen.get(request.event.id)
        if current is None or _precedence(request) > _precedence(current):
            chosen[request.event.id] = request
    return chosen


def _precedence(request: DeliveryRequest) -> tuple[int, datetime]:
    return request.generation, request.due_at or datetime.min


def recorded(written: Delivery, read: Delivery | None) -> bool:
    """Whether `read` (the row now) shows the state `written` was to record: its lease is no
    longer the one `written` was recorded under, and the attempt's state is there."""
    return (
        read is not None
        and read.lease_token != written.lease_token
        and (read.status, read.attempts, read.next_attempt_at, read.delivered_generation)
        == (written.status, written.attempts, written.next_attempt_at, written.delivered_generation)
    )


def signed_request(
    event: PayoutStatusChanged, endpoint: Endpoint, now: datetime, chaos: ChaosKind | None = None
) -> tuple[bytes, dict[str, str]]:
    body = dumps(event.webhook_body())
    timestamp, secrets = signing_for(
        chaos,
        timestamp=int(now.replace(tzinfo=UTC).timestamp()),
        secrets=endpoint.secrets_at(now),
        previous_secret=endpoint.previous_secret,
    )
    headers = webhook_headers(
        event_id=event.id,
        legacy_event=event.event,
        timestamp=timestamp,
        body=body,
        secrets=secrets,
    )
    return body, headers


def on_sandbox_clock(
    decision: Decision,
    *,
    due_at: datetime | None,
    clock_offset: int | None,
    offset_seconds: int,
    now: datetime,
) -> Decision:
    """The retry after a failed attempt, timed on the merchant's sandbox clock (its offset now:
    `offset_seconds`).

    A retry (`due_at`, waited under `clock_offset`) was made, in sandbox time, when it was due
    plus however late it is in real time: lateness the clock's jumps since (the offset's growth)
    account for is not lateness. The next one is due the ladder's wait after that and waits for
    what is left of it: nothing, when the clock already passed it, so that one advance runs the
    retries of its whole window one after another; such a retry keeps the offset from before
    the jump. (A retry late in real time, say after an outage, still waits its whole step.)
    Without an advance, this is the ladder."""
    assert decision.step is not None
    sandbox_now = now + timedelta(seconds=offset_seconds)
    attempted_at = sandbox_now
    if due_at is not None and clock_offset is not None:
        jumped = timedelta(seconds=max(offset_seconds - clock_offset, 0))
        attempted_at = min(sandbox_now, max(due_at, sandbox_now - jumped))
    next_due = attempted_at + timedelta(seconds=decision.step.delay_seconds)
    wait = max((next_due - sandbox_now).total_seconds(), 0.0)
    # Due already: the jump made it so, and the next copy must know it as the one before did.
    next_offset = clock_offset if wait == 0 and clock_offset is not None else offset_seconds
    step = replace(decision.step, delay_seconds=wait)
    return replace(decision, step=step, due_at=next_due, clock_offset=next_offset)


@dataclass(frozen=True)
class AttemptDue:
    """When an attempt was due on the merchant's sandbox clock, and the clock's offset then."""

    due_at: datetime | None
    clock_offset: int | None


def clock_caused_at(request: DeliveryRequest) -> datetime | None:
    """When, in sandbox time, the sandbox clock caused the event (a 0006 reversal 48 h into an
    80 h advance), if the message is the event's own (`original`). None for any other: a retry,
    a resend, a replay or a redrive (their ladders start now)."""
    event = request.event
    return naive_utc(event.sandbox_time) if event.sandbox_time and request.original else None


def attempt_due(
    request: DeliveryRequest,
    started: datetime,
    *,
    lease_offset: int,
    clock_caused: AttemptDue | None = None,
) -> AttemptDue:
    """A waiting retry: its own due time. The first attempt of an event the sandbox clock caused:
    when the event happened in sandbox time, on the clock as it reached that time
    (`clock_caused`; its retries ran from the advance's end, a ladder of real time away, and an
    advance across the whole ladder left it RETRYING). Any other: when its call started, on
    the clock read with its lease (an advance made during the call ran its retries from the
    advance's end as well)."""
    if request.due_at is not None:
        return AttemptDue(request.due_at, request.clock_offset)
    if clock_caused is not None:
        return clock_caused
    return AttemptDue(started + timedelta(seconds=lease_offset), lease_offset)


class EventDelivery:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        sender: WebhookSender,
        ladder: RetryLadder,
        lease_seconds: int,
        max_batch: int,
        lease_window_seconds: float,
        record_window_seconds: float,
        endpoints: EndpointCache | None = None,
        clock: Callable[[], datetime] = utcnow,
        time: MerchantTime = SANDBOX_TIME,
        out_of_order_limit_seconds: float = MAX_CHAOS_DELAY_SECONDS,
    ) -> None:
        """`clock`: real time; `time`: merchants' time, which retries are timed on (test mode's
        sandbox clocks, or production's real time)."""
        self.sessions = sessions
        self.sender = sender
        self.ladder = ladder
        self.lease_seconds = lease_seconds
        self.endpoints = endpoints or EndpointCache()
        self.clock = clock
        self.time = time
        self.out_of_order_limit_seconds = out_of_order_limit_seconds
        self._max_batch = max_batch
        # Chaos holds occupy prefetch slots: at most half of them, so that one merchant's
        # chaos never stalls the other merchants' webhooks (nor the final events that
        # out-of-order holds wait for); and one merchant at most a quarter of those, so that
        # one merchant's held payroll never takes another merchant's chaos away. Beyond that,
        # an attempt is sent without its hold.
        self.max_holds = max(1, max_batch // 2)
        self.max_holds_per_merchant = max(1, self.max_holds // 4)
        self._holds: Counter[str] = Counter()  # per merchant
        self.slow_endpoints = SlowEndpoints(max_batch, sender.timeout_seconds)
        self._leasing = MicroBatcher(
            self._lease, window_seconds=lease_window_seconds, max_size=max_batch
        )
        self._recording = MicroBatcher(
            self._record, window_seconds=record_window_seconds, max_size=max_batch
        )

    async def prepare(self) -> None:
        """Compile the batch statements of every batch size up to the largest batch, before any
        message arrives, once a first connection has told the dialect the server's version.
        When the database does not answer (after the pool's connect timeout), each is compiled
        when a batch of its size first needs it."""
        try:
            async with self.sessions() as session:
                dialect = (await session.connection()).dialect
        except DBAPIError as exc:
            log.warning("database unavailable: batch statements are compiled when used: %r", exc)
            return
        compile_batch_statements(dialect, self._max_batch)

    async def deliver(self, request: DeliveryRequest) -> Decision:
        merchant_id = request.event.merchant_id
        if not self._may_have_parked(request) and not self.slow_endpoints.admits(merchant_id):
            return self._waits_for_a_slot(request)
        with self.slow_endpoints.in_flight(merchant_id):
            try:
                leased = await self._leasing.submit(request)
            except BatchInterrupted:  # failed as any batch: leased again alone
                leased = LEASE_ALONE
            if isinstance(leased, LeaseAlone):
                leased = await self._lease_alone(request)
            if isinstance(leased, Decision):
                return leased
            return await self._recording.submit(await self._attempt(leased))

    async def aclose(self) -> None:
        await self._leasing.aclose()
        await self._recording.aclose()

    async def _lease_alone(self, request: DeliveryRequest) -> Lease | Decision:
        """Without waiting for its row: a row another transaction holds (the likely failure of
        its batch) fails at once, and waits as in an outage. Waiting 5 s, each held row's
        lease took one of the service's 4 connections, and a dozen held rows took them all,
        the other webhooks' leases and records waiting behind (diff review)."""
        [leased] = await self._lease([request], nowait=True)
        assert not isinstance(leased, LeaseAlone), "a batch of one is not split"
        return leased

    async def _lease(
        self, requests: Sequence[DeliveryRequest], *, nowait: bool = False
    ) -> list[Lease | Decision | LeaseAlone]:
        """Leased, or what to do instead. A batch that failed (one delivery row another
        transaction holds past the lock wait, a deadlock) has each request leased again alone,
        in its own handler: the one leasing worker waited out the held row, then every request
        of the batch waited for the database as if it were down, and came back to wait again
        with it (batch isolation review)."""
        carried = carriers(requests)
        token = new_lease_token()
        try:
            async with transaction(self.sessions) as session:
                merchant_ids = {request.event.merchant_id for request in carried.values()}
                retried = {
                    request.event.merchant_id
                    for request in carried.values()
                    if request.ladder_attempt > 1
                }
                endpoints = await self.endpoints.endpoints(session, merchant_ids, afresh=retried)
                # Plus a hold's limit, or a duplicate's second call: nothing without chaos.
                lease_seconds = {
                    event_id: self.lease_seconds
                    + self._chaos_lease_seconds(request, endpoints.get(request.event.merchant_id))
                    for event_id, request in carried.items()
                }
                if nowait:
                    await session.execute(_HELD_ROWS, {"b_events": list(carried)})
                await lease_deliveries(
                    session,
                    list(carried.values()),
                    token=token,
                    lease_seconds=lease_seconds,
                    now=self.clock(),
                )
                found = await deliveries_of(session, list(carried), self.time)
        except SQLAlchemyError as exc:
            if len(requests) > 1:
                log.warning(
                    "webhook batch of %d: database error, leasing each alone: %r",
                    len(requests),
                    exc,
                )
                return [LEASE_ALONE] * len(requests)
            log.warning("webhook delivery: database error, retrying later: %r", exc)
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
            if self._parked_by(request, delivery):
                return Decision(Disposition.PARK, delivery.last_error or PARKED_AGAIN)
            if delivery.status == DeliveryStatus.PARKED and request.from_parking_lot:
                return Decision(Disposition.PARK, MOVED_BY_HAND)
            if superseded(request, delivery):
                return Decision(Disposition.DONE, SUPERSEDED)
            if delivery.status == DeliveryStatus.PARKED:
                return Decision(Disposition.DONE, ALREADY_PARKED)
            return self._leased_elsewhere(request, delivery)

        return [lease_or_decision(request) for request in requests]

    def _may_have_parked(self, request: DeliveryRequest) -> bool:
        """The ladder's last attempt delivered again: maybe the copy that parked its delivery
        (_parked_by), which no slow endpoint may send back to wait. Sent back, it was
        republished as a new message, no longer `redelivered`, and acked as already parked when
        it came back: the delivery stayed PARKED with nothing in the parking lot."""
        return request.redelivered and request.ladder_attempt > self.ladder.tiers

    def _parked_by(self, request: DeliveryRequest, delivery: Delivery) -> bool:
        """The delivery is parked, and the message is the ladder's last attempt delivered again:
        the copy that parked it, redelivered because its consumer died between recording PARKED
        and publishing to the parking lot. It goes there now (acked as superseded, it left the
        delivery parked with nothing in the lot for `payouts webhooks replay-parked` to move).
        Not redelivered, it is the other copy of that last retry (an advance sent one, and the
        retry's waiting message came back from its TTL queue): a second message in the lot was a
        second ladder for the delivery when the lot was replayed."""
        return delivery.status == DeliveryStatus.PARKED and self._may_have_parked(request)

    def _chaos_lease_seconds(self, request: DeliveryRequest, endpoint: Endpoint | None) -> int:
        if endpoint is None or not endpoint.chaos.active:
            return 0
        return extra_lease_seconds(
            endpoint.chaos,
            request.event.id,
            request.event.type,
            timeout_seconds=self.sender.timeout_seconds,
            out_of_order_limit_seconds=self.out_of_order_limit_seconds,
        )

    async def _attempt(self, lease: Lease) -> Outcome:
        endpoint = lease.endpoint
        if not can_be_called(endpoint):
            return self._without_endpoint(lease, endpoint)
        chaos = self._chaos_of(lease, endpoint, self.clock())
        if await self._hold(chaos, lease.request.event, endpoint):
            # Up to a minute later: the merchant may have changed its URL, or retired a leaked
            # secret at once, meanwhile (a held attempt was sent signed with it).
            endpoint = await self._endpoint_now(lease.request.event.merchant_id, endpoint)
            if not can_be_called(endpoint):
                return self._without_endpoint(lease, endpoint)
        return await self._attempt_at(lease, endpoint, chaos)

    async def _attempt_at(
        self, lease: Lease, endpoint: Endpoint, chaos: ChaosKind | None
    ) -> Outcome:
        request, url = lease.request, endpoint.url
        assert url, "an endpoint without a URL gets no call"
        if chaos is ChaosKind.INJECTED_FAILURE:
            started, result = self.clock(), INJECTED_FAILURE
        else:
            started = self.clock()
            result = await self._send(request.event, endpoint, started, chaos)
            self.slow_endpoints.answered(request.event.merchant_id, result.latency_ms / 1000)
        attempted = after_attempt(lease.delivery, url, result)
        # A delivered attempt is the common case (and in webhook_attempts, as every attempt is):
        # debug, where one log line per webhook cost about a twentieth of the service's CPU.
        log.log(
            logging.DEBUG if result.delivered else logging.INFO,
            "webhook %s attempt %d: %s in %d ms%s",
            request.event.id,
            attempted.attempts,
            result.status_code or result.error,
            result.latency_ms,
            f" (sandbox chaos: {chaos})" if chaos else "",
        )
        attempt = attempt_of(attempted, url, result, attempted_at=started, chaos=chaos)
        if not result.delivered:
            offset, due = await self._clock_after_failure(lease, started)
            attempted = replace(attempted, sandbox_offset_seconds=offset)
            return self._failed_attempt(request, attempted, attempt, result, due)
        decision = Decision(Disposition.DONE, DELIVERED)
        outcome = Outcome(request, delivered(attempted, self.clock()), (attempt,), decision)
        if sends_duplicate(endpoint.chaos, request.event.id, generation=lease.delivery.generation):
            outcome = await self._duplicate(outcome, endpoint)
        return outcome

    async def _clock_after_failure(self, lease: Lease, started: datetime) -> tuple[int, AttemptDue]:
        """The merchant's clock offset after a failed call, which times its retry, and when the
        attempt was due (`attempt_due`). The offset now: an advance made while the call was
        under way is a jump of the clock (the offset read with the lease is from before it, and
        timed the next retry a whole step of real time away instead of within the advance's
        window). A clock-caused event's offset as the clock reached its time: a step applied
        late in real time (the processor was down) is late, the clock did not jump."""
        request, leased = lease.request, lease.delivery
        merchant_id = request.event.merchant_id
        caused_at = clock_caused_at(request)
        clock = [self.time.offset_of(merchant_id)]
        if caused_at is not None:
            clock.append(self.time.offset_as_reached(merchant_id, caused_at))
        try:
            async with self.sessions() as session:
                offset, *reached = (await session.execute(select(*clock))).one()
        except SQLAlchemyError as exc:  # the ladder as if the clock stood still
            log.warning("webhook %s: reading the clock failed: %r", request.event.id, exc)
            offset, reached = leased.sandbox_offset_seconds, []
        caused = AttemptDue(caused_at, int(reached[0])) if reached else None
        due = attempt_due(
            request, started, lease_offset=leased.sandbox_offset_seconds, clock_caused=caused
        )
        return int(offset), due

    async def _send(
        self,
        event: PayoutStatusChanged,
        endpoint: Endpoint,
        now: datetime,
        chaos: ChaosKind | None = None,
    ) -> AttemptResult:
        assert endpoint.url, "an endpoint without a URL gets no call"
        body, headers = signed_request(event, endpoint, now, chaos)
        return await self.sender.post(endpoint.url, body, headers)

    def _chaos_of(self, lease: Lease, endpoint: Endpoint, now: datetime) -> ChaosKind | None:
        """What sandbox chaos does to this attempt (nothing when the merchant set none)."""
        if not endpoint.chaos.active:
            return None
        event = lease.request.event
        chaos = attempt_chaos(
            endpoint.chaos,
            event.id,
            event.type,
            attempts_made=lease.delivery.attempts,
            generation=lease.delivery.generation,
            has_retired_secret=endpoint.retired_secret(now) is not None,
        )
        if chaos in HOLDS and not self._may_hold(event.merchant_id):
            log.warning("webhook %s sent without its %s hold: too many held", event.id, chaos)
            return None
        return chaos

    def _may_hold(self, merchant_id: str) -> bool:
        return (
            self._holds.total() < self.max_holds
            and self._holds[merchant_id] < self.max_holds_per_merchant
        )

    def _without_endpoint(self, lease: Lease, endpoint: Endpoint | None) -> Outcome:
        """Parked, waiting for a resend: no URL, or secrets sealed with a key this process does
        not hold (its error, naming the key, is the delivery's last error)."""
        unopened = endpoint.unopened if endpoint is not None else None
        reason = NO_ENDPOINT if unopened is None else SECRETS_NOT_OPENED
        log.info("webhook %s parked: %s", lease.request.event.id, unopened or reason)
        state = parked(lease.delivery, self.clock(), reason=unopened or reason)
        return Outcome(lease.request, state, (), Decision(Disposition.DONE, reason))

    async def _endpoint_now(self, merchant_id: str, before: Endpoint) -> Endpoint | None:
        """The merchant's endpoint as the database has it now, whatever the cache holds (an
        entry filled by the lease, or by another event's delivery, predates the hold); `before`
        when the database does not answer."""
        try:
            async with self.sessions() as session:
                read = await self.endpoints.endpoints(session, [merchant_id], afresh=[merchant_id])
                return read.get(merchant_id)
        except SQLAlchemyError as exc:
            log.warning("webhook endpoint of %s not read again: %r", merchant_id, exc)
            return before

    async def _hold(
        self, chaos: ChaosKind | None, event: PayoutStatusChanged, endpoint: Endpoint
    ) -> bool:
        """Wait before a held attempt (True when it was one). The lease was taken long enough
        for the longest hold, and no transaction, lock or connection is held while waiting."""
        if chaos not in HOLDS:
            return False
        with counted(self._holds, event.merchant_id):
            if chaos is ChaosKind.DELAYED:
                await asyncio.sleep(delay_seconds(endpoint.chaos))
            else:
                await self._until_final_event_delivered(event.id)
        return True

    async def _until_final_event_delivered(self, event_id: str) -> None:
        """Hold a payout.processing event until its payout's final event was delivered, or
        `out_of_order_limit_seconds` have passed (a payout may never end, or end much later).

        The message waits here, in the consumer, rather than in a retry queue: a retry would
        climb the ladder (with injected failures it could park the delivery), and the retry
        tiers' delays are the ladder's, not "until the final event". Whether the final event
        went out only the database knows (another replica may have sent it), so the hold asks
        it once a second: one indexed read, in a transaction of its own, nothing held between
        two reads. Bounded by the limit and by the number of holds (max_holds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.out_of_order_limit_seconds
        while not await self._final_event_delivered(event_id):
            left = deadline - loop.time()
            if left <= 0:
                log.info("webhook %s: no final event after the out-of-order hold", event_id)
                return
            await asyncio.sleep(min(FINAL_EVENT_POLL_SECONDS, left))

    async def _final_event_delivered(self, event_id: str) -> bool:
        try:
            async with self.sessions() as session:
                return await final_event_delivered(session, event_id)
        except SQLAlchemyError as exc:  # the hold goes on, bounded as ever
            log.warning("webhook %s: reading the final event failed: %r", event_id, exc)
            return False

    async def _duplicate(self, outcome: Outcome, endpoint: Endpoint) -> Outcome:
        """Send the delivered event once more (same webhook-id, fresh signature), as sandbox
        chaos asks: recorded as one more attempt, whose answer changes nothing."""
        assert endpoint.url
        event = outcome.request.event
        started = self.clock()
        result = await self._send(event, endpoint, started)
        duplicated = after_duplicate(outcome.delivery)
        log.info(
            "webhook %s attempt %d: %s in %d ms (sandbox chaos: duplicate)",
            event.id,
            duplicated.attempts,
            result.status_code or result.error,
            result.latency_ms,
        )
        attempt = attempt_of(
            duplicated, endpoint.url, result, attempted_at=started, chaos=ChaosKind.DUPLICATE
        )
        return replace(outcome, delivery=duplicated, attempts=(*outcome.attempts, attempt))

    def _failed_attempt(
        self,
        request: DeliveryRequest,
        attempted: Delivery,
        attempt: Attempt,
        result: AttemptResult,
        due: AttemptDue,
    ) -> Outcome:
        """The delivery's new state and the message's decision after a failed HTTP attempt."""
        now = self.clock()
        retry_after = retry_after_seconds(result.status_code, result.retry_after, now=now)
        decision = self._failed(request.ladder_attempt, result.error or "failed", retry_after)
        if decision.step is None:
            return Outcome(request, parked(attempted, now), (attempt,), decision)
        decision = on_sandbox_clock(
            decision,
            due_at=due.due_at,
            clock_offset=due.clock_offset,
            offset_seconds=attempted.sandbox_offset_seconds,
            now=now,
        )
        assert decision.due_at is not None
        state = retrying(attempted, now, due_at=decision.due_at, retry_count=request.ladder_attempt)
        return Outcome(request, state, (attempt,), decision)

    async def _record(self, outcomes: Sequence[Outcome]) -> list[Decision]:
        decisions = await self._written(outcomes)
        # The chaos was done on the wire, recorded or not.
        return [
            replace(decision, chaos=outcome.chaos)
            for decision, outcome in zip(decisions, outcomes, strict=True)
        ]

    async def _written(
        self,
        outcomes: Sequence[Outcome],
        waited: RecordWaits = RecordWaits(),
        *,
        alone: bool = False,
    ) -> list[Decision]:
        try:
            async with transaction(self.sessions) as session:
                if alone:
                    event_ids = [outcome.request.event.id for outcome in outcomes]
                    await session.execute(_HELD_ROWS, {"b_events": event_ids})
                held = await record_attempts(
                    session,
                    [outcome.delivery for outcome in outcomes],
                    [attempt for outcome in outcomes for attempt in outcome.attempts],
                )
        except SQLAlchemyError as exc:
            log.warning("recording %d webhook attempts failed: %r", len(outcomes), exc)
            return await self._after_failed_record(outcomes, exc, waited, alone=alone)
        if held < len(outcomes):
            # A lease ran out before its attempt was recorded (the database was that slow): the
            # attempt row is kept, the delivery's state is left to the attempt that took over.
            log.warning("%d webhook lease(s) expired before recording", len(outcomes) - held)
        return [outcome.decision for outcome in outcomes]

    async def _after_failed_record(
        self,
        outcomes: Sequence[Outcome],
        exc: SQLAlchemyError,
        waited: RecordWaits,
        *,
        alone: bool,
    ) -> list[Decision]:
        """A record that failed may have committed all the same (the connection was lost after
        the server committed), so the deliveries are read back. An outcome the database shows
        recorded keeps its decision: a retry must carry the new due time, the only one its
        delivery now waits for (with the old one it would come back superseded, and the
        delivery would wait for a retry no message carries). Those whose row still holds their
        lease were not written (a record clears the lease it is written under): they are written
        again after a wait of `RecordWaits` (an attempt the endpoint took, unrecorded, was sent
        to it again). A read that fails too is made again after one. The others, and those
        once the waits are used up, take the ladder as after any database failure: a row that
        changed hands may hold the attempts already, and writing them again would record one
        call twice. A batch that a row lock failed is written again outcome by outcome
        (`_written_alone`)."""
        try:
            async with self.sessions() as session:
                event_ids = [outcome.request.event.id for outcome in outcomes]
                found = await deliveries_of(session, event_ids, self.time)
        except SQLAlchemyError as read_failure:
            log.warning(
                "reading back %d webhook deliveries failed: %r", len(outcomes), read_failure
            )
            read_again = waited.after(read_failure)
            if read_again is None:
                return [self._database_failed(outcome.request, exc) for outcome in outcomes]
            wait, waited = read_again
            await asyncio.sleep(wait)
            return await self._after_failed_record(outcomes, exc, waited, alone=alone)
        decisions = [outcome.decision for outcome in outcomes]
        unwritten = []
        for index, outcome in enumerate(outcomes):
            row = found.get(outcome.request.event.id)
            if recorded(outcome.delivery, row):
                continue
            if row is not None and row.lease_token == outcome.delivery.lease_token:
                unwritten.append(index)
            else:
                decisions[index] = self._database_failed(outcome.request, exc)
        if not unwritten:
            return decisions
        write_again = waited.after(exc)
        if write_again is not None:
            wait, waited = write_again
            await asyncio.sleep(wait)
            to_write = [outcomes[i] for i in unwritten]
            if alone or is_row_lock_failure(exc):
                again = await self._written_alone(to_write, waited)
            else:
                again = await self._written(to_write, waited)
        else:
            again = [self._database_failed(outcomes[i].request, exc) for i in unwritten]
        for index, decision in zip(unwritten, again, strict=True):
            decisions[index] = decision
        return decisions

    async def _written_alone(
        self, outcomes: Sequence[Outcome], waited: RecordWaits
    ) -> list[Decision]:
        """Each outcome in a transaction of its own, refused at once if another transaction
        holds its row: one delivery row held after its lease (a stuck session) failed the whole
        recording batch again and again, then every attempt of the batch took the ladder and
        was sent again (batch isolation, left open; now split as the lease is)."""
        written = await asyncio.gather(
            *(self._written([outcome], waited, alone=True) for outcome in outcomes)
        )
        return [decision for decisions in written for decision in decisions]

    def _leased_elsewhere(self, request: DeliveryRequest, delivery: Delivery) -> Decision:
        """Look again once the other attempt's lease runs out, or after the ladder's first
        step if sooner (ladder.look_again)."""
        step = self.ladder.look_again(delivery.lease_seconds_left or 0.0)
        return self._waits(request, LEASED_ELSEWHERE, step)

    def _waits_for_a_slot(self, request: DeliveryRequest) -> Decision:
        """Look again once the merchant's slow endpoint may have a slot free
        (ladder.wait_for_a_slot), counting the waits in a row."""
        step = self.ladder.wait_for_a_slot(request.busy_waits)
        return self._waits(request, ENDPOINT_BUSY, step, busy_waits=request.busy_waits + 1)

    def _waits(
        self, request: DeliveryRequest, reason: str, step: RetryStep, *, busy_waits: int = 0
    ) -> Decision:
        """The message is looked at again after `step`, no attempt made. Not a failure of it: it
        keeps its place on the ladder, and its delivery still waits for the retry it is."""
        return Decision(
            Disposition.RETRY,
            reason,
            step,
            due_at=request.due_at,
            clock_offset=request.clock_offset,
            failed=False,
            busy_waits=busy_waits,
        )

    def _database_failed(self, request: DeliveryRequest, exc: SQLAlchemyError) -> Decision:
        """The database failed (not the endpoint). An outage: the message waits the ladder's
        first step and is looked at again, taking no step of it (each batch's failure in an
        outage as long as the ladder took a step, and parked webhooks never sent, with no
        delivery row to show it). Any other failure takes the ladder, like an endpoint's, so
        that it never spins in a tight redelivery loop."""
        reason = f"database unavailable: {type(exc).__name__}"
        if is_outage(exc):
            return self._waits(request, reason, self.ladder.look_again(self.ladder.delays[0]))
        decision = self._failed(request.ladder_attempt, reason)
        # The delivery still waits for the retry the message is.
        return replace(decision, due_at=request.due_at, clock_offset=request.clock_offset)

    def _failed(
        self, ladder_attempt: int, reason: str, retry_after: float | None = None
    ) -> Decision:
        step = self.ladder.after_failure(ladder_attempt, retry_after=retry_after)
        if step is None:
            return Decision(Disposition.PARK, reason)
        return Decision(Disposition.RETRY, reason, step)
