"""Payouts started several at once (a payroll's chunk) are relayed after, and processed and
delivered beside, the payouts started one at a time: one merchant's payroll of 5,000 held another
merchant's single payout behind it for 10 s to its final status and 17 s to its last webhook,
against 0.07 s when idle (neighbours review)."""

from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, utcnow
from contracts.db.models import OutboxMessage, Payout
from contracts.domain.statuses import PayoutStatus
from contracts.settings import Settings
from contracts.topology import (
    BULK_EVENTS_EXCHANGE,
    BULK_PAYOUT_COMMANDS,
    EVENT_EXCHANGES,
    EVENTS_EXCHANGE,
    PAYOUT_COMMANDS,
    PAYOUT_ID_HEADER,
    PROCESS_PAYOUT_KEY,
    PROCESS_PAYOUTS_IN_BULK_KEY,
)
from processor_service.app import create_processor
from processor_service.outbox_relay import CLAIM
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.api_helpers import API, auth, create_payout, outbox_for_payout, payout_body
from tests.support.polling import eventually
from tests.support.processing import everything_due_published, running_processor_and_relay
from tests.support.webhook_flow import (
    purge_webhook_queues,
    quick_webhook_settings,
    running_webhook_service,
)
from tests.support.webhook_receiver import ReceivedRequest, WebhookReceiver

PAYROLL = 400
SUCCESS_ACCOUNT = "03001230001"
TRANSIENT_ACCOUNT = "03001230002"  # attempt 1: RETRY after the retry queue's delay; then SUCCESS


async def _payroll(client: httpx.AsyncClient, merchant: NewMerchant, size: int) -> list[str]:
    response = await client.post(
        f"{API}/payouts/batch",
        json={"payouts": [payout_body() for _ in range(size)]},
        headers=auth(merchant),
    )
    assert response.status_code == 200, response.text
    return [item["payout"]["id"] for item in response.json()["data"]["results"]]


async def _command_keys(sessions: SessionFactory, payout_id: str) -> list[str]:
    rows = await outbox_for_payout(sessions, payout_id)
    return [row.routing_key for row in rows if row.exchange == "payouts.commands"]


async def test_a_payrolls_commands_go_to_the_bulk_queue_and_a_single_payouts_do_not(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()

    first, _ = await _payroll(api_client, merchant, 2)
    single = await create_payout(api_client, merchant)
    (alone,) = await _payroll(api_client, merchant, 1)

    assert await _command_keys(sessions, first) == [PROCESS_PAYOUTS_IN_BULK_KEY]
    assert await _command_keys(sessions, single["id"]) == [PROCESS_PAYOUT_KEY]
    assert await _command_keys(sessions, alone) == [PROCESS_PAYOUT_KEY]


async def _not_final(sessions: SessionFactory, payout_ids: list[str]) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Payout)
                .where(Payout.id.in_(payout_ids), Payout.status != PayoutStatus.SUCCESS.value)
            )
            or 0
        )


async def _final_after(sessions: SessionFactory, payout_ids: list[str], single: str) -> int:
    """How many of `payout_ids` reached SUCCESS after the single payout did (or not yet): read
    from the payouts' own change times, not from when a poll noticed the single final."""
    async with sessions() as session:
        single_done = await session.scalar(select(Payout.updated_at).where(Payout.id == single))
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Payout)
                .where(
                    Payout.id.in_(payout_ids),
                    (Payout.status != PayoutStatus.SUCCESS.value)
                    | (Payout.updated_at > single_done),
                )
            )
            or 0
        )


async def test_a_single_payout_is_processed_beside_a_payroll_not_behind_it(
    settings: Settings,
    engine: AsyncEngine,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    # Earlier tests' commands out of the way, published and purged: their unsent rows, relayed
    # with the payroll's, were ahead of the single payout in its queue (CI).
    await everything_due_published(settings, engine, sessions)
    lanes = (PAYOUT_COMMANDS, BULK_PAYOUT_COMMANDS)
    await rabbit.purge(*(name for lane in lanes for name in (lane.name, lane.retry_queue(1))))
    payroll_merchant, other = await make_merchant(), await make_merchant()
    # The payroll's commands all queued before the single payout is created.
    payroll = await _payroll(api_client, payroll_merchant, PAYROLL)
    await everything_due_published(settings, engine, sessions)
    single = (await create_payout(api_client, other))["id"]
    await everything_due_published(settings, engine, sessions)
    async with create_processor(settings):

        async def single_is_final() -> bool:
            return await _not_final(sessions, [single]) == 0

        await eventually(single_is_final, what="the single payout final")
        after_the_single = await _final_after(sessions, payroll, single)

    # Behind the payroll (one queue), none is after it; beside it, 390 or more here. Read from the
    # payouts' change times: counted when a 10 ms poll saw the single payout final, CI's slow,
    # shared host once found 176 still to go.
    assert after_the_single >= PAYROLL // 4, "the single payout waited behind the payroll"


async def test_the_relay_publishes_a_single_payouts_rows_before_a_payrolls(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Its command and its event were behind the payroll's 10,000 rows in the relay: 3 s."""
    payroll_merchant, other = await make_merchant(), await make_merchant()
    payroll = set(await _payroll(api_client, payroll_merchant, 50))
    single = (await create_payout(api_client, other))["id"]

    async with sessions() as session:
        due = await session.scalars(CLAIM.params(now=utcnow(), batch_size=1_000_000))
        order = [row.headers[PAYOUT_ID_HEADER] for row in due]
        await session.rollback()

    singles = [index for index, payout_id in enumerate(order) if payout_id == single]
    payrolls = [index for index, payout_id in enumerate(order) if payout_id in payroll]
    assert len(singles) == 2 and len(payrolls) == 100
    assert max(singles) < min(payrolls)


@pytest.mark.parametrize(
    ("account", "event_types"),
    [
        (SUCCESS_ACCOUNT, ["payout.created", "payout.processing", "payout.succeeded"]),
        # RETRY, and processed again from the retry queue: its later events went to the other
        # lane and overtook the payroll's backlog, its `payout.created` among it (diff review).
        (
            TRANSIENT_ACCOUNT,
            [
                "payout.created",
                "payout.processing",
                "payout.retrying",
                "payout.processing",
                "payout.succeeded",
            ],
        ),
    ],
    ids=["succeeding", "retried"],
)
async def test_a_payrolls_payouts_stay_in_the_bulk_lane_from_their_creation_to_their_end(
    settings: Settings,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    account: str,
    event_types: list[str],
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/payouts/batch",
        json={"payouts": [payout_body(accountNumber=account) for _ in range(2)]},
        headers=auth(merchant),
    )
    assert response.status_code == 200, response.text
    in_bulk = response.json()["data"]["results"][0]["payout"]["id"]
    single = (await create_payout(api_client, merchant, accountNumber=account))["id"]
    async with running_processor_and_relay(settings):

        async def all_final() -> bool:
            return await _not_final(sessions, [in_bulk, single]) == 0

        await eventually(all_final, within=60, what="the payouts final")

    for payout_id, lane in [(in_bulk, BULK_EVENTS_EXCHANGE), (single, EVENTS_EXCHANGE)]:
        rows = await outbox_for_payout(sessions, payout_id)
        events = [row for row in rows if row.exchange in EVENT_EXCHANGES]
        assert [row.routing_key for row in events] == event_types
        assert {row.exchange for row in events} == {lane}


def _payout_of(request: ReceivedRequest) -> str:
    payout_id: str = orjson.loads(request.body)["payout"]["id"]
    return payout_id


async def test_a_single_payouts_webhooks_are_delivered_beside_a_payrolls_not_behind_them(
    settings: Settings,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    await purge_webhook_queues(rabbit, settings)
    async with WebhookReceiver() as receiver:
        payroll_merchant = await make_merchant(webhook_url=receiver.url)
        other = await make_merchant(webhook_url=receiver.url)
        async with running_processor_and_relay(settings):
            # The payroll's webhooks all queued before the single payout is created.
            payroll = await _payroll(api_client, payroll_merchant, PAYROLL // 2)
            await eventually(_all_relayed(sessions, payroll), within=60, what="the payroll")
            single = (await create_payout(api_client, other))["id"]
            await eventually(_all_relayed(sessions, [single]), what="the single payout")

        async with running_webhook_service(quick_webhook_settings(settings)):

            async def single_delivered() -> bool:
                return [_payout_of(r) for r in receiver.requests].count(single) == 3

            await eventually(single_delivered, what="the single payout's webhooks")

    # In the order received, not as many as a poll found: the deliveries go on meanwhile.
    received = [_payout_of(request) for request in receiver.requests]
    last_of_the_single = max(
        index for index, payout_id in enumerate(received) if payout_id == single
    )
    payrolls_delivered_first = last_of_the_single + 1 - 3
    assert payrolls_delivered_first <= len(payroll) * 3 // 2, "delivered behind the payroll's"
    await purge_webhook_queues(rabbit, settings)


def _all_relayed(sessions: SessionFactory, payout_ids: list[str]) -> Callable[[], Awaitable[bool]]:
    """The payouts final, and every message of theirs published."""

    async def relayed() -> bool:
        if await _not_final(sessions, payout_ids):
            return False
        async with sessions() as session:
            unsent = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.headers[PAYOUT_ID_HEADER].as_string().in_(payout_ids),
                    OutboxMessage.sent_at.is_(None),
                )
            )
        return unsent == 0

    return relayed
