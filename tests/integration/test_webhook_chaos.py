"""Sandbox webhook chaos against the real RabbitMQ, MariaDB/MySQL and a real HTTP receiver.

The chaos setting is written to `webhook_chaos_settings` directly (the API's PUT writes the same
row). Events are created through the API, or announced as the processor announces them, and
relayed to RabbitMQ by the test, as in test_webhook_delivery.
"""

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

import webhook_service.app as webhook_app
from cli.merchants import NewMerchant
from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    transaction,
    utcnow,
)
from contracts.db.models import (
    OutboxMessage,
    Payout,
    WebhookAttempt,
    WebhookChaosSetting,
)
from contracts.domain.statuses import EventType
from contracts.payout_events import Announcements
from contracts.settings import Environment, Settings
from contracts.topology import EVENTS_EXCHANGE
from contracts.webhook_chaos import (
    MAX_CHAOS_DELAY_SECONDS,
    STALE_TIMESTAMP_SECONDS,
    ChaosKind,
    WebhookChaos,
)
from contracts.webhook_signing import standard_signature
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.api_helpers import API, auth, create_payout, outbox_for_payout
from tests.support.webhook_flow import (
    LADDER,
    STATEMENTS_PER_BATCH,
    attempts_of,
    counting,
    created_event,
    delivery_of,
    event_id_of,
    first_request,
    new_event_row,
    no_transaction_elsewhere,
    purge_webhook_queues,
    quick_webhook_settings,
    reaches,
    relay,
    resend,
    running_webhook_service,
    waiting_copies,
)
from tests.support.webhook_receiver import REFUSED, Reply, WebhookReceiver
from webhook_service.chaos import INJECTED_FAILURE_ERROR
from webhook_service.delivery import DELIVERED, Disposition, EventDelivery, lease_seconds_for
from webhook_service.endpoints import EndpointCache
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

TIMEOUT_SECONDS = 1.0


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return quick_webhook_settings(settings, timeout_seconds=TIMEOUT_SECONDS)


@pytest.fixture
async def webhook_service(webhook_settings: Settings, rabbit: RabbitClient) -> AsyncIterator[None]:
    """The service, on queues emptied of the worker's earlier tests' messages: handling them, it
    had transactions open while a hold under test had to have none."""
    await purge_webhook_queues(rabbit, webhook_settings)
    async with running_webhook_service(webhook_settings):
        yield


async def set_chaos(sessions: SessionFactory, merchant: NewMerchant, chaos: WebhookChaos) -> None:
    """As PUT /sandbox/webhook-chaos stores it."""
    values = {**asdict(chaos), "updated_at": utcnow()}
    async with transaction(sessions) as session:
        await session.execute(
            insert(WebhookChaosSetting)
            .values(merchant_id=merchant.merchant_id, **values)
            .on_duplicate_key_update(**values)
        )


async def chaos_event(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    chaos: WebhookChaos,
) -> tuple[NewMerchant, OutboxMessage]:
    """A merchant with this chaos, and the outbox row of its first payout's created event."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    await set_chaos(sessions, merchant, chaos)
    return merchant, row


def attempt_log(attempts: list[WebhookAttempt]) -> list[tuple[int, int | None, str | None]]:
    """(number, status code, chaos) of each attempt."""
    return [(a.attempt_number, a.status_code, a.chaos) for a in attempts]


def chaos_count(kind: ChaosKind) -> float:
    return (
        REGISTRY.get_sample_value("payouts_webhook_chaos_attempts_total", {"kind": kind.value})
        or 0.0
    )


async def announced(
    sessions: SessionFactory, payout_id: str, *event_types: EventType
) -> list[OutboxMessage]:
    """Status events of the payout, recorded and put in the outbox as the processor does it; the
    outbox rows in the order given."""
    async with transaction(sessions) as session:
        payout = await session.get_one(Payout, payout_id)
        announcements = Announcements(correlation_id=None)
        events = [announcements.event(payout, event_type) for event_type in event_types]
        await announcements.write(session)
    rows = {
        event_id_of(row): row
        for row in await outbox_for_payout(sessions, payout_id)
        if row.exchange == EVENTS_EXCHANGE
    }
    return [rows[event.id] for event in events]


@asynccontextmanager
async def chaotic_delivery(
    settings: Settings, *, out_of_order_limit_seconds: float = MAX_CHAOS_DELAY_SECONDS
) -> AsyncIterator[tuple[EventDelivery, AsyncEngine]]:
    """The webhook service's delivery in test mode, without the broker (the test submits the
    messages), on an engine of its own (to count its statements)."""
    engine = create_engine(settings.database_url, pool_size=2)
    sender = WebhookSender(timeout_seconds=TIMEOUT_SECONDS, allow_private_urls=True)
    delivery = EventDelivery(
        sessions=create_session_factory(engine),
        sender=sender,
        ladder=RetryLadder.of(LADDER),
        lease_seconds=lease_seconds_for(TIMEOUT_SECONDS),
        max_batch=4,
        lease_window_seconds=settings.webhook_lease_window_seconds,
        record_window_seconds=settings.webhook_batch_window_seconds,
        endpoints=EndpointCache(with_chaos=True),
        out_of_order_limit_seconds=out_of_order_limit_seconds,
    )
    try:
        yield delivery, engine
    finally:
        await delivery.aclose()
        await sender.aclose()
        await engine.dispose()


# ---- injected failures -------------------------------------------------------------------------


@pytest.mark.usefixtures("webhook_service")
async def test_injected_failures_make_no_call_and_take_the_retry_ladder(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    _, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(fail_first_attempts=2)
    )
    counted_before = chaos_count(ChaosKind.INJECTED_FAILURE)

    await relay(rabbit, row)

    event_id = event_id_of(row)
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=3)
    assert len(receiver.requests) == 1
    attempts = await attempts_of(sessions, event_id)
    assert attempt_log(attempts) == [
        (1, None, "injected_failure"),
        (2, None, "injected_failure"),
        (3, 200, None),
    ]
    for injected in attempts[:2]:
        assert (injected.error, injected.latency_ms) == (INJECTED_FAILURE_ERROR, 0)
    # the merchant sees our retry ladder (jitter at most 10 %)
    first, second, third = (attempt.created_at for attempt in attempts)
    assert (second - first).total_seconds() >= LADDER[0] * 0.9
    assert (third - second).total_seconds() >= LADDER[1] * 0.9
    assert chaos_count(ChaosKind.INJECTED_FAILURE) - counted_before == 2


# ---- delay -------------------------------------------------------------------------------------


async def lease_seconds_left(engine: AsyncEngine, event_id: str) -> float | None:
    async with engine.connect() as connection:
        left = await connection.scalar(
            text(
                "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), leased_until)"
                " FROM webhook_deliveries WHERE event_id = :event_id"
            ),
            {"event_id": event_id},
        )
        await connection.rollback()
    return None if left is None else left / 1_000_000


@pytest.mark.usefixtures("webhook_service")
async def test_a_delay_holds_the_first_attempt_under_a_longer_lease_and_no_transaction(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    engine: AsyncEngine,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    delay = 2
    _, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(delay_seconds=delay)
    )
    event_id = event_id_of(row)
    relayed_at = asyncio.get_running_loop().time()

    await relay(rabbit, row)

    async def leased() -> float:
        left = await lease_seconds_left(engine, event_id)
        assert left is not None, "not leased yet"
        return left

    left = await eventually(leased)
    await no_transaction_elsewhere(engine, within=delay / 2)
    assert receiver.requests == []  # all of this happened during the hold
    # an ordinary attempt's lease, plus the hold
    assert left > lease_seconds_for(TIMEOUT_SECONDS)

    (request,) = await receiver.wait_for_requests(1)
    assert request.received_at - relayed_at >= delay
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)
    (attempt,) = await attempts_of(sessions, event_id)
    assert (attempt.status_code, attempt.chaos) == (200, "delayed")
    assert attempt.latency_ms < delay * 1000  # the hold is not the endpoint's latency


async def test_one_merchants_held_events_leave_another_merchant_its_own_delay(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Holds were capped per process (at half the prefetch) for every merchant together: a
    merchant whose payroll filled them took the delay away from every other merchant, whose
    attempts went out at once, unlabelled. Here a batch of 4 allows 2 holds, 1 per merchant."""
    busy, busy_row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(delay_seconds=2)
    )
    busy_rows = [busy_row, await new_event_row(api_client, sessions, busy)]
    _, quiet_row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(delay_seconds=2)
    )
    async with chaotic_delivery(webhook_settings) as (delivery, _):
        assert (delivery.max_holds, delivery.max_holds_per_merchant) == (2, 1)
        # One batch; its attempts start in the order submitted.
        decisions = await asyncio.gather(
            *(delivery.deliver(first_request(row)) for row in [*busy_rows, quiet_row])
        )

    busy_held, busy_unheld, quiet = (decision.chaos for decision in decisions)
    assert (busy_held, busy_unheld) == ((ChaosKind.DELAYED,), ())  # one hold per merchant
    assert quiet == (ChaosKind.DELAYED,)  # its own delay, whatever the busy one holds


# ---- out of order ------------------------------------------------------------------------------


@pytest.mark.usefixtures("webhook_service")
async def test_out_of_order_sends_processing_after_the_final_event_was_delivered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant = await make_merchant(webhook_url=receiver.url)
    await set_chaos(sessions, merchant, WebhookChaos(out_of_order=True))
    payout = await create_payout(api_client, merchant)
    processing, succeeded = await announced(
        sessions, payout["id"], EventType.PROCESSING, EventType.SUCCEEDED
    )
    processing_id, succeeded_id = event_id_of(processing), event_id_of(succeeded)

    await relay(rabbit, processing)

    async def held() -> None:
        delivery = await delivery_of(sessions, processing_id)
        assert delivery is not None and delivery.lease_token is not None

    await eventually(held)
    assert receiver.requests == []
    await relay(rabbit, succeeded)

    first, second = await receiver.wait_for_requests(2)
    assert (first.webhook_id, second.webhook_id) == (succeeded_id, processing_id)
    final = await reaches(sessions, succeeded_id, DeliveryStatus.DELIVERED, attempts=1)
    await reaches(sessions, processing_id, DeliveryStatus.DELIVERED, attempts=1)
    (attempt,) = await attempts_of(sessions, processing_id)
    assert (attempt.status_code, attempt.chaos) == (200, "out_of_order")
    assert final.delivered_at is not None and attempt.created_at >= final.delivered_at
    assert attempt_log(await attempts_of(sessions, succeeded_id)) == [(1, 200, None)]


async def test_out_of_order_holds_at_most_its_limit_and_polls_once_a_second(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """A payout that does not end (here: its final event is one of an earlier attempt, before
    a reinitiate) does not hold its processing event for ever, nor spend a retry, nor park it."""
    merchant = await make_merchant(webhook_url=receiver.url)
    await set_chaos(sessions, merchant, WebhookChaos(out_of_order=True))
    payout = await create_payout(api_client, merchant)
    (earlier_failure,) = await announced(sessions, payout["id"], EventType.FAILED)
    (processing,) = await announced(sessions, payout["id"], EventType.PROCESSING)
    limit = 1.5
    loop = asyncio.get_running_loop()
    async with chaotic_delivery(webhook_settings, out_of_order_limit_seconds=limit) as (
        delivery,
        engine,
    ):
        delivered = await delivery.deliver(first_request(earlier_failure))
        assert delivered.reason == DELIVERED
        with counting(engine) as seen:
            started = loop.time()
            decision = await delivery.deliver(first_request(processing))
            held = loop.time() - started

    assert (decision.disposition, decision.reason) == (Disposition.DONE, DELIVERED)
    assert decision.chaos == (ChaosKind.OUT_OF_ORDER,)
    assert limit <= held < limit + 5  # the hold ends at its limit, not MAX_CHAOS_DELAY_SECONDS
    polls = [statement for statement in seen.statements if "payout_events" in statement]
    assert 2 <= len(polls) <= 3  # at 0, 1 and 1.5 s: no spinning
    event_id = event_id_of(processing)
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)
    assert attempt_log(await attempts_of(sessions, event_id)) == [(1, 200, "out_of_order")]


# ---- stale timestamp ---------------------------------------------------------------------------


@pytest.mark.usefixtures("webhook_service")
async def test_a_stale_timestamp_is_refused_by_a_correct_receiver_then_sent_clean(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(stale_timestamp_percent=100)
    )
    receiver.verify_with(merchant.webhook_secret)
    event_id = event_id_of(row)

    await relay(rabbit, row)

    stale, clean = await receiver.wait_for_requests(2)
    delivery = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
    assert attempt_log(await attempts_of(sessions, event_id)) == [
        (1, REFUSED, "stale_timestamp"),
        (2, 200, None),
    ]
    # a valid signature, over a timestamp older than any receiver's tolerance
    timestamp = int(stale.headers["webhook-timestamp"])
    assert int(clean.headers["webhook-timestamp"]) - timestamp >= STALE_TIMESTAMP_SECONDS
    assert stale.headers["webhook-signature"] == standard_signature(
        merchant.webhook_secret, message_id=event_id, timestamp=timestamp, body=stale.body
    )

    # a resend (generation 1) is sent clean
    await relay(rabbit, await resend(api_client, sessions, merchant, delivery))
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=3)
    assert attempt_log(await attempts_of(sessions, event_id))[2] == (3, 200, None)


# ---- old secret --------------------------------------------------------------------------------


@pytest.mark.usefixtures("webhook_service")
async def test_after_a_rotations_grace_the_first_attempt_is_signed_with_the_old_secret_only(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant = await make_merchant(webhook_url=receiver.url)
    new_secret = await rotate_secret(api_client, merchant, {"previousSecretGraceHours": 0})
    await set_chaos(sessions, merchant, WebhookChaos(old_secret_only=True))
    receiver.verify_with(new_secret)
    row = await new_event_row(api_client, sessions, merchant)
    event_id = event_id_of(row)

    await relay(rabbit, row)

    old, clean = await receiver.wait_for_requests(2)
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
    assert attempt_log(await attempts_of(sessions, event_id)) == [
        (1, REFUSED, "old_secret"),
        (2, 200, None),
    ]
    assert len(old.headers["webhook-signature"].split(" ")) == 1
    Webhook(merchant.webhook_secret).verify(old.body, old.headers)  # the old secret signed it
    Webhook(new_secret).verify(clean.body, clean.headers)


@pytest.mark.usefixtures("webhook_service")
async def test_within_a_rotations_grace_old_secret_only_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    """The previous secret still signs every attempt then: a receiver still on it is right, and
    an attempt signed with it alone would be judged as if it were wrong."""
    merchant = await make_merchant(webhook_url=receiver.url)
    await rotate_secret(api_client, merchant)
    await set_chaos(sessions, merchant, WebhookChaos(old_secret_only=True))
    receiver.verify_with(merchant.webhook_secret)  # not switched yet
    row = await new_event_row(api_client, sessions, merchant)

    await relay(rabbit, row)

    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
    assert attempt_log(await attempts_of(sessions, event_id_of(row))) == [(1, 200, None)]


async def rotate_secret(
    api_client: httpx.AsyncClient, merchant: NewMerchant, body: dict[str, int] | None = None
) -> str:
    rotated = await api_client.post(
        f"{API}/webhook-endpoint/rotate-secret", json=body, headers=auth(merchant)
    )
    assert rotated.status_code == 200, rotated.text
    return str(rotated.json()["data"]["secret"])


@pytest.mark.usefixtures("webhook_service")
async def test_without_a_previous_secret_old_secret_only_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(old_secret_only=True)
    )
    receiver.verify_with(merchant.webhook_secret)

    await relay(rabbit, row)

    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
    assert attempt_log(await attempts_of(sessions, event_id_of(row))) == [(1, 200, None)]


# ---- duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicate_answer", [200, 500])
async def test_a_delivered_event_is_sent_once_more_and_stays_delivered_whatever_the_answer(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    duplicate_answer: int,
) -> None:
    merchant, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(duplicate_percent=100)
    )
    receiver.reply_with(Reply(200), Reply(duplicate_answer))
    event_id = event_id_of(row)
    counted_before = chaos_count(ChaosKind.DUPLICATE)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        delivery = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
    # stopped gracefully: a message retried would be back in the queue by now

    assert await waiting_copies(rabbit, event_id) == 0
    original, duplicate = receiver.requests
    assert original.webhook_id == duplicate.webhook_id == event_id
    assert original.body == duplicate.body
    Webhook(merchant.webhook_secret).verify(duplicate.body, duplicate.headers)
    assert attempt_log(await attempts_of(sessions, event_id)) == [
        (1, 200, None),
        (2, duplicate_answer, "duplicate"),
    ]
    assert (delivery.last_status_code, delivery.last_error) == (200, None)
    assert chaos_count(ChaosKind.DUPLICATE) - counted_before == 1


# ---- production, and the cost -------------------------------------------------------------------


async def test_production_ignores_the_chaos_settings(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chaos = WebhookChaos(fail_first_attempts=2, duplicate_percent=100, delay_seconds=5)
    _, row = await chaos_event(api_client, make_merchant, sessions, receiver, chaos)
    production = webhook_settings.model_copy(update={"env": Environment.PRODUCTION})
    # Its receiver listens on this machine, which a production webhook service refuses to
    # reach (tests/unit/test_production_settings.py): that refusal is not what this tests.
    monkeypatch.setattr(Settings, "require_safe_webhooks_in_production", lambda _: None)

    async with running_webhook_service(production):
        await relay(rabbit, row)
        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)

    assert len(receiver.requests) == 1
    assert attempt_log(await attempts_of(sessions, event_id_of(row))) == [(1, 200, None)]


async def test_the_chaos_setting_costs_no_statement_of_its_own(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Read with the endpoint: a batch costs what it costs without chaos (a kind that does not
    hold, so only the batch's own statements run)."""
    _, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(stale_timestamp_percent=100)
    )
    async with chaotic_delivery(webhook_settings) as (delivery, engine):
        async with engine.connect() as connection:  # connect before counting
            await connection.execute(text("SELECT 1"))
        with counting(engine) as seen:
            decision = await delivery.deliver(first_request(row))

    assert decision.chaos == (ChaosKind.STALE_TIMESTAMP,)
    assert len(seen.statements) <= STATEMENTS_PER_BATCH, seen.statements
    assert any("webhook_chaos_settings" in statement for statement in seen.statements)
    (attempt,) = await attempts_of(sessions, event_id_of(row))
    assert attempt.chaos == "stale_timestamp"


async def test_another_merchants_delay_leaves_a_clean_merchants_lease_as_it_is(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    engine: AsyncEngine,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Leased in one batch with a merchant whose chaos holds its attempts 3 s, a clean
    merchant's delivery was leased 3 s longer: after a crash its webhook waited out the other
    merchant's hold too (found by the review of the webhook service)."""
    _, chaotic_row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(delay_seconds=3)
    )
    async with WebhookReceiver() as clean_receiver:
        release = asyncio.Event()
        clean_receiver.always(Reply(held_until=release))
        _, clean_row = await created_event(api_client, make_merchant, sessions, clean_receiver.url)
        async with chaotic_delivery(webhook_settings) as (delivery, _):
            both = asyncio.gather(
                delivery.deliver(first_request(chaotic_row)),
                delivery.deliver(first_request(clean_row)),
            )
            await clean_receiver.wait_for_requests(1)
            left = await lease_seconds_left(engine, event_id_of(clean_row))
            release.set()
            await both

    assert left is not None and left <= lease_seconds_for(TIMEOUT_SECONDS)


@pytest.fixture
def endpoints_cached_for_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's endpoint cache keeps an entry for a minute (2 s otherwise): longer than any
    hold, on however slow a machine."""
    monkeypatch.setattr(webhook_app, "EndpointCache", functools.partial(EndpointCache, 60.0))


@pytest.mark.usefixtures("endpoints_cached_for_a_minute", "webhook_service")
async def test_a_held_attempt_is_signed_with_the_endpoint_as_it_is_once_the_hold_ends(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    engine: AsyncEngine,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    """A merchant retired a leaked secret at once while an attempt was held: the attempt went out
    seconds later signed with the leaked secret alone, read before the hold (found by the review
    of the webhook service). The endpoint is read again from the database once the hold ends,
    not from the cache: a hold shorter than the cache's 2 s (and an out-of-order hold, which
    ends as the final event's own delivery has just filled the cache) got the entry from before
    it (found by the chaos review)."""
    merchant, row = await chaos_event(
        api_client, make_merchant, sessions, receiver, WebhookChaos(delay_seconds=3)
    )
    await relay(rabbit, row)

    async def leased() -> float:
        left = await lease_seconds_left(engine, event_id_of(row))
        assert left is not None, "not leased yet"
        return left

    await eventually(leased)  # and now held
    rotated = await rotate_secret(api_client, merchant, {"previousSecretGraceHours": 0})

    (request,) = await receiver.wait_for_requests(1, within=15)
    Webhook(rotated).verify(request.body, request.headers)
