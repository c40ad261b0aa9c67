"""Webhook retries on a merchant's sandbox clock, attempt by attempt (EventDelivery driven by
hand, against the real database and a real local endpoint that always answers 500): an advance
across the ladder parks the delivery before the call answers, whenever the attempts began; the
copies an advance sends and the waiting messages they overtake."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from cli.merchants import NewMerchant
from contracts.clock import SANDBOX_TIME, sandbox_now_of
from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    plus_seconds,
    transaction,
    utcnow,
)
from contracts.db.models import Merchant, OutboxMessage, PayoutEvent, SandboxClockAdvance
from contracts.dead_letters import redrive
from contracts.messages import PayoutStatusChanged
from contracts.redelivery import retry_headers
from contracts.settings import Settings
from contracts.topology import (
    DEFAULT_EXCHANGE,
    RETRY_COUNT_HEADER,
    RETRY_RETURN_EXCHANGE,
    WEBHOOK_PARKING_LOT,
)
from contracts.webhooks import retry_due_headers
from processor_service.stalled_deliveries import resend_stalled_deliveries
from processor_service.stalled_retries import resend_stalled_retries
from tests.conftest import MerchantFactory, in_process_api
from tests.support.amqp import RabbitClient
from tests.support.api_helpers import API, auth
from tests.support.polling import eventually
from tests.support.webhook_flow import (
    QUEUE,
    created_event,
    delivery_of,
    event_id_of,
    event_id_of_body,
    first_request,
    messages_of,
    own_message,
    quick_webhook_settings,
    resend,
    resent_copies,
    running_webhook_service,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.app import waiting_headers
from webhook_service.delivery import SUPERSEDED, Decision, Disposition, EventDelivery
from webhook_service.delivery_records import DeliveryRequest, lease_deliveries, reopen_parked
from webhook_service.parking_lot import replay_parked
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

HOUR = 3600
SHORT_LADDER = (5, 300, 1800)  # three tiers: four attempts
README_LADDER = (5, 300, 1800, 7200, 18000, 36000, 36000)  # about 27.6 h in all


@pytest.fixture(scope="module")
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API not waiting for each advance to settle: no processor runs here to submit the
    payouts, and every advance waited the whole 10 s (130 s of each CI run). Nor remembering a
    merchant: a test sets its webhook URL in the database, where the API's 2-second copy of it
    had expired during that wait."""
    unsettled = settings.model_copy(
        update={"sandbox_clock_wait_seconds": 0.0, "api_key_cache_seconds": 0.0}
    )
    async with in_process_api(unsettled) as client:
        yield client


@asynccontextmanager
async def event_delivery(
    sessions: SessionFactory, ladder: tuple[int, ...]
) -> AsyncIterator[EventDelivery]:
    sender = WebhookSender(timeout_seconds=10, allow_private_urls=True)
    delivery = EventDelivery(
        sessions=sessions,
        sender=sender,
        ladder=RetryLadder.of(ladder),
        lease_seconds=20,
        max_batch=8,
        lease_window_seconds=0.005,
        record_window_seconds=0.005,
    )
    try:
        yield delivery
    finally:
        await delivery.aclose()
        await sender.aclose()


async def along_the_ladder(
    delivery: EventDelivery, request: DeliveryRequest, decision: Decision
) -> tuple[Decision, list[float]]:
    """As the webhook service goes on: each retry due at once is attempted at once; the last
    decision, and every wait."""
    waits = []
    while decision.disposition is Disposition.RETRY:
        assert decision.step is not None
        waits.append(decision.step.delay_seconds)
        if decision.step.delay_seconds > 0:
            break
        request = replace(
            request,
            ladder_attempt=request.ladder_attempt + 1,
            due_at=decision.due_at,
            clock_offset=decision.clock_offset,
            original=False,
        )
        decision = await delivery.deliver(request)
    return decision, waits


async def advance(client: httpx.AsyncClient, merchant: NewMerchant, hours: int) -> int:
    """The clock moved; how many webhook retries that released."""
    advanced = await client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": hours * HOUR}, headers=auth(merchant)
    )
    assert advanced.status_code == 200, advanced.text
    return int(advanced.json()["data"]["webhookRetriesReleased"])


async def test_an_advance_during_a_first_attempt_runs_its_retries_within_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """The attempt was made before the jump: its retries fall inside the 31 h window. Without a
    due time (a first attempt) they were timed from the window's end, 5 s, 5 min, ... of real
    time away."""
    answered = asyncio.Event()
    receiver.always(Reply(500))
    receiver.reply_with(Reply(500, held_until=answered))
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    request = first_request(row)
    async with event_delivery(sessions, README_LADDER) as delivery:
        first = asyncio.create_task(delivery.deliver(request))

        async def under_way() -> bool:
            return len(receiver.requests) == 1

        try:
            await eventually(under_way, within=10, interval=0.02, what="the first attempt")
            await advance(api_client, merchant, 31)
        finally:
            answered.set()
        decision, waits = await along_the_ladder(delivery, request, await first)

    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None
    assert (decision.disposition, stored.status, stored.attempts) == (
        Disposition.PARK,
        "PARKED",
        len(README_LADDER) + 1,
    ), waits


async def test_retries_of_an_event_the_clock_caused_run_within_its_advance(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """A 0006 reversal due 48 h into an 80 h advance (its event carries that sandbox time): on a
    clock that ran, its webhook's whole ladder (27.6 h) ends before 80 h. Its retries were timed
    from the advance's end, and the delivery stayed RETRYING."""
    receiver.always(Reply(500))
    _, row, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    request = own_message(event)
    async with event_delivery(sessions, README_LADDER) as delivery:
        decision, waits = await along_the_ladder(delivery, request, await delivery.deliver(request))

    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None
    assert (decision.disposition, stored.status, stored.attempts) == (
        Disposition.PARK,
        "PARKED",
        len(README_LADDER) + 1,
    ), waits


async def test_an_event_the_clock_caused_while_the_processor_was_down_waits_its_whole_step(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """The clock ran 10 h ahead for 3 h; a step due 2 h ago (in sandbox time, by the clock
    running, no advance) is applied now, the processor having been down. Its lateness is real
    time, not a jump of the clock: its first retry waits the ladder's first step. Taken for a
    jump, its retries for 2 h of sandbox time ran back to back."""
    receiver.always(Reply(500))
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    await advance(api_client, merchant, 10)
    async with transaction(sessions) as session:  # that advance was 3 h ago
        await session.execute(
            update(SandboxClockAdvance)
            .where(SandboxClockAdvance.merchant_id == merchant.merchant_id)
            .values(advanced_at=plus_seconds(-3 * HOUR, SandboxClockAdvance.advanced_at))
        )
    event = await clock_caused(sessions, merchant, row, hours_ago=2)
    async with event_delivery(sessions, README_LADDER) as delivery:
        decision = await delivery.deliver(own_message(event))

    assert waits_the_first_step(decision)


async def test_a_parked_event_the_clock_caused_replayed_starts_its_ladder_afresh(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """Its ladder ran within the advance and parked it; replayed (PARKED -> PENDING, a fresh
    copy: attempt 1), it is attempted now, and its retries wait their steps. Timed from when
    the event happened, it was parked again within seconds."""
    receiver.always(Reply(500))
    _, _, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    request = own_message(event)
    async with event_delivery(sessions, README_LADDER) as delivery:
        decision, _ = await along_the_ladder(delivery, request, await delivery.deliver(request))
        assert decision.disposition is Disposition.PARK
        async with transaction(sessions) as session:
            assert await reopen_parked(session, event.id, utcnow())
        replayed = await delivery.deliver(replace(request, original=False))  # a fresh copy

    assert waits_the_first_step(replayed)


async def test_a_resend_of_an_event_the_clock_caused_starts_its_ladder_now(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """The merchant had no webhook URL when the event happened (parked, no attempt), then sets
    one and resends: the resend's retries wait their steps. Timed from the event, they ran back
    to back and it was parked again within seconds."""
    receiver.always(Reply(500))
    merchant, row, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, None
    )
    first = own_message(event)
    async with event_delivery(sessions, README_LADDER) as delivery:
        assert (await delivery.deliver(first)).disposition is Disposition.DONE  # parked
        async with transaction(sessions) as session:
            await session.execute(
                update(Merchant)
                .where(Merchant.id == merchant.merchant_id)
                .values(webhook_url=receiver.url)
            )
        stored = await delivery_of(sessions, event_id_of(row))
        assert stored is not None and (stored.status, stored.attempts) == ("PARKED", 0)
        await resend(api_client, sessions, merchant, stored)
        decision = await delivery.deliver(replace(first, generation=1, original=False))

    assert waits_the_first_step(decision)


@pytest.mark.parametrize("redelivered", [True, False], ids=["after a crash", "published twice"])
async def test_a_copy_of_the_message_of_an_event_the_clock_caused_leaves_its_ladder_alone(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    redelivered: bool,
) -> None:
    """The event's message again after its first attempt was recorded: RabbitMQ delivers it
    again (its consumer was killed before sending the retry on: the relay's sweep sends that
    retry), or the relay published it twice (at-least-once). It makes no attempt of its own
    (it made one outside the ladder, which then took a step more to park), and the ladder still
    runs within the advance."""
    receiver.always(Reply(500))
    _, _, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    first = own_message(event)
    async with event_delivery(sessions, README_LADDER) as delivery:
        failed = await delivery.deliver(first)
        assert not waits_the_first_step(failed)
        copy = await delivery.deliver(replace(first, redelivered=redelivered))
        decision, waits = await along_the_ladder(delivery, first, failed)

    assert (copy.disposition, copy.reason) == (Disposition.DONE, SUPERSEDED)
    stored = await delivery_of(sessions, event.id)
    assert stored is not None
    assert (decision.disposition, stored.status) == (Disposition.PARK, "PARKED"), waits
    assert stored.attempts == len(README_LADDER) + 1


async def test_an_event_the_clock_caused_replayed_without_a_delivery_starts_its_ladder_now(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """Its message failed on the database through its whole ladder (no delivery row) and was
    parked; replay-parked moves it back (through the default exchange), and its retries wait
    their steps. Read as the event's own message, it was timed from the event and parked
    again in seconds."""
    receiver.always(Reply(500))
    _, row, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    webhook_settings = quick_webhook_settings(settings)
    async with running_webhook_service(webhook_settings):
        pass  # the topology is declared
    await rabbit.publish(
        event.model_dump_json(by_alias=True).encode(),
        exchange=DEFAULT_EXCHANGE,
        routing_key=WEBHOOK_PARKING_LOT,
        message_id=str(row.id),
        headers=row.headers,
    )
    assert (await replay_parked(webhook_settings.amqp_url, sessions)).moved >= 1
    (moved,) = await messages_of(rabbit, QUEUE.name, event.id)
    request = DeliveryRequest.of_message(
        event, moved.headers or {}, redelivered=False, exchange=moved.exchange
    )
    async with event_delivery(sessions, README_LADDER) as delivery:
        decision = await delivery.deliver(request)

    assert waits_the_first_step(decision)


async def test_a_redriven_dead_retry_makes_no_attempt_and_the_sweep_sends_the_retry(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """Its waiting retry was dead-lettered and moved back with `payouts dlq redrive`, which
    drops the retry headers: read as a copy of the event's own message, it makes no attempt
    (its delivery's ladder has started), and the relay's sweep of overdue retries sends the
    retry the delivery waits for, on its merchant's clock."""
    receiver.always(Reply(500))
    _, row, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    webhook_settings = quick_webhook_settings(settings)
    async with running_webhook_service(webhook_settings):
        pass  # the topology is declared
    async with event_delivery(sessions, README_LADDER) as delivery:
        decision = await delivery.deliver(own_message(event))
        assert decision.due_at is not None
        await rabbit.publish(  # its waiting retry, dead-lettered
            event.model_dump_json(by_alias=True).encode(),
            exchange=DEFAULT_EXCHANGE,
            routing_key=QUEUE.dead_letter_queue,
            message_id=str(row.id),
            headers={
                **(row.headers or {}),
                RETRY_COUNT_HEADER: 1,
                **retry_due_headers(decision.due_at, clock_offset=decision.clock_offset),
            },
        )
        assert (await redrive(webhook_settings.amqp_url, QUEUE.name, 100)).moved >= 1
        (moved,) = await messages_of(rabbit, QUEUE.name, event.id)
        again = await delivery.deliver(
            DeliveryRequest.of_message(
                event, moved.headers or {}, redelivered=False, exchange=moved.exchange
            )
        )

    assert (again.disposition, again.reason) == (Disposition.DONE, SUPERSEDED)
    assert len(receiver.requests) == 1
    swept = await resend_stalled_retries(sessions, stalled_seconds=1, time=SANDBOX_TIME)
    assert swept >= 1
    assert len(await resent_copies(sessions, event.payout.id)) == 1


async def test_the_own_message_of_an_event_the_clock_caused_back_from_a_lease_wait_keeps_its_time(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """The consumer attempting the event's message was killed mid-call (its lease left on the
    row, no attempt recorded); the message, delivered again, waits the lease out in a retry
    tier and comes back through payouts.retry-return, the event's own still: its ladder runs
    within the advance. Timed from now, it took 27.6 h of real time."""
    receiver.always(Reply(500))
    _, row, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    async with transaction(sessions) as session:  # the killed consumer's lease
        await lease_deliveries(
            session, [own_message(event)], token="d" * 32, lease_seconds={event.id: 1}, now=utcnow()
        )
    async with event_delivery(sessions, README_LADDER) as delivery:
        redelivered = replace(own_message(event), redelivered=True)
        waited = await delivery.deliver(redelivered)
        assert (waited.disposition, waited.failed) == (Disposition.RETRY, False)
        request = back_from_waiting(row, waited, redelivered)
        await eventually(lambda: lease_ran_out(sessions, event.id), within=10, what="the lease")
        await runs_within_the_advance(delivery, request, sessions)


async def test_the_own_message_of_an_event_the_clock_caused_back_from_an_outage_keeps_its_time(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """The database was down when the event's message was first taken: it waits a step of the
    ladder in a retry tier (no attempt made) and comes back the event's own still."""
    receiver.always(Reply(500))
    _, row, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    nowhere = create_engine("mysql+asyncmy://root@127.0.0.1:1/nowhere", pool_size=1)
    try:
        async with event_delivery(create_session_factory(nowhere), README_LADDER) as down:
            failed = await down.deliver(own_message(event))
    finally:
        await nowhere.dispose()
    assert failed.disposition is Disposition.RETRY and failed.due_at is None
    request = back_from_waiting(row, failed, own_message(event))
    async with event_delivery(sessions, README_LADDER) as delivery:
        await runs_within_the_advance(delivery, request, sessions)


async def test_the_relays_copy_of_an_event_the_clock_caused_never_attempted_keeps_its_time(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """The event's message died before any webhook batch took it (a crash-looping webhook
    service, the queue's delivery limit): the relay's sweep makes its row and sends the event's
    first message itself, the event's own still. Timed from now, it took 27.6 h of real time."""
    receiver.always(Reply(500))
    _, _, event = await clock_caused_in_an_advance(
        api_client, make_merchant, sessions, receiver.url
    )
    async with transaction(sessions) as session:  # as the scheduler records it, an hour ago
        await session.execute(
            update(PayoutEvent)
            .where(PayoutEvent.id == event.id)
            .values(
                body=event.model_dump_json(by_alias=True).encode(),
                created_at=plus_seconds(-HOUR, PayoutEvent.created_at),
            )
        )
    assert await resend_stalled_deliveries(sessions, stalled_seconds=HOUR // 2) >= 1
    copies = await resent_copies(sessions, event.payout.id)
    copy_row = next(copy for copy in copies if event_id_of_body(copy.body) == event.id)
    request = DeliveryRequest.of_message(
        event, copy_row.headers or {}, redelivered=False, exchange=copy_row.exchange
    )
    async with event_delivery(sessions, README_LADDER) as delivery:
        await runs_within_the_advance(delivery, request, sessions)


def back_from_waiting(
    row: OutboxMessage, waited: Decision, request: DeliveryRequest
) -> DeliveryRequest:
    """The message the webhook service sent on to wait, as it comes back from its tier."""
    headers = {
        **retry_headers(row.headers, error=waited.reason, failed=waited.failed),
        **waiting_headers(waited, request),
    }
    return DeliveryRequest.of_message(
        request.event, headers, redelivered=False, exchange=RETRY_RETURN_EXCHANGE
    )


async def lease_ran_out(sessions: SessionFactory, event_id: str) -> bool:
    delivery = await delivery_of(sessions, event_id)
    return delivery is not None and (delivery.leased_until or utcnow()) <= utcnow()


async def runs_within_the_advance(
    delivery: EventDelivery, request: DeliveryRequest, sessions: SessionFactory
) -> None:
    """The message's ladder runs within the advance: each retry due at once, and the delivery
    parked before any waits."""
    decision, waits = await along_the_ladder(delivery, request, await delivery.deliver(request))
    stored = await delivery_of(sessions, request.event.id)
    assert stored is not None
    assert (decision.disposition, stored.status) == (Disposition.PARK, "PARKED"), waits


def waits_the_first_step(decision: Decision) -> bool:
    """A retry that waits the ladder's first step (not one due at once: no jump counted)."""
    step = decision.step
    return step is not None and step.delay_seconds == pytest.approx(README_LADDER[0], abs=2)


async def clock_caused_in_an_advance(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    webhook_url: str | None,
) -> tuple[NewMerchant, OutboxMessage, PayoutStatusChanged]:
    """The README's case: a merchant's clock advanced 80 h, and an event the clock caused 48 h
    into it (a 0006 reversal): the merchant, the outbox row of its payout's event, and that
    event as the scheduler stamps it."""
    merchant, row = await created_event(api_client, make_merchant, sessions, webhook_url)
    await advance(api_client, merchant, 80)
    return merchant, row, await clock_caused(sessions, merchant, row, hours_ago=32)


async def clock_caused(
    sessions: SessionFactory, merchant: NewMerchant, row: OutboxMessage, *, hours_ago: int
) -> PayoutStatusChanged:
    """The row's event as the scheduler stamps one the clock caused `hours_ago` (sandbox time)."""
    async with sessions() as session:
        sandbox_now = await session.scalar(select(sandbox_now_of(merchant.merchant_id)))
    assert sandbox_now is not None
    event = PayoutStatusChanged.model_validate_json(row.body)
    return event.model_copy(update={"sandbox_time": sandbox_now - timedelta(hours=hours_ago)})


async def test_the_waiting_message_of_a_last_retry_an_advance_ran_is_dropped_not_parked(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """An advance sends a copy of the ladder's last retry, which fails and parks the delivery;
    the retry's own message, back from its TTL queue, was parked too: two messages in the lot
    for one delivery, and two ladders for it when the lot was replayed."""
    receiver.always(Reply(500))
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    async with event_delivery(sessions, SHORT_LADDER) as delivery:
        request = first_request(row)
        for _ in SHORT_LADDER:  # attempts 1 to 3 fail as real time makes them
            decision = await delivery.deliver(request)
            assert decision.disposition is Disposition.RETRY
            request = replace(
                request,
                ladder_attempt=request.ladder_attempt + 1,
                due_at=decision.due_at,
                clock_offset=decision.clock_offset,
            )
        waiting = request  # the last retry, 30 min in the last tier's TTL queue

        assert await advance(api_client, merchant, 1) == 1
        (copy_row,) = await resent_copies(sessions, waiting.event.payout.id)
        copy = DeliveryRequest.of_message(
            waiting.event, copy_row.headers or {}, redelivered=False, exchange=copy_row.exchange
        )
        assert (await delivery.deliver(copy)).disposition is Disposition.PARK
        came_back = await delivery.deliver(waiting)

    assert came_back.disposition is Disposition.DONE, came_back
    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None
    assert (stored.status, stored.attempts) == ("PARKED", len(SHORT_LADDER) + 1)
