"""Webhooks through the real processes to a real HTTP receiver: every status change of every
scenario arrives signed; killing the webhook service loses nothing."""

import asyncio
import hashlib
import hmac
import json
import random
from collections import defaultdict
from itertools import groupby
from typing import Any

import httpx
from sqlalchemy import select
from standardwebhooks import Webhook

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import PayoutEvent, WebhookDelivery
from tests.conftest import MerchantFactory
from tests.support.api_helpers import auth
from tests.support.polling import eventually
from tests.support.scenarios import SCENARIOS, Scenario
from tests.support.system import WEBHOOKS, RunningSystem
from tests.support.webhook_receiver import ReceivedRequest, Reply, WebhookReceiver

STATUS_OF_EVENT = {
    "payout.created": "PENDING",
    "payout.processing": "PROCESSING",
    "payout.retrying": "RETRY",
    "payout.succeeded": "SUCCESS",
    "payout.failed": "FAILED",
    "payout.pending": "PENDING",
    "payout.on_hold": "ON_HOLD",
    "payout.in_review": "IN_REVIEW",
}


async def create(http: httpx.AsyncClient, merchant: NewMerchant, scenario: Scenario) -> str:
    response = await http.post("/payouts", json=scenario.request_body(), headers=auth(merchant))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def verified(merchant: NewMerchant, request: ReceivedRequest) -> dict[str, Any]:
    """The body, after checking both signatures the contract promises."""
    payload: dict[str, Any] = Webhook(merchant.webhook_secret).verify(request.body, request.headers)
    expected = hmac.new(merchant.webhook_secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-mypay-signature"] == expected
    assert request.headers["webhook-id"] == payload["id"]
    return payload


def in_time_order(events: list[dict[str, Any]]) -> list[list[str]]:
    """The event types by `createdAt`; changes of the same millisecond (one transaction can make
    two) have no order, and webhooks promise no arrival order: they form a sorted group."""
    by_time = sorted(events, key=lambda e: e["createdAt"])
    return [
        sorted(e["type"] for e in same) for _, same in groupby(by_time, lambda e: e["createdAt"])
    ]


def in_time_order_of(scenario: Scenario, events: list[dict[str, Any]]) -> list[list[str]]:
    """The scenario's event types, grouped like `events` (same sizes, in order)."""
    expected = [t.value for t in scenario.events]
    groups = []
    for size in (len(group) for group in in_time_order(events)):
        groups.append(sorted(expected[:size]))
        expected = expected[size:]
    return groups + ([sorted(expected)] if expected else [])


async def test_every_status_change_of_every_scenario_arrives_signed(
    system: RunningSystem, http: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    async with WebhookReceiver() as receiver:
        merchant = await make_merchant(balance="500000.00", webhook_url=receiver.url)
        scenario_of = {await create(http, merchant, s): s for s in SCENARIOS}
        expected = sum(len(s.events) for s in SCENARIOS)

        requests = await receiver.wait_for_requests(expected, within=30)

    by_payout: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in requests:
        payload = verified(merchant, request)
        by_payout[payload["payout"]["id"]].append(payload)
    assert len(requests) == expected  # nothing extra: no churn from parked payouts
    for payout_id, scenario in scenario_of.items():
        events = by_payout[payout_id]
        assert in_time_order(events) == in_time_order_of(scenario, events), scenario.name
        # each body is the payout as it was at that change, not as it is now
        assert [e["payout"]["status"] for e in events] == [
            STATUS_OF_EVENT[e["type"]] for e in events
        ]


async def test_killing_the_webhook_service_under_load_loses_no_event(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    succeeds = SCENARIOS[0]  # 3 events each: created, processing, succeeded
    chaos = random.Random(4)
    async with WebhookReceiver() as receiver:
        merchant = await make_merchant(balance="500000.00", webhook_url=receiver.url)
        gate = asyncio.Semaphore(16)

        async def create_one() -> str:
            async with gate:
                return await create(http, merchant, succeeds)

        creating = asyncio.gather(*(create_one() for _ in range(100)))
        for _ in range(3):  # SIGKILL mid-delivery, then start it again
            # A killed batch's leases (webhook timeout + 5 s) run out before its events move on.
            await receiver.wait_for_requests(len(receiver.requests) + 20, within=60)
            await asyncio.sleep(chaos.uniform(0, 0.3))
            system.restart(WEBHOOKS)
        await creating

        async def every_event_written() -> set[str] | None:
            """A create's answer means its `created` event; the processor writes the others
            after it (snapshot audit: read once, the last payouts' were missing)."""
            async with sessions() as session:
                ids = set(
                    await session.scalars(
                        select(PayoutEvent.id).where(
                            PayoutEvent.merchant_id == merchant.merchant_id
                        )
                    )
                )
            return ids if len(ids) >= 300 else None

        event_ids = await eventually(every_event_written, within=60, what="300 events written")
        assert len(event_ids) == 300

        async def all_arrived() -> bool:
            return {r.headers["webhook-id"] for r in receiver.requests} >= event_ids

        await eventually(all_arrived, within=60, what="every event delivered")

    received = [json.loads(r.body) for r in receiver.requests]
    assert {e["id"] for e in received} == event_ids  # duplicates only repeat a known webhook-id


async def test_an_attempt_cut_short_by_a_kill_is_made_again_once_its_lease_runs_out(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """SIGKILL mid-attempt: the attempt is never recorded and its lease stays behind; RabbitMQ
    redelivers the unacked message, and the restarted service sends it once the lease ends."""
    succeeds = SCENARIOS[0]
    async with WebhookReceiver() as receiver:
        merchant = await make_merchant(webhook_url=receiver.url)
        receiver.reply_with(Reply(hang=True))  # the first webhook is in flight at the kill
        await create(http, merchant, succeeds)
        in_flight = (await receiver.wait_for_requests(1))[0]
        system.restart(WEBHOOKS)

        async def all_delivered() -> list[WebhookDelivery] | None:
            async with sessions() as session:
                deliveries = list(
                    await session.scalars(
                        select(WebhookDelivery).where(
                            WebhookDelivery.merchant_id == merchant.merchant_id
                        )
                    )
                )
            done = [d for d in deliveries if d.status == "DELIVERED" and d.lease_token is None]
            return deliveries if len(done) == len(succeeds.events) else None

        # The restart, the killed attempt's lease (webhook timeout + 5 s) and a retry step.
        deliveries = await eventually(all_delivered, within=120, what="every event delivered")

    cut_short = [r for r in receiver.requests if r.webhook_id == in_flight.webhook_id]
    assert len(cut_short) == 2  # the killed attempt, then the one after the lease
    (retried,) = [d for d in deliveries if d.event_id == in_flight.webhook_id]
    assert retried.attempts == 1  # the killed attempt left no record
