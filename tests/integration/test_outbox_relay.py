"""The outbox relay against the real MariaDB and RabbitMQ: what it publishes, how, and what it
marks sent. No processor runs here, so the work queues keep what the relay put in them."""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from aio_pika import DeliveryMode
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import delete, insert, select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, Payout, ProcessedMessage
from contracts.messages import PayoutStatusChanged, ProcessPayout
from contracts.outbox import add_to_outbox
from contracts.payout_events import request_processing
from contracts.settings import Settings
from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    MERCHANT_ID_HEADER,
    PAYOUT_COMMANDS,
    PAYOUT_ID_HEADER,
    SCHEMA_HEADER,
    declare_topology_at,
)
from processor_service.housekeeping import clean_up
from processor_service.outbox_relay import OutboxRelay, Publisher, RoundResult, open_publisher
from processor_service.relay_service import run_outbox_relay
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually, open_rabbit
from tests.support.api_helpers import API, auth, outbox_for_payout, payout_body

COMMAND_QUEUES = (PAYOUT_COMMANDS.name, PAYOUT_COMMANDS.retry_queue(1))


@pytest.fixture(scope="module", autouse=True)
async def clean_slate(settings: Settings, sessions: SessionFactory) -> None:
    """The topology declared, and whatever earlier tests left in the outbox sent already, so that
    each test's relay rounds carry that test's rows."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    connection, publisher = await open_publisher(settings.amqp_url)
    async with connection:
        await relay_until_idle(OutboxRelay(sessions, publisher, batch_size=500))


@pytest.fixture
async def rabbit(settings: Settings) -> AsyncIterator[RabbitClient]:
    """Command queues emptied before and after, so no test sees another's messages."""
    async with open_rabbit(settings.amqp_url) as client:
        await client.purge(*COMMAND_QUEUES)
        yield client
        await client.purge(*COMMAND_QUEUES)


class HeldPublisher(Publisher):
    """Publishes to the real broker, but only once released: holds a relay mid-round, its claim
    still open."""

    def __init__(self, channel: AbstractChannel) -> None:
        super().__init__(channel)
        self.publishing = asyncio.Event()
        self.released = asyncio.Event()

    async def publish(self, row: OutboxMessage) -> None:
        self.publishing.set()
        await self.released.wait()
        await super().publish(row)


RelayFactory = Callable[..., Awaitable[OutboxRelay]]


@pytest.fixture
async def make_relay(settings: Settings, sessions: SessionFactory) -> AsyncIterator[RelayFactory]:
    """Relays with a publisher (and a connection) each, as separate relay processes have."""
    connections: list[AbstractRobustConnection] = []

    async def factory(batch_size: int = 200, *, held: bool = False) -> OutboxRelay:
        connection, publisher = await open_publisher(settings.amqp_url)
        connections.append(connection)
        if held:
            publisher = HeldPublisher(publisher.channel)
        return OutboxRelay(sessions, publisher, batch_size=batch_size)

    yield factory
    for connection in connections:
        await connection.close()


@pytest.fixture
async def scratch_payout_id(sessions: SessionFactory) -> AsyncIterator[str]:
    """A made-up payout id for outbox rows the test writes; they are deleted afterwards so that
    no later relay round keeps retrying them."""
    payout_id = str(uuid.uuid4())
    yield payout_id
    await delete_rows(sessions, payout_id)


async def delete_rows(sessions: SessionFactory, payout_id: str) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.headers[PAYOUT_ID_HEADER].as_string() == payout_id
            )
        )


async def relay_until_idle(relay: OutboxRelay, max_rounds: int = 50) -> list[RoundResult]:
    """Rounds until one sends nothing (rows that can never be published stay behind)."""
    rounds = []
    for _ in range(max_rounds):
        rounds.append(await relay.relay_once())
        if rounds[-1].sent == 0:
            return rounds
    raise AssertionError(f"relay still sending after {max_rounds} rounds: {rounds}")


async def create_payout_as(
    client: httpx.AsyncClient, merchant: NewMerchant, request_id: str | None = None
) -> dict[str, Any]:
    """A payout created through the API, under the given X-Request-ID."""
    headers = {**auth(merchant), "X-Request-ID": request_id or f"req-{uuid.uuid4().hex}"}
    response = await client.post(f"{API}/payouts", json=payout_body(), headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def by_message_id(messages: list[AbstractIncomingMessage]) -> dict[str, AbstractIncomingMessage]:
    return {str(message.message_id): message for message in messages}


async def write_rows(
    sessions: SessionFactory,
    payout_id: str,
    *,
    exchange: str,
    routing_key: str,
    count: int = 1,
    delay_ms: int | None = None,
) -> list[OutboxMessage]:
    """`count` outbox rows under `payout_id`, written the way every service writes them."""
    async with transaction(sessions) as session:
        for _ in range(count):
            await add_to_outbox(
                session,
                ProcessPayout(payout_id=payout_id, merchant_id="scratch"),
                exchange=exchange,
                routing_key=routing_key,
                payout_id=payout_id,
                merchant_id="scratch",
                correlation_id=None,
                delay_ms=delay_ms,
            )
    return await outbox_for_payout(sessions, payout_id)


async def test_created_payout_rows_are_published_as_the_contract_says(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
) -> None:
    merchant = await make_merchant()
    events_probe = await rabbit.bind_probe(EVENTS_EXCHANGE, "payout.#")
    request_id = f"req-relay-{uuid.uuid4().hex}"
    payout = await create_payout_as(api_client, merchant, request_id)
    rows = {row.routing_key: row for row in await outbox_for_payout(sessions, payout["id"])}
    assert set(rows) == {"payout.created", "payout.process"}
    assert all(row.sent_at is None for row in rows.values())
    relaying_from = utcnow()

    await relay_until_idle(await make_relay())

    command = by_message_id(await rabbit.take(PAYOUT_COMMANDS.name))[str(rows["payout.process"].id)]
    event = by_message_id(await rabbit.take(events_probe))[str(rows["payout.created"].id)]
    for message, schema in ((command, "ProcessPayout"), (event, "PayoutStatusChanged")):
        assert message.delivery_mode == DeliveryMode.PERSISTENT
        assert message.correlation_id == request_id
        assert message.content_type == "application/json"
        assert message.headers[PAYOUT_ID_HEADER] == payout["id"]
        assert message.headers[MERCHANT_ID_HEADER] == merchant.merchant_id
        assert message.headers[SCHEMA_HEADER] == schema
    assert ProcessPayout.model_validate_json(command.body) == ProcessPayout(
        payout_id=payout["id"], merchant_id=merchant.merchant_id
    )
    created = PayoutStatusChanged.model_validate_json(event.body)
    assert (event.routing_key, created.type, created.payout.id) == (
        "payout.created",
        "payout.created",
        payout["id"],
    )
    for row in await outbox_for_payout(sessions, payout["id"]):
        assert row.sent_at is not None and row.sent_at >= relaying_from
        assert (row.publish_attempts, row.last_error) == (0, None)


async def test_unroutable_row_stays_unsent_and_does_not_block_the_others(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
    scratch_payout_id: str,
) -> None:
    [unroutable] = await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key="test.unbound"
    )
    merchant = await make_merchant()
    payout = await create_payout_as(api_client, merchant)
    relay = await make_relay()

    await relay.relay_once()
    await relay.relay_once()

    [after] = await outbox_for_payout(sessions, scratch_payout_id)
    assert after.sent_at is None
    assert after.publish_attempts == 2  # once per round
    assert after.last_error and "NO_ROUTE" in after.last_error.upper()
    good = await outbox_for_payout(sessions, payout["id"])
    assert all(row.sent_at is not None for row in good)
    delivered = by_message_id(await rabbit.take(PAYOUT_COMMANDS.name))
    assert str(unroutable.id) not in delivered
    assert {str(row.id) for row in good if row.routing_key == "payout.process"} <= set(delivered)


async def test_an_unroutable_row_does_not_slow_the_relay_loop(
    settings: Settings, sessions: SessionFactory, rabbit: RabbitClient, scratch_payout_id: str
) -> None:
    await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key="test.unbound"
    )
    stop = asyncio.Event()
    relay_loop = asyncio.create_task(run_outbox_relay(settings, stop))
    try:

        async def failed_six_rounds() -> None:
            [row] = await outbox_for_payout(sessions, scratch_payout_id)
            assert row.publish_attempts >= 6

        await eventually(failed_six_rounds)
        probe = await rabbit.probe_queue()
        fresh_payout_id = str(uuid.uuid4())
        await write_rows(sessions, fresh_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=probe)
        written = time.monotonic()

        async def fresh_row_sent() -> None:
            [row] = await outbox_for_payout(sessions, fresh_payout_id)
            assert row.sent_at is not None

        await eventually(fresh_row_sent)
        assert time.monotonic() - written < 0.5
    finally:
        stop.set()
        await relay_loop


async def test_row_the_broker_refuses_is_not_marked_sent(
    sessions: SessionFactory, rabbit: RabbitClient, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    """A full queue with `reject-publish` makes the broker nack: no ack, so not sent."""
    full = await rabbit.probe_queue({"x-max-length": 0, "x-overflow": "reject-publish"})
    [row] = await write_rows(
        sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=full
    )

    await (await make_relay()).relay_once()

    [after] = await outbox_for_payout(sessions, scratch_payout_id)
    assert (after.id, after.sent_at, after.publish_attempts) == (row.id, None, 1)
    assert after.last_error and "Nack" in after.last_error


async def test_two_relays_publish_every_row_exactly_once(
    sessions: SessionFactory, rabbit: RabbitClient, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    probe = await rabbit.probe_queue()
    rows = await write_rows(
        sessions,
        scratch_payout_id,
        exchange=DEFAULT_EXCHANGE,
        routing_key=probe,
        count=300,
    )
    first, second = await make_relay(batch_size=50), await make_relay(batch_size=50)

    totals = Counter[str]()
    while True:
        rounds = await asyncio.gather(first.relay_once(), second.relay_once())
        totals.update(first=rounds[0].sent, second=rounds[1].sent)
        if not any(result.claimed for result in rounds):
            break

    published = Counter(str(message.message_id) for message in await rabbit.take(probe))
    assert published == Counter({str(row.id): 1 for row in rows})
    assert totals["first"] + totals["second"] == 300
    assert all(
        row.sent_at is not None for row in await outbox_for_payout(sessions, scratch_payout_id)
    )


async def test_a_second_relay_claims_other_rows_while_the_first_is_publishing(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
    scratch_payout_id: str,
) -> None:
    probe = await rabbit.probe_queue()
    rows = await write_rows(
        sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=probe, count=20
    )
    first = await make_relay(batch_size=10, held=True)
    second = await make_relay(batch_size=10)
    assert isinstance(first.publisher, HeldPublisher)
    first_round = asyncio.create_task(first.relay_once())
    await asyncio.wait_for(first.publisher.publishing.wait(), timeout=5)
    try:
        second_round = await second.relay_once()
    finally:
        first.publisher.released.set()

    assert ((await first_round).sent, second_round.sent) == (10, 10)
    published = Counter(str(message.message_id) for message in await rabbit.take(probe))
    assert published == Counter({str(row.id): 1 for row in rows})


async def test_delayed_row_waits_in_the_retry_queue_then_reaches_the_work_queue(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
) -> None:
    merchant = await make_merchant()
    created = await create_payout_as(api_client, merchant)
    relay = await make_relay()
    await relay_until_idle(relay)
    await rabbit.purge(PAYOUT_COMMANDS.name)
    async with transaction(sessions) as session:
        payout = await session.get_one(Payout, created["id"])
        await request_processing(session, payout, correlation_id="req-delayed", delay_ms=1000)
    [delayed] = [row for row in await outbox_for_payout(sessions, created["id"]) if row.delay_ms]

    await relay_until_idle(relay)
    published_at = time.monotonic()

    assert await rabbit.count(PAYOUT_COMMANDS.retry_queue(1)) == 1
    assert await rabbit.count(PAYOUT_COMMANDS.name) == 0

    async def arrived() -> AbstractIncomingMessage:
        messages = await rabbit.take(PAYOUT_COMMANDS.name)
        assert messages, "not back in the work queue yet"
        [message] = messages
        return message

    message = await eventually(arrived, timeout=5)
    assert time.monotonic() - published_at >= 0.9
    assert message.message_id == str(delayed.id)
    assert message.correlation_id == "req-delayed"
    assert orjson.loads(message.body)["payoutId"] == created["id"]
    assert await rabbit.count(PAYOUT_COMMANDS.retry_queue(1)) == 0


async def test_housekeeping_deletes_sent_rows_past_retention_and_keeps_unsent(
    sessions: SessionFactory,
) -> None:
    now = utcnow()
    payout_id = str(uuid.uuid4())
    ages = {"old-sent": timedelta(hours=25), "new-sent": timedelta(hours=1), "old-unsent": None}
    async with transaction(sessions) as session:
        for name, sent_age in ages.items():
            await session.execute(
                insert(OutboxMessage).values(
                    exchange=COMMANDS_EXCHANGE,
                    routing_key=name,
                    body=b"{}",
                    headers={PAYOUT_ID_HEADER: payout_id},
                    created_at=now - timedelta(hours=48),
                    sent_at=None if sent_age is None else now - sent_age,
                    publish_attempts=0,
                )
            )
        inbox = [("old", now - timedelta(days=8)), ("new", now - timedelta(days=1))]
        for name, processed_at in inbox:
            await session.execute(
                insert(ProcessedMessage).values(
                    consumer="test-housekeeping",
                    message_id=f"{payout_id}-{name}",
                    processed_at=processed_at,
                )
            )

    try:
        deleted = await clean_up(sessions, outbox_retention=timedelta(hours=24))
        kept = {row.routing_key for row in await outbox_for_payout(sessions, payout_id)}
    finally:
        await delete_rows(sessions, payout_id)

    assert kept == {"new-sent", "old-unsent"}
    async with sessions() as session:
        inbox_kept = set(
            await session.scalars(
                select(ProcessedMessage.message_id).where(
                    ProcessedMessage.consumer == "test-housekeeping"
                )
            )
        )
    assert inbox_kept == {f"{payout_id}-new"}
    assert deleted >= 2
