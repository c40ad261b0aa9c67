"""A payout started several at once (`payouts.in_bulk`) keeps its messages in the bulk lanes on
the paths that are not the happy path: the relay's sweeps, the sandbox clock, resends, replays,
redrives, reinitiation. Every webhook copy went to the single payouts' queue, where its retries
then stayed; queued payouts released together switched lanes halfway, and a merchant got
`payout.dequeued` before `payout.queued` (lanes review)."""

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from cli.merchants import NewMerchant
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, Payout, PayoutEvent, WebhookDelivery
from contracts.dead_letters import redrive
from contracts.outbox import IN_BULK_DUE_AT
from contracts.settings import Settings
from contracts.topology import (
    BULK_EVENTS_EXCHANGE,
    COMMANDS_EXCHANGE,
    EVENT_EXCHANGES,
    MERCHANT_ID_HEADER,
    PAYOUT_ID_HEADER,
    PROCESS_PAYOUTS_IN_BULK_KEY,
    WEBHOOK_PARKING_LOT,
    declare_topology_at,
    webhook_events_queue,
)
from contracts.webhooks import DeliveryStatus, resend_routing_key
from processor_service.stalled_deliveries import resend_stalled_deliveries
from processor_service.stalled_payouts import resend_stalled_payout_commands
from processor_service.stalled_retries import resend_stalled_retries
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.api_helpers import API, auth, fail_payout, outbox_for_payout, payout_body
from tests.support.delivery_records import seed_delivery
from webhook_service.parking_lot import replay_parked

BULK_WEBHOOKS = resend_routing_key(in_bulk=True)
RECEIVER = "http://127.0.0.1:9/hook"
STALLED = 3600


async def _bulk_payout(client: httpx.AsyncClient, merchant: NewMerchant) -> str:
    response = await client.post(
        f"{API}/payouts/batch",
        json={"payouts": [payout_body() for _ in range(2)]},
        headers=auth(merchant),
    )
    assert response.status_code == 200, response.text
    payout_id: str = response.json()["data"]["results"][0]["payout"]["id"]
    return payout_id


async def _created_event(sessions: SessionFactory, payout_id: str) -> PayoutEvent:
    async with sessions() as session:
        event = await session.scalar(
            select(PayoutEvent).where(
                PayoutEvent.payout_id == payout_id, PayoutEvent.type == "payout.created"
            )
        )
    assert event is not None
    return event


async def _last_outbox_id(sessions: SessionFactory) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.max(OutboxMessage.id))) or 0)


async def _webhook_copies_since(
    sessions: SessionFactory, payout_id: str, last_id: int
) -> list[tuple[str, object]]:
    """(queue, due time) of the payout's webhook copies written after `last_id`."""
    rows = await outbox_for_payout(sessions, payout_id)
    return [
        (row.routing_key, row.next_attempt_at)
        for row in rows
        if row.id > last_id and row.exchange not in {*EVENT_EXCHANGES, COMMANDS_EXCHANGE}
    ]


async def _delivery(
    sessions: SessionFactory,
    event: PayoutEvent,
    status: DeliveryStatus,
    *,
    due_in: timedelta = timedelta(0),
    waited: timedelta = timedelta(0),
) -> str:
    """A delivery after one failed attempt; RETRYING, due `due_in` from now after waiting
    `waited`."""
    now = utcnow()
    delivery_id = await seed_delivery(
        sessions, event, status, [(500, None)], created_at=now + due_in - waited
    )
    if status is DeliveryStatus.RETRYING:
        async with transaction(sessions) as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id)
                .values(retry_count=1, next_attempt_at=now + due_in)
            )
    return delivery_id


async def test_the_stalled_delivery_sweep_copies_a_bulk_payouts_event_into_its_lane(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    payout_id = await _bulk_payout(api_client, await make_merchant(webhook_url=RECEIVER))
    event = await _created_event(sessions, payout_id)
    async with transaction(sessions) as session:  # its message died before any batch took it
        await session.execute(
            update(PayoutEvent)
            .where(PayoutEvent.id == event.id)
            .values(created_at=utcnow() - timedelta(seconds=2 * STALLED))
        )
    last_id = await _last_outbox_id(sessions)

    await resend_stalled_deliveries(sessions, stalled_seconds=STALLED)

    assert await _webhook_copies_since(sessions, payout_id, last_id) == [
        (BULK_WEBHOOKS, IN_BULK_DUE_AT)
    ]


async def test_the_stalled_retry_sweep_copies_a_bulk_payouts_retry_into_its_lane(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    payout_id = await _bulk_payout(api_client, await make_merchant(webhook_url=RECEIVER))
    event = await _created_event(sessions, payout_id)
    await _delivery(
        sessions,
        event,
        DeliveryStatus.RETRYING,
        due_in=-timedelta(hours=2),
        waited=timedelta(minutes=5),
    )
    last_id = await _last_outbox_id(sessions)

    await resend_stalled_retries(sessions, stalled_seconds=60, time=SANDBOX_TIME)

    assert await _webhook_copies_since(sessions, payout_id, last_id) == [
        (BULK_WEBHOOKS, IN_BULK_DUE_AT)
    ]


async def test_a_clock_advance_sends_a_bulk_payouts_due_retry_into_its_lane(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(webhook_url=RECEIVER)
    payout_id = await _bulk_payout(api_client, merchant)
    event = await _created_event(sessions, payout_id)
    await _delivery(
        sessions,
        event,
        DeliveryStatus.RETRYING,
        due_in=timedelta(hours=1),
        waited=timedelta(hours=1),
    )
    last_id = await _last_outbox_id(sessions)

    advanced = await api_client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 7200}, headers=auth(merchant)
    )

    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["data"]["webhookRetriesReleased"] == 1
    assert await _webhook_copies_since(sessions, payout_id, last_id) == [
        (BULK_WEBHOOKS, IN_BULK_DUE_AT)
    ]


async def test_a_resend_of_a_bulk_payouts_delivery_goes_to_its_lane(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(webhook_url=RECEIVER)
    payout_id = await _bulk_payout(api_client, merchant)
    event = await _created_event(sessions, payout_id)
    delivery_id = await _delivery(sessions, event, DeliveryStatus.PARKED)
    last_id = await _last_outbox_id(sessions)

    response = await api_client.post(
        f"{API}/webhooks/deliveries/{delivery_id}/resend", headers=auth(merchant)
    )

    assert response.status_code == 202, response.text
    assert await _webhook_copies_since(sessions, payout_id, last_id) == [
        (BULK_WEBHOOKS, IN_BULK_DUE_AT)
    ]


async def test_a_replayed_parked_webhook_of_a_bulk_payout_goes_back_to_its_lane(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    settings: Settings,
) -> None:
    tiers = len(settings.webhook_retry_ladder)
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=tiers)
    single_lane = webhook_events_queue(tiers).name
    await rabbit.purge(WEBHOOK_PARKING_LOT, single_lane, BULK_WEBHOOKS)
    merchant = await make_merchant(webhook_url=RECEIVER)
    payout_id = await _bulk_payout(api_client, merchant)
    event = await _created_event(sessions, payout_id)
    await _delivery(sessions, event, DeliveryStatus.PARKED)
    await rabbit.publish(  # as the webhook service parks it after its last tier
        event.body,
        exchange="",
        routing_key=WEBHOOK_PARKING_LOT,
        message_id=str(uuid.uuid4()),
        headers={PAYOUT_ID_HEADER: payout_id, MERCHANT_ID_HEADER: merchant.merchant_id},
    )

    result = await replay_parked(settings.amqp_url, sessions, merchant_id=merchant.merchant_id)

    assert result.moved == 1
    assert len(await rabbit.take(BULK_WEBHOOKS)) == 1
    assert await rabbit.take(single_lane) == []


async def test_the_stalled_payout_sweep_sends_a_bulk_payouts_command_to_its_lane(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    payout_id = await _bulk_payout(api_client, await make_merchant())
    async with transaction(sessions) as session:  # its first command died in the DLQ
        await session.execute(
            update(Payout)
            .where(Payout.id == payout_id)
            .values(updated_at=utcnow() - timedelta(seconds=2 * STALLED))
        )
    last_id = await _last_outbox_id(sessions)

    await resend_stalled_payout_commands(sessions, stalled_seconds=STALLED, retry_delay_seconds=2)

    rows = [row for row in await outbox_for_payout(sessions, payout_id) if row.id > last_id]
    assert [(row.exchange, row.routing_key, row.next_attempt_at) for row in rows] == [
        (COMMANDS_EXCHANGE, PROCESS_PAYOUTS_IN_BULK_KEY, IN_BULK_DUE_AT)
    ]


async def test_a_reinitiated_bulk_payout_stays_in_its_lane(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    payout_id = await _bulk_payout(api_client, merchant)
    await fail_payout(sessions, payout_id)
    last_id = await _last_outbox_id(sessions)

    response = await api_client.post(
        f"{API}/payouts/{payout_id}/reinitiate", headers=auth(merchant)
    )

    assert response.status_code == 200, response.text
    rows = [row for row in await outbox_for_payout(sessions, payout_id) if row.id > last_id]
    assert sorted((row.exchange, row.routing_key, row.next_attempt_at) for row in rows) == [
        (COMMANDS_EXCHANGE, PROCESS_PAYOUTS_IN_BULK_KEY, IN_BULK_DUE_AT),
        (BULK_EVENTS_EXCHANGE, "payout.reinitiated", IN_BULK_DUE_AT),
    ]


async def test_queued_payouts_released_together_stay_in_the_lane_they_were_created_in(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="0.00")
    queued = []
    for _ in range(2):
        response = await api_client.post(
            f"{API}/payouts", json=payout_body(queueIfLowBalance=True), headers=auth(merchant)
        )
        assert response.status_code == 201, response.text
        assert response.json()["data"]["status"] == "QUEUED"
        queued.append(response.json()["data"]["id"])

    topped = await api_client.post(
        f"{API}/sandbox/top-up", json={"amount": "1000.00"}, headers=auth(merchant)
    )

    assert topped.status_code == 200, topped.text
    assert len(topped.json()["data"]["startedPayouts"]) == 2
    for payout_id in queued:
        rows = await outbox_for_payout(sessions, payout_id)
        events = [
            (row.routing_key, row.exchange) for row in rows if row.exchange in EVENT_EXCHANGES
        ]
        assert [routing_key for routing_key, _ in events] == ["payout.queued", "payout.dequeued"]
        assert len({exchange for _, exchange in events}) == 1, events


@pytest.mark.parametrize(
    "work_queue", ["processor.payout-commands.bulk", "webhooks.payout-events.bulk"]
)
async def test_a_redrive_of_a_bulk_queues_dead_letters_returns_them_to_that_queue(
    rabbit: RabbitClient, settings: Settings, work_queue: str
) -> None:
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    single = work_queue.removesuffix(".bulk")
    await rabbit.purge(work_queue, f"{work_queue}.dead", single)
    await rabbit.publish(
        b"{}", exchange="", routing_key=f"{work_queue}.dead", message_id=str(uuid.uuid4())
    )

    assert (await redrive(settings.amqp_url, work_queue, 10)).moved == 1
    assert (len(await rabbit.take(work_queue)), len(await rabbit.take(single))) == (1, 0)
