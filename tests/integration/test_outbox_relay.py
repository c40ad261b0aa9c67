"""The outbox relay against the real MariaDB and RabbitMQ: what it publishes, how, and what it
marks sent. No processor runs here, so the work queues keep what the relay put in them."""

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aio_pika import DeliveryMode
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from prometheus_client import REGISTRY
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

import processor_service.relay_service as relay_service
from cli.merchants import NewMerchant
from contracts.amqp_connection import HEARTBEAT_SECONDS
from contracts.broker import create_broker
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import (
    IdempotencyKey,
    OutboxMessage,
    Payout,
    ProcessedMessage,
    ScheduledAction,
)
from contracts.logging import ContextFilter
from contracts.messages import PayoutStatusChanged, ProcessPayout
from contracts.outbox import outbox_row, write_outbox
from contracts.payout_events import Announcements
from contracts.pipeline_health import (
    MAX_REPORTED,
    Thresholds,
    parked_outbox_rows,
    pipeline_problems,
)
from contracts.settings import Settings
from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    MERCHANT_ID_HEADER,
    PAYOUT_COMMANDS,
    PAYOUT_ID_HEADER,
    SCHEMA_HEADER,
)
from processor_service import housekeeping
from processor_service.housekeeping import clean_up, cleanup_deletes
from processor_service.outbox_relay import (
    ANY_DUE,
    CLAIM,
    DueProbe,
    OutboxRelay,
    Publisher,
    RoundResult,
    open_publisher,
    retry_parked,
)
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually, open_rabbit
from tests.support.api_helpers import API, auth, outbox_for_payout, payout_body
from tests.support.infrastructure import Infrastructure
from tests.support.processing import everything_due_published, relay_until_idle
from tests.support.queue_policies import length_limit
from tests.support.statements import counting_statements, explain, statements_built

COMMAND_QUEUES = (PAYOUT_COMMANDS.name, PAYOUT_COMMANDS.retry_queue(1))
UNANSWERED_KEY = "test.unanswered"


@pytest.fixture(scope="module", autouse=True)
async def clean_slate(settings: Settings, engine: AsyncEngine, sessions: SessionFactory) -> None:
    """The topology declared, and whatever earlier tests left in the outbox sent already, so that
    each test's relay rounds carry that test's rows."""
    await everything_due_published(settings, engine, sessions)


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

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        super().__init__(connection, channel)
        self.publishing = asyncio.Event()
        self.released = asyncio.Event()

    async def publish(self, row: OutboxMessage) -> None:
        self.publishing.set()
        await self.released.wait()
        await super().publish(row)


class UnansweredPublisher(Publisher):
    """Publishes to the real broker, except rows routed to UNANSWERED_KEY: those time out, as
    when the broker is overloaded or the connection drops before the confirm."""

    def unanswered(self) -> Exception:
        return TimeoutError("no confirm within the publish timeout")

    async def publish(self, row: OutboxMessage) -> None:
        if row.routing_key == UNANSWERED_KEY:
            raise self.unanswered()
        await super().publish(row)


class ReconnectingPublisher(UnansweredPublisher):
    """As aio-pika answers a channel asked for while its robust connection reconnects."""

    def unanswered(self) -> Exception:
        return RuntimeError("Connection was not opened")


RelayFactory = Callable[..., Awaitable[OutboxRelay]]


@pytest.fixture
async def make_relay(
    settings: Settings, engine: AsyncEngine, sessions: SessionFactory
) -> AsyncIterator[RelayFactory]:
    """Relays with a publisher (and a connection) and a probe each, as separate relay processes
    have."""
    connections: list[AbstractRobustConnection] = []
    probes: list[DueProbe] = []

    async def factory(
        batch_size: int = 200,
        *,
        max_attempts: int = settings.relay_max_publish_attempts,
        publisher_type: type[Publisher] = Publisher,
    ) -> OutboxRelay:
        connection, publisher = await open_publisher(settings.amqp_url)
        connections.append(connection)
        probes.append(DueProbe(engine))
        return OutboxRelay(
            sessions,
            publisher_type(connection, publisher.channel),
            probes[-1],
            batch_size=batch_size,
            max_attempts=max_attempts,
        )

    yield factory
    for connection in connections:
        await connection.close()
    for probe in probes:
        await probe.aclose()


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


async def make_due(sessions: SessionFactory, payout_id: str) -> None:
    """Ends the backoff of the payout's rows, as if their wait were over."""
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.headers[PAYOUT_ID_HEADER].as_string() == payout_id)
            .values(next_attempt_at=utcnow())
        )


def unbound_key() -> str:
    """A routing key no queue is bound to (yet) on the commands exchange."""
    return f"test.unbound.{uuid.uuid4().hex[:12]}"


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
    extra_headers: dict[str, Any] | None = None,
) -> list[OutboxMessage]:
    """`count` outbox rows under `payout_id`, written the way every service writes them."""
    merchant_id = str(uuid.uuid4())  # of no merchant: nothing consumes these rows
    row = outbox_row(
        ProcessPayout(payout_id=payout_id, merchant_id=merchant_id),
        exchange=exchange,
        routing_key=routing_key,
        payout_id=payout_id,
        merchant_id=merchant_id,
        correlation_id=None,
        delay_ms=delay_ms,
        extra_headers=extra_headers,
    )
    async with transaction(sessions) as session:
        await write_outbox(session, [dict(row) for _ in range(count)])
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
        payout_id=payout["id"], merchant_id=merchant.merchant_id, attempt=0, hold_cycle=1
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


async def test_unroutable_row_stays_unsent_and_does_not_block_the_others_or_the_loop(
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
    relaying_from = utcnow()

    first = await relay.relay_once()
    await relay.relay_once()

    # Refused, not unanswered: the row's problem, not the broker's, so the relay loop does not
    # back off (RelayPacing.after_round, tests/unit/test_relay_pace.py). No clock is read here.
    assert first.unanswered == 0 and first.sent >= 2
    [after] = await outbox_for_payout(sessions, scratch_payout_id)
    assert after.sent_at is None
    assert after.publish_attempts == 1  # the second round found it backing off
    assert after.next_attempt_at > relaying_from
    assert after.last_error and "NO_ROUTE" in after.last_error.upper()
    good = await outbox_for_payout(sessions, payout["id"])
    assert all(row.sent_at is not None for row in good)
    delivered = by_message_id(await rabbit.take(PAYOUT_COMMANDS.name))
    assert str(unroutable.id) not in delivered
    assert {str(row.id) for row in good if row.routing_key == "payout.process"} <= set(delivered)


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


async def test_a_full_queue_takes_the_rows_once_its_limit_is_lifted(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
    scratch_payout_id: str,
    infrastructure: Infrastructure,
) -> None:
    """A quorum work queue (reject-publish, as the topology declares them) held at its length by
    an operator's policy nacks the relay's channel; once the policy is gone RabbitMQ kept
    nacking that channel (a new one's publishes were taken), and the rows backed off until
    they were parked: only a restart of the relay sent them."""
    queue = f"test-quorum.{uuid.uuid4().hex[:12]}"
    await rabbit.channel.declare_queue(
        queue, durable=True, arguments={"x-queue-type": "quorum", "x-overflow": "reject-publish"}
    )
    relay = await make_relay()
    try:
        async with length_limit(infrastructure, queue, 1):
            for _ in range(10):  # until the queue is full (a quorum queue's limit is loose)
                await write_rows(
                    sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=queue
                )
                if not (await relay.relay_once()).sent:
                    break
            else:
                raise AssertionError("the queue took every row")
        await rabbit.purge(queue)
        await make_due(sessions, scratch_payout_id)

        assert (await relay.relay_once()).sent == 1
    finally:
        await rabbit.channel.queue_delete(queue)


async def test_a_row_whose_exchange_is_missing_is_refused_and_its_batch_still_sent(
    sessions: SessionFactory, rabbit: RabbitClient, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    """The broker closes the channel over a publish to a missing exchange, failing every publish
    in flight with it. Taken for an outage, the row was never backed off: first in every claim,
    it closed the channel each round, and the rows after it were never sent."""
    [missing] = await write_rows(
        sessions,
        scratch_payout_id,
        exchange=f"payouts.missing-{uuid.uuid4().hex[:8]}",
        routing_key="payout.process",
    )
    probe = await rabbit.probe_queue()
    _, *good = await write_rows(
        sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=probe, count=3
    )
    relay = await make_relay()

    async def good_rows_sent() -> dict[int, OutboxMessage]:
        await relay.relay_once()
        rows = {row.id: row for row in await outbox_for_payout(sessions, scratch_payout_id)}
        assert all(rows[row.id].sent_at is not None for row in good), "the batch was not sent"
        return rows

    after = await eventually(good_rows_sent, timeout=15)

    refused = after[missing.id]
    assert refused.sent_at is None and refused.publish_attempts >= 1
    assert refused.last_error and "no exchange" in refused.last_error


async def test_a_row_at_the_old_attempt_limit_is_parked_and_its_batch_still_sent(
    settings: Settings,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
    scratch_payout_id: str,
) -> None:
    """Defect 6: the SMALLINT count overflowed past 32767 and the error rolled back the whole
    batch, sent marks included, so the batch was published again every round."""
    probe = await rabbit.probe_queue()
    good = await write_rows(
        sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=probe, count=3
    )
    key = unbound_key()
    *_, stuck = await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key=key
    )
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id == stuck.id).values(publish_attempts=32767)
        )

    await (await make_relay()).relay_once()

    after = {row.id: row for row in await outbox_for_payout(sessions, scratch_payout_id)}
    assert all(after[row.id].sent_at is not None for row in good)
    published = Counter(str(message.message_id) for message in await rabbit.take(probe))
    assert published == Counter({str(row.id): 1 for row in good})
    parked = after[stuck.id]
    assert parked.sent_at is None and parked.parked_at is not None
    assert parked.publish_attempts == settings.relay_max_publish_attempts
    async with sessions() as session:
        problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
    [problem] = [problem for problem in problems if f"outbox row {stuck.id} " in problem]
    assert key in problem and "NO_ROUTE" in problem


async def refused_round(
    relay: OutboxRelay, sessions: SessionFactory, payout_id: str
) -> tuple[OutboxMessage, timedelta, timedelta]:
    """The payout's one row made due and relayed once: the row, and the shortest and longest
    wait its next_attempt_at can mean (the round took some time)."""
    await make_due(sessions, payout_id)
    started = utcnow()
    await relay.relay_once()
    finished = utcnow()
    [row] = await outbox_for_payout(sessions, payout_id)
    return row, row.next_attempt_at - finished, row.next_attempt_at - started


async def test_a_refused_row_waits_twice_as_long_after_each_refusal_up_to_five_minutes(
    sessions: SessionFactory, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key=unbound_key()
    )
    relay = await make_relay()
    for attempts, wait in ((1, 1), (2, 2), (3, 4)):
        row, shortest, longest = await refused_round(relay, sessions, scratch_payout_id)
        assert row.publish_attempts == attempts
        assert shortest <= timedelta(seconds=wait) <= longest

    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id == row.id).values(publish_attempts=15)
        )
    row, shortest, longest = await refused_round(relay, sessions, scratch_payout_id)
    assert (row.publish_attempts, row.parked_at) == (16, None)
    assert shortest <= timedelta(minutes=5) <= longest


async def test_the_lag_gauge_counts_a_row_backing_off(
    settings: Settings, sessions: SessionFactory, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    """`payouts_outbox_lag_seconds` was read from the claimed batches, and set to 0 by every
    round that found no row due: while the broker's refusals held every unsent row in its
    backoff, it said nothing lagged (metrics review)."""
    [row] = await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key=unbound_key()
    )
    relay = await make_relay()
    await relay.relay_once()  # refused: it waits a second
    async with transaction(sessions) as session:
        two_minutes_ago = utcnow() - timedelta(minutes=2)
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .values(created_at=two_minutes_ago, next_attempt_at=utcnow() + timedelta(hours=1))
        )
    [lag_chore] = [
        c for c in relay_service.housekeeping(settings, sessions) if c.name == "outbox-lag"
    ]

    await lag_chore.run_if_due()
    await relay.relay_once(probe_first=True)  # no row due

    assert (REGISTRY.get_sample_value("payouts_outbox_lag_seconds") or 0) >= 120


@pytest.mark.parametrize("publisher", [UnansweredPublisher, ReconnectingPublisher])
async def test_a_publish_the_broker_never_answered_costs_the_row_nothing(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
    scratch_payout_id: str,
    publisher: type[Publisher],
) -> None:
    """A timeout or a lost connection is an outage, not the row's fault: the relay loop backs
    off as a whole, and the row keeps its turn and its attempts. (A connection reconnecting
    too: counted against the rows, it parked them after an outage of an hour; diff review.)"""
    probe = await rabbit.probe_queue()
    good = await write_rows(
        sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=probe, count=2
    )
    *_, unanswered = await write_rows(
        sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=UNANSWERED_KEY
    )

    result = await (await make_relay(publisher_type=publisher)).relay_once()

    assert result.unanswered == 1
    after = {row.id: row for row in await outbox_for_payout(sessions, scratch_payout_id)}
    assert all(after[row.id].sent_at is not None for row in good)
    kept = after[unanswered.id]
    assert (kept.sent_at, kept.publish_attempts, kept.last_error) == (None, 0, None)
    assert kept.next_attempt_at <= utcnow()  # still due: no backoff


async def test_a_row_whose_message_cannot_be_built_backs_off_and_is_parked(
    sessions: SessionFactory, rabbit: RabbitClient, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    """A row that fails its publish the same way every time (a header AMQP cannot encode, which
    the JSON column takes) is the row's problem, like a refusal: it backs off, and is parked
    after its last attempt. It passed for a publish the broker never answered: it stayed due
    with no attempt counted, so rows like it at the outbox's head were claimed first in every
    round and the rows behind them were never sent (found by the relay review)."""
    probe = await rabbit.probe_queue()
    poison = {"x-poison": 2**64}  # pamqp: "Unsupported numeric value"
    await write_rows(
        sessions,
        scratch_payout_id,
        exchange=DEFAULT_EXCHANGE,
        routing_key=probe,
        count=2,
        extra_headers=poison,
    )
    await write_rows(sessions, scratch_payout_id, exchange=DEFAULT_EXCHANGE, routing_key=probe)
    relay = await make_relay(batch_size=2, max_attempts=2)

    first, second = await relay.relay_once(), await relay.relay_once()

    assert (first.claimed, first.sent, first.unanswered) == (2, 0, 0)
    assert (second.claimed, second.sent) == (1, 1)  # the row behind them
    assert await rabbit.count(probe) == 1
    await make_due(sessions, scratch_payout_id)
    await relay.relay_once()
    stuck = [
        row for row in await outbox_for_payout(sessions, scratch_payout_id) if row.sent_at is None
    ]
    assert [(row.publish_attempts, row.parked_at is not None) for row in stuck] == [(2, True)] * 2
    assert all("Unsupported numeric value" in (row.last_error or "") for row in stuck)


async def test_a_row_is_parked_after_its_last_attempt_and_never_claimed_again(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    make_relay: RelayFactory,
    scratch_payout_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = unbound_key()
    [row] = await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key=key
    )
    relay = await make_relay(max_attempts=3)
    caplog.handler.addFilter(ContextFilter())  # the ids a line is about, as our handler adds
    with caplog.at_level(logging.WARNING, logger="outbox-relay"):
        for _ in range(3):
            await refused_round(relay, sessions, scratch_payout_id)
    # Each refusal and the parking named the payout (a trace by payout id missed them).
    said = [
        r for r in caplog.records if r.name == "outbox-relay" and f"row {row.id} " in r.msg % r.args
    ]
    assert [getattr(r, "payout_id", None) for r in said] == [scratch_payout_id] * 3
    assert "parked after 3 refusals" in said[-1].getMessage()
    [parked] = await outbox_for_payout(sessions, scratch_payout_id)
    assert (parked.sent_at, parked.publish_attempts) == (None, 3)
    assert parked.parked_at is not None

    probe = await rabbit.bind_probe(COMMANDS_EXCHANGE, key)  # it would be routable now
    after, _, _ = await refused_round(relay, sessions, scratch_payout_id)
    assert (after.sent_at, after.parked_at, after.publish_attempts) == (None, parked.parked_at, 3)
    assert await rabbit.count(probe) == 0
    async with sessions() as session:
        assert row.id in {listed.id for listed in await parked_outbox_rows(session, 1000)}
        problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
    [problem] = [problem for problem in problems if f"outbox row {row.id} " in problem]
    assert key in problem and "NO_ROUTE" in problem


async def test_reconcile_says_how_many_parked_rows_it_did_not_list(
    sessions: SessionFactory, scratch_payout_id: str
) -> None:
    """It listed the oldest 20 and said "20 problem(s)", without a word of the others."""
    rows = await write_rows(
        sessions,
        scratch_payout_id,
        exchange=COMMANDS_EXCHANGE,
        routing_key=unbound_key(),
        count=MAX_REPORTED + 2,
    )
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([row.id for row in rows]))
            .values(parked_at=utcnow(), publish_attempts=20, last_error="NO_ROUTE")
        )
    async with sessions() as session:
        problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        parked = len(await parked_outbox_rows(session, 100_000))
    listed = [problem for problem in problems if problem.startswith("outbox row ")]
    assert len(listed) == MAX_REPORTED
    assert f"... and {parked - MAX_REPORTED} more parked outbox rows not listed" in problems


async def test_operator_retry_hands_parked_rows_back_to_the_relay(
    sessions: SessionFactory, rabbit: RabbitClient, make_relay: RelayFactory, scratch_payout_id: str
) -> None:
    """`payouts outbox retry ID` unparks one row, `--all` every parked row; the relay then
    publishes them like new ones."""
    key = unbound_key()
    first, second = await write_rows(
        sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key=key, count=2
    )
    relay = await make_relay(max_attempts=1)
    await relay.relay_once()  # refused once: parked at once
    assert all(row.parked_at for row in await outbox_for_payout(sessions, scratch_payout_id))
    probe = await rabbit.bind_probe(COMMANDS_EXCHANGE, key)  # the operator fixed the cause

    async with transaction(sessions) as session:
        assert await retry_parked(session, first.id) == 1
        assert await retry_parked(session, first.id) == 0  # no longer parked
    retried = {row.id: row for row in await outbox_for_payout(sessions, scratch_payout_id)}
    assert (retried[first.id].parked_at, retried[first.id].publish_attempts) == (None, 0)
    await relay.relay_once()
    assert [str(message.message_id) for message in await rabbit.take(probe)] == [str(first.id)]
    assert retried[second.id].parked_at is not None

    async with transaction(sessions) as session:
        assert await retry_parked(session, None) == 1
    await relay.relay_once()
    assert [str(message.message_id) for message in await rabbit.take(probe)] == [str(second.id)]
    assert all(row.sent_at for row in await outbox_for_payout(sessions, scratch_payout_id))


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
    first = await make_relay(batch_size=10, publisher_type=HeldPublisher)
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
        announcements = Announcements("req-delayed")
        announcements.process(payout, delay_ms=1000)
        await announcements.write(session)
    [delayed] = [row for row in await outbox_for_payout(sessions, created["id"]) if row.delay_ms]

    publishing_from = time.monotonic()  # before: the wait measured is never shorter than 1 s
    await relay_until_idle(relay)

    assert await rabbit.count(PAYOUT_COMMANDS.retry_queue(1)) == 1
    assert await rabbit.count(PAYOUT_COMMANDS.name) == 0

    async def arrived() -> AbstractIncomingMessage:
        messages = await rabbit.take(PAYOUT_COMMANDS.name)
        assert messages, "not back in the work queue yet"
        [message] = messages
        return message

    message = await eventually(arrived, timeout=5)
    assert time.monotonic() - publishing_from >= 0.95  # 1 s, less the broker clock's rounding
    assert message.message_id == str(delayed.id)
    assert message.correlation_id == "req-delayed"
    assert orjson.loads(message.body)["payoutId"] == created["id"]
    assert await rabbit.count(PAYOUT_COMMANDS.retry_queue(1)) == 0


async def test_the_relay_and_the_consumers_notice_a_silent_broker_within_a_minute(
    settings: Settings,
) -> None:
    """Their connections ask for 15-second heartbeats: with aiormq's default of 60 s, a broker
    gone silent (a node powered off, a network dropping packets) was noticed after 183 s, the
    relay and the consumers idle meanwhile."""
    connection, _ = await open_publisher(settings.amqp_url)
    async with connection:
        relay_heartbeat = connection.transport.connection.heartbeat_timeout
    broker = create_broker(settings.amqp_url, prefetch=1)
    consumer_connection = await broker.connect()
    try:
        consumer_heartbeat = consumer_connection.transport.connection.heartbeat_timeout
    finally:
        await broker.stop()

    assert relay_heartbeat == consumer_heartbeat == HEARTBEAT_SECONDS


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


def scheduled_action(merchant_id: str, applied_at: datetime | None) -> dict[str, Any]:
    due = utcnow() - timedelta(days=9)
    return {
        "merchant_id": merchant_id,
        "payout_id": str(uuid.uuid4()),
        "hold_cycle": 1,
        "action": "SCRIPT_STEP",
        "expected_status": "PROCESSING",
        "due_at": due,
        "created_at": due,
        "applied_at": applied_at,
    }


@asynccontextmanager
async def scheduled_actions(
    sessions: SessionFactory, actions: list[dict[str, Any]]
) -> AsyncIterator[list[str]]:
    """These actions stored (of one merchant); the payout ids of those still stored at the end,
    then deleted."""
    merchant_id = actions[0]["merchant_id"]
    async with transaction(sessions) as session:
        await session.execute(insert(ScheduledAction), actions)
    kept: list[str] = []
    try:
        yield kept
    finally:
        async with transaction(sessions) as session:
            mine = ScheduledAction.merchant_id == merchant_id
            kept.extend(await session.scalars(select(ScheduledAction.payout_id).where(mine)))
            await session.execute(delete(ScheduledAction).where(mine))


async def test_housekeeping_deletes_a_backlog_of_old_applied_actions_in_one_round(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler deleted one batch every 5 minutes (17 rows/s): a load test of ON_HOLD
    payouts at 100/s outgrew it for good. Applied actions older than the retention now go in
    batches until none is left; those applied since, or not yet, stay."""
    monkeypatch.setattr(housekeeping, "BATCH", 2)
    merchant_id, now = str(uuid.uuid4()), utcnow()
    old = [scheduled_action(merchant_id, now - timedelta(days=8)) for _ in range(5)]
    recent = scheduled_action(merchant_id, now - timedelta(days=6))
    pending = scheduled_action(merchant_id, None)

    async with scheduled_actions(sessions, [*old, recent, pending]) as kept:
        await housekeeping.clean_up(sessions, outbox_retention=timedelta(hours=24))

    assert sorted(kept) == sorted([recent["payout_id"], pending["payout_id"]])


async def test_housekeeping_keeps_a_key_inside_its_window_on_the_database_clock(
    sessions: SessionFactory, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API stamps and judges a key's expiry on the database's clock: a relay whose host
    clock ran 5 minutes ahead deleted keys 2 minutes before their retries stopped replaying."""
    merchant, key = await make_merchant(), str(uuid.uuid4())
    async with transaction(sessions) as session:
        database_now = await session.scalar(text("SELECT UTC_TIMESTAMP(6)"))
        session.add(
            IdempotencyKey(
                merchant_id=merchant.merchant_id,
                key=key,
                method="POST",
                path="/api/v1/payouts",
                request_hash="a" * 64,
                locked_at=database_now - timedelta(days=1),
                created_at=database_now - timedelta(days=1),
                expires_at=database_now + timedelta(minutes=2),
            )
        )
    monkeypatch.setattr(housekeeping, "utcnow", lambda: database_now + timedelta(minutes=5))

    await housekeeping.clean_up(sessions, outbox_retention=timedelta(hours=24))

    async with sessions() as session:
        kept = await session.scalar(select(IdempotencyKey.key).where(IdempotencyKey.key == key))
    assert kept == key


async def test_the_relay_publishes_while_a_housekeeping_chore_is_under_way(
    settings: Settings,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    scratch_payout_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Housekeeping runs beside the rounds: a clean-up that takes long (a big table, a lock
    wait) delays no message."""
    cleaning, cleaned = asyncio.Event(), asyncio.Event()

    async def slow_clean_up(*args: Any, **kwargs: Any) -> int:
        cleaning.set()
        await cleaned.wait()
        return 0

    monkeypatch.setattr(relay_service, "clean_up", slow_clean_up)
    key = unbound_key()
    probe = await rabbit.bind_probe(COMMANDS_EXCHANGE, key)
    stop = asyncio.Event()
    relay = asyncio.create_task(relay_service.run_outbox_relay(settings, stop))
    try:
        await asyncio.wait_for(cleaning.wait(), timeout=10)
        await write_rows(sessions, scratch_payout_id, exchange=COMMANDS_EXCHANGE, routing_key=key)

        async def published() -> None:
            assert await rabbit.count(probe) == 1

        await eventually(published)
        assert not cleaned.is_set()  # the clean-up is still under way
    finally:
        cleaned.set()
        stop.set()
        await relay


CLEANUP_INDEXES = {
    "outbox": "ix_outbox_claim",
    "processed_messages": "ix_processed_messages_processed_at",
    "idempotency_keys": "ix_idempotency_expires",
    "api_requests": "ix_api_requests_started_at",
    "scheduled_actions": "ix_scheduled_actions_claim",
}


async def test_the_claim_and_every_cleanup_delete_read_an_index(sessions: SessionFactory) -> None:
    """The claim reads ix_outbox_claim in order (no filesort: FOR UPDATE then locks only the
    batch), the idle relay's probe reads it too; each housekeeping batch is a range on an index,
    not a scan of a hot table."""
    now = utcnow()
    [plan] = await explain(sessions, CLAIM.params(now=now, batch_size=200))
    assert (plan["type"], plan["key"]) == ("range", "ix_outbox_claim"), plan
    assert "filesort" not in (plan["Extra"] or ""), plan
    [plan] = await explain(sessions, ANY_DUE.params(now=now))
    assert (plan["type"], plan["key"]) == ("range", "ix_outbox_claim"), plan
    # Scheduled actions in the table, none applied: the other tests may have left it empty, and
    # the server scans an empty table whatever its indexes.
    merchant_id = str(uuid.uuid4())
    pending = [scheduled_action(merchant_id, None) for _ in range(500)]
    async with scheduled_actions(sessions, pending):
        for statement in cleanup_deletes(now, outbox_retention=timedelta(hours=24)):
            # Then a failed action's payout, by its primary key (one still waiting is kept).
            plan, *payouts = await explain(sessions, statement)
            assert (plan["type"], plan["key"]) == ("range", CLEANUP_INDEXES[plan["table"]]), plan
            assert all(row["key"] == "PRIMARY" for row in payouts), payouts


async def test_a_relay_round_builds_no_statement_of_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, make_relay: RelayFactory
) -> None:
    """The claim and the marking of sent rows are built once per process: a round neither builds
    them nor walks them for their cache keys (with the ORM's bulk UPDATE, a round did both)."""
    merchant = await make_merchant()
    relay = await make_relay()
    await create_payout_as(api_client, merchant, f"req-{uuid.uuid4().hex}")
    await relay_until_idle(relay)
    await create_payout_as(api_client, merchant, f"req-{uuid.uuid4().hex}")

    with statements_built() as built:
        sent = (await relay.relay_once()).sent

    assert sent >= 2
    assert built == []


async def test_an_idle_relay_polls_with_one_read_and_no_transaction(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, make_relay: RelayFactory
) -> None:
    """An idle relay's round (probe_first) is the probe's one read while nothing is due: no
    locking claim, no commit; once a row is due it probes, then claims. A busy relay's round
    claims at once."""
    merchant = await make_merchant()
    relay = await make_relay()
    await relay_until_idle(relay)
    await relay.relay_once(probe_first=True)  # the probe's connection opened

    with counting_statements() as idle:
        assert await relay.relay_once(probe_first=True) == RoundResult(claimed=0, sent=0)
    assert [kind_of(sql) for sql in idle.statements] == ["probe"], idle.statements
    assert (idle.commits, idle.rollbacks) == (0, 0)

    await create_payout_as(api_client, merchant, f"req-{uuid.uuid4().hex}")
    with counting_statements() as found:
        assert (await relay.relay_once(probe_first=True)).sent >= 2  # created event, command
    assert [kind_of(sql) for sql in found.statements[:2]] == ["probe", "claim"], found.statements

    with counting_statements() as busy:
        await relay.relay_once()
    assert kind_of(busy.statements[0]) == "claim", busy.statements


def kind_of(sql: str) -> str:
    """The probe selects a constant from the outbox, the claim its rows."""
    if sql.startswith("SELECT %s AS anon_1 FROM outbox "):
        return "probe"
    return "claim" if sql.startswith("SELECT outbox.id, ") else sql


async def test_a_probe_whose_connection_died_fails_once_then_reconnects(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """As after a database restart: the round fails (the relay loop backs off), and the next
    probe opens a connection of its own again."""
    probe = DueProbe(engine)
    try:
        await probe.anything_due(utcnow())
        assert probe._connection is not None  # white box: which server thread to kill
        probe_thread = (await probe._connection.exec_driver_sql("SELECT CONNECTION_ID()")).scalar()
        async with transaction(sessions) as session:
            await session.execute(text(f"KILL {int(probe_thread)}"))

        with pytest.raises(DBAPIError):
            await probe.anything_due(utcnow())
        assert await probe.anything_due(utcnow()) in (True, False)
    finally:
        await probe.aclose()
