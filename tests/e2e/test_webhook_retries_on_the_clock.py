"""Webhook retries on the sandbox clock, with the real processes: a merchant whose endpoint
always fails advances its clock across the whole retry ladder, and every tier's attempt is made
at once, once each, before the delivery parks; the copies still waiting in RabbitMQ's TTL queues
come back later and are dropped."""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from contracts.db.engine import SessionFactory
from contracts.db.models import WebhookAttempt, WebhookDelivery
from contracts.redelivery import retry_count
from contracts.topology import WEBHOOK_PARKING_LOT, webhook_events_queue
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.api_helpers import auth, payout_body
from tests.support.polling import eventually
from tests.support.system import WEBHOOKS, RunningSystem, running_system
from tests.support.webhook_receiver import Reply, WebhookReceiver

# The first wait is short so that its TTL copy comes back within the test, and long enough that
# no first retry runs (in real time) before the advance has taken each delivery through every
# tier, even on a slow host (at 8 s, a loaded host's copies came back mid-advance and were not
# dropped as superseded); the rest span hours.
LADDER = (15, 600, 3600, 7200)
ATTEMPTS = len(LADDER) + 1
EVENTS = ("payout.created", "payout.processing", "payout.succeeded")
SUPERSEDED_METRIC = 'payouts_webhook_outcomes_total{outcome="superseded"}'


@pytest.fixture(scope="module")
def system(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    env = {
        **service_env,
        "PAYOUTS_WEBHOOK_RETRY_DELAYS": ",".join(map(str, LADDER)),
        # The advance waits for nine chained attempts to settle: 10 s is short on a loaded host
        # (25 s: under the client's 30 s timeout).
        "PAYOUTS_SANDBOX_CLOCK_WAIT_SECONDS": "25",
    }
    with running_system(env, tmp_path_factory.mktemp("service-logs")) as running:
        yield running


async def deliveries_of(sessions: SessionFactory, payout_id: str) -> list[WebhookDelivery]:
    async with sessions() as session:
        rows = await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.payout_id == payout_id)
        )
        return list(rows)


async def attempt_numbers(sessions: SessionFactory, delivery_id: str) -> list[tuple[int, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            select(WebhookAttempt.attempt_number, WebhookAttempt.status_code)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.attempt_number)
        )
        return [(row.attempt_number, row.status_code) for row in rows]


async def test_advancing_across_the_webhook_ladder_parks_each_delivery_after_every_tier(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    async with WebhookReceiver() as receiver:
        receiver.always(Reply(500))
        merchant = await make_merchant(webhook_url=receiver.url)
        created = await http.post("/payouts", json=payout_body(), headers=auth(merchant))
        assert created.status_code == 201, created.text
        payout_id = created.json()["data"]["id"]

        async def first_attempts_failed() -> bool:
            deliveries = await deliveries_of(sessions, payout_id)
            return len(deliveries) == len(EVENTS) and all(
                (d.status, d.attempts) == (DeliveryStatus.RETRYING, 1) for d in deliveries
            )

        # The first test of the module: the services may still be starting.
        await eventually(first_attempts_failed, within=60, interval=0.1, what="first attempts")

        advanced = await http.post(
            "/sandbox/clock/advance", json={"seconds": 4 * 3600}, headers=auth(merchant)
        )
        assert advanced.status_code == 200, advanced.text
        assert advanced.json()["data"]["webhookRetriesReleased"] == len(EVENTS)

        async def all_parked() -> list[WebhookDelivery] | None:
            deliveries = await deliveries_of(sessions, payout_id)
            done = all(d.status == DeliveryStatus.PARKED for d in deliveries)
            return deliveries if done else None

        # Hours of retries, in seconds: the ladder's first wait is the only real one left.
        deliveries = await eventually(all_parked, within=60, interval=0.1, what="parked")
        assert advanced.headers["Sandbox-Clock-Settled"] == "true"

        # The TTL copies of the first tier come back after their real wait, and are dropped. Counted
        # from now: copies that earlier modules left in the vhost's queues (their webhook service
        # stopped) may be dropped as superseded too, at this one's start. Awaiting exactly 3.0
        # failed once in CI's serial tier, and passed alone.
        metrics = f"http://127.0.0.1:{system.metrics_ports[WEBHOOKS.name]}/metrics"

        async def superseded() -> float:
            scraped = (await http.get(metrics)).text
            lines = [line for line in scraped.splitlines() if line.startswith(SUPERSEDED_METRIC)]
            return float(lines[0].split()[-1]) if lines else 0.0

        before = await superseded()

        async def copies_dropped() -> float | None:
            dropped = await superseded() - before
            return dropped if dropped >= len(EVENTS) else None

        await eventually(copies_dropped, within=45, interval=0.2, what="TTL copies dropped")

        for delivery in await deliveries_of(sessions, payout_id):
            assert (delivery.status, delivery.attempts) == (DeliveryStatus.PARKED, ATTEMPTS)
            assert await attempt_numbers(sessions, delivery.id) == [
                (number, 500) for number in range(1, ATTEMPTS + 1)
            ]
        assert sorted(d.event_type for d in deliveries) == sorted(EVENTS)
        assert len(receiver.requests) == len(EVENTS) * ATTEMPTS
        parked = await rabbit.take(WEBHOOK_PARKING_LOT)
        mine = [m for m in parked if (m.headers or {}).get("x-payout-id") == payout_id]
        assert sorted(retry_count(m.headers) for m in mine) == [ATTEMPTS] * len(EVENTS)


async def test_an_advance_while_attempts_are_under_way_counts_for_their_retries(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    """A failed attempt's retry was timed on the clock offset read when its delivery was leased:
    an advance made during the call did not count, and the next retry waited its whole step (10
    minutes of real time on this ladder) instead of running within the advance."""
    answered = asyncio.Event()
    async with WebhookReceiver() as receiver:
        receiver.always(Reply(500))
        # The first attempts fail at once; the second ones are under way until told.
        failed_at_once = [Reply(500)] * len(EVENTS)
        receiver.reply_with(*failed_at_once, *[Reply(500, held_until=answered)] * len(EVENTS))
        merchant = await make_merchant(webhook_url=receiver.url)
        created = await http.post("/payouts", json=payout_body(), headers=auth(merchant))
        assert created.status_code == 201, created.text
        payout_id = created.json()["data"]["id"]

        async def second_attempts_under_way() -> bool:
            return len(receiver.requests) == 2 * len(EVENTS)

        await eventually(second_attempts_under_way, within=60, interval=0.1, what="2nd attempts")
        advance = asyncio.create_task(
            http.post("/sandbox/clock/advance", json={"seconds": 4 * 3600}, headers=auth(merchant))
        )

        async def advanced() -> bool:
            clock = await http.get("/sandbox/clock", headers=auth(merchant, ""))
            return bool(clock.json()["data"]["offsetSeconds"] == 4 * 3600)

        await eventually(advanced, within=5, interval=0.05, what="the clock advanced")
        answered.set()  # the calls end after the advance: their retries fall in its window

        async def all_parked() -> bool:
            deliveries = await deliveries_of(sessions, payout_id)
            return len(deliveries) == len(EVENTS) and all(
                (d.status, d.attempts) == (DeliveryStatus.PARKED, ATTEMPTS) for d in deliveries
            )

        await eventually(all_parked, within=60, interval=0.1, what="parked within the advance")
        assert (await advance).status_code == 200
    # The copies the advance sent of the attempts under way found them leased, and wait a step
    # of this ladder (10 minutes) in its second tier. The tiers are the vhost's, shared with the
    # next modules' systems, whose shorter waits in that tier would queue behind them (a quorum
    # queue expires only the message at its head): a fault test's webhooks waited past its
    # deadline.
    queue = webhook_events_queue(len(LADDER))
    await rabbit.purge(*queue.waiting_queues())
