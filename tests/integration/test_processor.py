"""The processor in-process against the real MariaDB and RabbitMQ, fed by a real relay loop:
every scenario of the contract's table, the retry through the broker, idempotent consumption,
dead-lettering, and PSP callbacks (IPN and sandbox)."""

import asyncio
import hashlib
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from unittest.mock import patch
from urllib.parse import quote

import aio_pika
import httpx
import orjson
import pamqp.common
import pamqp.encode
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select, update

from cli.merchants import NewMerchant, create_merchant
from contracts.db.engine import SessionFactory, begin_snapshot, transaction, utcnow
from contracts.db.models import (
    Balance,
    LedgerJournal,
    LedgerLine,
    OutboxMessage,
    Payout,
    PayoutEvent,
    ProcessedMessage,
)
from contracts.domain.statuses import PspOutcome
from contracts.logging import ContextFilter
from contracts.messages import ApplyPspOutcome, ProcessPayout
from contracts.settings import Settings
from contracts.topology import (
    APPLY_PSP_OUTCOME_KEY,
    COMMANDS_EXCHANGE,
    LAST_ERROR_HEADER,
    MERCHANT_ID_HEADER,
    PAYOUT_COMMANDS,
    PAYOUT_ID_HEADER,
    PROCESS_PAYOUT_KEY,
    PSP_OUTCOMES,
    RETRY_COUNT_HEADER,
)
from processor_service.consumer import inbox_key
from tests.support.amqp import RabbitClient, consistently, dead_letters, eventually, publish_command
from tests.support.api_helpers import API, auth, bank_payout_body, outbox_for_payout, send_ipn
from tests.support.infrastructure import TEST_VHOST, Infrastructure, management_client
from tests.support.processing import running_processor_and_relay

OPENING_BALANCE = Decimal("1000000.00")
HOLD, PAYOUT, RELEASE, REVERSAL = "HOLD", "PAYOUT", "RELEASE", "REVERSAL"
# Long enough for a wrongly re-queued command to come back twice (the test retry delay is 1 s).
QUIET_PERIOD_SECONDS = 2.5
HANDLER_RETRIES = 2


@pytest.fixture(scope="module")
async def processor(settings: Settings, sessions: SessionFactory) -> AsyncIterator[None]:
    """The processor app and an outbox relay loop, both in this process. What earlier tests
    left in the outbox on purpose counts as sent: relayed, it delayed this module's payouts
    behind hundreds of others (their deadlines are this module's)."""
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.parked_at.is_(None))
            .values(sent_at=utcnow())
        )
    # Fewer handler retries than in production, so that a failing message dead-letters fast.
    quick = settings.model_copy(update={"processor_max_handler_retries": HANDLER_RETRIES})
    async with running_processor_and_relay(quick):
        yield


async def new_merchant(sessions: SessionFactory) -> NewMerchant:
    async with transaction(sessions) as session:
        return await create_merchant(
            session, name="Processor test", balance=OPENING_BALANCE, webhook_url=None
        )


async def create(
    client: httpx.AsyncClient, merchant: NewMerchant, amount: str, account_number: str
) -> str:
    """A BANK payout to HBL: the scenario rules look only at the amount and the account."""
    body = bank_payout_body(
        account_number,
        amount=amount,
    )
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    payout_id: str = response.json()["data"]["id"]
    return payout_id


@dataclass(frozen=True)
class PayoutState:
    payout: Payout
    events: list[str]  # event types without the "payout." prefix, in created_at order
    event_times: list[datetime]
    event_statuses: list[str]  # the payout status each event's snapshot carries
    journals: list[str]  # journal kinds in id order

    def seconds_between(self, first: str, then: str) -> float:
        """From the first `first` event to the last `then` event."""
        start = self.event_times[self.events.index(first)]
        end = self.event_times[len(self.events) - 1 - self.events[::-1].index(then)]
        return (end - start).total_seconds()


async def state_of(sessions: SessionFactory, payout_id: str) -> PayoutState:
    """Read in one snapshot: statement by statement (READ COMMITTED), the payout row was read
    before a commit of the processor and its events after it (a reinitiated payout PENDING with
    no PSP reference beside the new attempt's `pending` event; CI's container checks)."""
    async with sessions() as session:
        await begin_snapshot(session)
        payout = await session.get_one(Payout, payout_id)
        events = list(
            await session.scalars(
                select(PayoutEvent)
                .where(PayoutEvent.payout_id == payout_id)
                .order_by(PayoutEvent.created_at)
            )
        )
        journals = await session.scalars(
            select(LedgerJournal.kind)
            .where(LedgerJournal.payout_id == payout_id)
            .order_by(LedgerJournal.id)
        )
        return PayoutState(
            payout=payout,
            events=[event.type.removeprefix("payout.") for event in events],
            event_times=[event.created_at for event in events],
            event_statuses=[orjson.loads(event.body)["payout"]["status"] for event in events],
            journals=list(journals),
        )


async def reaches(
    sessions: SessionFactory, payout_id: str, status: str, events: int
) -> PayoutState:
    """The payout's state once it is in `status` with `events` events recorded."""

    async def check() -> PayoutState:
        state = await state_of(sessions, payout_id)
        assert (state.payout.status, len(state.events)) == (status, events), state.events
        return state

    return await eventually(check)


async def assert_ledger_consistent(
    sessions: SessionFactory, merchant_id: str, *, available: Decimal, held: Decimal
) -> None:
    """Balance row = the given amounts = the sum of the merchant's lines; every journal balances."""
    async with sessions() as session:
        balance = await session.get_one(Balance, merchant_id)
        totals = await session.execute(
            select(LedgerLine.account, func.sum(LedgerLine.amount))
            .where(LedgerLine.merchant_id == merchant_id)
            .group_by(LedgerLine.account)
        )
        sums = {account: total for account, total in totals}
        unbalanced = (
            await session.execute(
                select(LedgerLine.journal_id)
                .join(LedgerJournal, LedgerJournal.id == LedgerLine.journal_id)
                .where(LedgerJournal.merchant_id == merchant_id)
                .group_by(LedgerLine.journal_id)
                .having(func.sum(LedgerLine.amount) != 0)
            )
        ).all()
    assert (balance.available, balance.held) == (available, held)
    assert (sums.get("AVAILABLE"), sums.get("HELD", Decimal("0.00"))) == (available, held)
    assert unbalanced == []


@dataclass(frozen=True)
class Scenario:
    amount: str
    account_number: str
    status: str
    events: list[str]
    journals: list[str]
    attempts: int = 1
    failure_code: str | None = None
    failure_reason: str | None = None

    @property
    def settled(self) -> bool:
        return PAYOUT in self.journals or RELEASE in self.journals


# The contract's scenario table, one row each (first match wins).
SCENARIOS: dict[str, Scenario] = {
    "review": Scenario(
        "100000.00", "1234567890000001", "IN_REVIEW", ["created", "processing", "in_review"], [HOLD]
    ),
    "below-review": Scenario(
        "99999.99",
        "1234567890000001",
        "SUCCESS",
        ["created", "processing", "succeeded"],
        [HOLD, PAYOUT],
    ),
    "0001": Scenario(
        "1500.00",
        "1234567890000001",
        "SUCCESS",
        ["created", "processing", "succeeded"],
        [HOLD, PAYOUT],
    ),
    "0002": Scenario(
        "1500.00",
        "1234567890000002",
        "SUCCESS",
        ["created", "processing", "retrying", "processing", "succeeded"],
        [HOLD, PAYOUT],
        attempts=2,
    ),
    "0003": Scenario(
        "1500.00",
        "1234567890000003",
        "FAILED",
        ["created", "processing", "failed"],
        [HOLD, RELEASE],
        failure_code="ACCOUNT_INVALID",
        failure_reason="Account validation failed",
    ),
    "0004": Scenario(
        "1500.00", "1234567890000004", "PENDING", ["created", "processing", "pending"], [HOLD]
    ),
    "0005": Scenario(
        "1500.00",
        "1234567890000005",
        "ON_HOLD",
        ["created", "processing", "on_hold"],
        [HOLD],
        failure_reason="Account is blocked or restricted",
    ),
    "other": Scenario(
        "1500.00",
        "1234567890004321",
        "SUCCESS",
        ["created", "processing", "succeeded"],
        [HOLD, PAYOUT],
    ),
}
PARKED = ("review", "0004", "0005")
# Each event carries the payout as it was at that change.
EVENT_SNAPSHOT_STATUS = {
    "created": "PENDING",
    "processing": "PROCESSING",
    "retrying": "RETRY",
    "succeeded": "SUCCESS",
    "failed": "FAILED",
    "pending": "PENDING",
    "on_hold": "ON_HOLD",
    "in_review": "IN_REVIEW",
    "reversed": "REVERSED",
}


@dataclass(frozen=True)
class Created:
    merchant: NewMerchant
    payout_id: str


@pytest.fixture(scope="module")
async def scenario_payouts(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory
) -> dict[str, Created]:
    """One payout per scenario, each for a merchant of its own, all created at once."""

    async def one(scenario: Scenario) -> Created:
        merchant = await new_merchant(sessions)
        payout_id = await create(api_client, merchant, scenario.amount, scenario.account_number)
        return Created(merchant, payout_id)

    created = await asyncio.gather(*(one(scenario) for scenario in SCENARIOS.values()))
    return dict(zip(SCENARIOS, created, strict=True))


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario_reaches_its_outcome(
    name: str, scenario_payouts: dict[str, Created], sessions: SessionFactory
) -> None:
    scenario, created = SCENARIOS[name], scenario_payouts[name]

    state = await reaches(sessions, created.payout_id, scenario.status, len(scenario.events))

    assert state.events == scenario.events
    assert state.event_statuses == [EVENT_SNAPSHOT_STATUS[event] for event in state.events]
    assert state.journals == scenario.journals
    payout = state.payout
    assert payout.attempts == scenario.attempts
    assert (payout.failure_code, payout.failure_reason) == (
        scenario.failure_code,
        scenario.failure_reason,
    )
    if scenario.status in ("SUCCESS", "PENDING"):
        assert payout.psp_reference and payout.psp_reference.startswith("PSP-")
    assert (payout.processed_at is not None) == scenario.settled
    amount = Decimal(scenario.amount)
    held = Decimal("0.00") if scenario.settled else amount
    available = OPENING_BALANCE - (Decimal("0.00") if RELEASE in scenario.journals else amount)
    await assert_ledger_consistent(
        sessions, created.merchant.merchant_id, available=available, held=held
    )


async def test_parked_payouts_emit_nothing_more_while_they_wait(
    scenario_payouts: dict[str, Created], sessions: SessionFactory
) -> None:
    """0004, 0005 and IN_REVIEW wait for an IPN: no re-processing, no repeated events."""
    parked = {name: scenario_payouts[name].payout_id for name in PARKED}
    for name, payout_id in parked.items():
        await reaches(sessions, payout_id, SCENARIOS[name].status, len(SCENARIOS[name].events))
    before = {payout_id: await footprint(sessions, payout_id) for payout_id in parked.values()}

    async def unchanged() -> None:
        for payout_id, seen in before.items():
            assert await footprint(sessions, payout_id) == seen

    await consistently(unchanged, QUIET_PERIOD_SECONDS)


async def footprint(sessions: SessionFactory, payout_id: str) -> tuple[Any, ...]:
    """Everything processing a payout again would change."""
    state = await state_of(sessions, payout_id)
    outbox = await outbox_for_payout(sessions, payout_id)
    return (state.payout.updated_at, state.payout.attempts, len(state.events), len(outbox))


async def test_transient_failure_is_retried_through_the_broker_delay(
    scenario_payouts: dict[str, Created], sessions: SessionFactory, settings: Settings
) -> None:
    payout_id = scenario_payouts["0002"].payout_id
    state = await reaches(sessions, payout_id, "SUCCESS", len(SCENARIOS["0002"].events))

    async def retry_sent() -> tuple[Any, Any]:
        """The relay records `sent_at` once the broker confirmed its batch, which may be after
        a consumer applied the message (snapshot audit)."""
        rows = await outbox_for_payout(sessions, payout_id)
        [retry] = [row for row in rows if row.delay_ms]
        [first] = [row for row in rows if row.routing_key == PROCESS_PAYOUT_KEY]
        assert retry.sent_at is not None
        return retry, first

    retry, first = await eventually(retry_sent)
    assert (retry.exchange, retry.routing_key) == ("", PAYOUT_COMMANDS.retry_queue(1))
    assert retry.correlation_id == first.correlation_id  # still traceable to the create request
    assert retry.delay_ms == int(settings.processor_retry_delay_seconds * 1000)
    assert state.seconds_between("retrying", "succeeded") >= 0.9


async def new_payout(
    client: httpx.AsyncClient, sessions: SessionFactory, name: str, status: str, events: int
) -> Created:
    """A payout of scenario `name` (own merchant) once it is in `status` with `events` events."""
    scenario = SCENARIOS[name]
    merchant = await new_merchant(sessions)
    payout_id = await create(client, merchant, scenario.amount, scenario.account_number)
    await reaches(sessions, payout_id, status, events)
    return Created(merchant, payout_id)


async def test_handlers_run_on_the_event_loop_without_a_worker_thread(
    processor: None,
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    worker_thread_calls: list[object],
) -> None:
    """A handler parameter FastStream resolves from its context (the message, say) is resolved by
    a synchronous call that fast_depends runs in a worker thread: a thread hop per message."""
    await new_payout(api_client, sessions, "other", "SUCCESS", events=3)

    assert worker_thread_calls == []


async def test_redelivered_command_is_applied_once(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, rabbit: RabbitClient
) -> None:
    """A 0002 payout in RETRY would be processed again by its first command. The command names
    the attempt it was sent for, and the copies find that attempt made: whatever their message
    id (a copy republished by hand has a new one), success still waits for the delayed command,
    and no inbox row is written for them."""
    created = await new_payout(api_client, sessions, "0002", "RETRY", events=3)
    [command] = [
        row
        for row in await outbox_for_payout(sessions, created.payout_id)
        if row.routing_key == PROCESS_PAYOUT_KEY
    ]
    assert ProcessPayout.model_validate_json(command.body).names_its_attempt
    copies = (str(command.id), f"copy-{uuid.uuid4().hex}")
    for message_id in copies:
        await rabbit.publish(
            command.body,
            exchange=COMMANDS_EXCHANGE,
            routing_key=PROCESS_PAYOUT_KEY,
            message_id=message_id,
            headers=command.headers,
        )

    state = await reaches(sessions, created.payout_id, "SUCCESS", events=5)

    assert state.events == SCENARIOS["0002"].events
    assert state.journals == [HOLD, PAYOUT]
    assert state.payout.attempts == 2
    assert state.seconds_between("retrying", "succeeded") >= 0.9
    async with sessions() as session:
        inbox_rows = await session.scalar(
            select(func.count())
            .select_from(ProcessedMessage)
            .where(ProcessedMessage.consumer == PAYOUT_COMMANDS.name)
            .where(ProcessedMessage.message_id.in_([inbox_key(m, command.body) for m in copies]))
        )
    assert inbox_rows == 0


async def test_malformed_commands_are_dead_lettered_and_do_not_block_the_queue(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, rabbit: RabbitClient
) -> None:
    bad_json = await publish_command(rabbit, b'{"payoutId": ')
    wrong_schema = await publish_command(
        rabbit,
        orjson.dumps({"schemaVersion": 2, "payoutId": str(uuid.uuid4()), "merchantId": "m"}),
    )
    missing_field = await publish_command(rabbit, orjson.dumps({"schemaVersion": 1}))
    # Over the column, and over the server's packet limit in a query: that dropped the
    # connection, and the command was retried as in an outage for as long as the processor ran.
    huge_merchant_id = await publish_command(
        rabbit,
        orjson.dumps(
            {"schemaVersion": 1, "payoutId": str(uuid.uuid4()), "merchantId": "m" * 17 * 2**20}
        ),
    )

    dead = await dead_letters(rabbit, {bad_json, wrong_schema, missing_field, huge_merchant_id})

    assert dead[bad_json].body == b'{"payoutId": '
    reasons = {key: str((dead[key].headers or {})[LAST_ERROR_HEADER]) for key in dead}
    assert reasons[bad_json].startswith("not a valid ProcessPayout: body: Invalid JSON")
    assert "schemaVersion: Input should be 1" in reasons[wrong_schema]
    assert "payoutId: Field required" in reasons[missing_field]
    assert "merchantId: String should have at most 36 characters" in reasons[huge_merchant_id]
    await new_payout(api_client, sessions, "other", "SUCCESS", events=3)


async def test_a_command_whose_message_id_is_not_utf8_is_dead_lettered_not_a_broken_frame(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, rabbit: RabbitClient
) -> None:
    """Another client's message whose message_id is not UTF-8 (RabbitMQ passes it on as sent):
    the AMQP library took its delivery for a broken frame and closed the processor's whole
    connection, again at each delivery, until RabbitMQ's delivery limit: a payout behind it
    settled after 55 s (found by the consumer review). Read with U+FFFD, it is dead-lettered."""
    sent_as_is = pamqp.encode.METHODS["shortstr"]

    def bytes_as_sent(value: object) -> bytes:
        if isinstance(value, bytes):
            return struct.pack("B", len(value)) + value
        return bytes(sent_as_is(value))

    message = aio_pika.Message(b"{}", message_id="set below, past the constructor's checks")
    message.message_id = b"\xff\xfe-id"  # type: ignore[assignment]
    with patch.dict(pamqp.encode.METHODS, {"shortstr": bytes_as_sent}):
        await rabbit.channel.default_exchange.publish(message, routing_key=PAYOUT_COMMANDS.name)

    dead = await dead_letters(rabbit, {"\ufffd\ufffd-id"})

    assert "not a valid ProcessPayout" in str(
        (dead["\ufffd\ufffd-id"].headers or {})[LAST_ERROR_HEADER]
    )
    await new_payout(api_client, sessions, "other", "SUCCESS", events=3)


async def test_a_command_whose_timestamp_is_past_9999_is_dead_lettered_not_a_broken_frame(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, rabbit: RabbitClient
) -> None:
    """The same with a `timestamp` property no datetime holds (milliseconds sent where seconds
    belong, twice over): it too closed the processor's connection at each delivery, the
    payouts behind it held up for about 50 s (dead-letter review). Read as None, the message
    is judged and dead-lettered, and the payout behind it settles at once."""
    sent_as_is = pamqp.encode.METHODS["timestamp"]

    def seconds_as_sent(value: object) -> bytes:
        if isinstance(value, int):
            return pamqp.common.Struct.timestamp.pack(value)
        return bytes(sent_as_is(value))

    message_id = f"ts-{uuid.uuid4().hex}"
    message = aio_pika.Message(b"{}", message_id=message_id)
    message.timestamp = 2**63  # type: ignore[assignment]  # year 292278994, read as ms
    with patch.dict(pamqp.encode.METHODS, {"timestamp": seconds_as_sent}):
        await rabbit.channel.default_exchange.publish(message, routing_key=PAYOUT_COMMANDS.name)

    dead = await dead_letters(rabbit, {message_id})

    assert "not a valid ProcessPayout" in str((dead[message_id].headers or {})[LAST_ERROR_HEADER])
    await new_payout(api_client, sessions, "other", "SUCCESS", events=3)


async def test_a_malformed_command_is_counted_and_its_line_names_its_payout_and_request(
    processor: None, rabbit: RabbitClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Dead-lettered by the decoder, before any handler: it was counted nowhere, and its line
    named neither the payout nor the request its headers carry."""
    payout_id, merchant_id = str(uuid.uuid4()), str(uuid.uuid4())
    labels = {"queue": PAYOUT_COMMANDS.name, "result": "dead_lettered"}
    before = REGISTRY.get_sample_value("payouts_processor_messages_total", labels) or 0.0
    caplog.handler.addFilter(ContextFilter())  # the ids a line is about, as our handler adds
    message_id = f"test-{uuid.uuid4().hex}"
    with caplog.at_level(logging.WARNING, logger="redelivery"):
        await rabbit.publish(
            b'{"payoutId": ',
            exchange=COMMANDS_EXCHANGE,
            routing_key=PROCESS_PAYOUT_KEY,
            message_id=message_id,
            headers={PAYOUT_ID_HEADER: payout_id, MERCHANT_ID_HEADER: merchant_id},
            correlation_id="req-malformed-1",
        )
        await dead_letters(rabbit, {message_id})

    assert REGISTRY.get_sample_value("payouts_processor_messages_total", labels) == before + 1
    (line,) = [r for r in caplog.records if message_id in r.getMessage()]
    ids = ("payout_id", "merchant_id", "correlation_id")
    assert tuple(getattr(line, name, None) for name in ids) == (
        payout_id,
        merchant_id,
        "req-malformed-1",
    )


async def test_command_for_an_unknown_payout_is_dead_lettered(
    processor: None, sessions: SessionFactory, rabbit: RabbitClient
) -> None:
    unknown = ProcessPayout(payout_id=str(uuid.uuid4()), merchant_id=str(uuid.uuid4()))
    message_id = await publish_command(rabbit, unknown.to_json())

    dead = await dead_letters(rabbit, {message_id})

    assert ProcessPayout.model_validate_json(dead[message_id].body) == unknown
    assert str((dead[message_id].headers or {})[LAST_ERROR_HEADER]).startswith("unknown payout")
    async with sessions() as session:
        assert await session.get(Payout, unknown.payout_id) is None


@pytest.mark.parametrize("attempt", ["current", "next"])
async def test_a_psp_outcome_never_recorded_is_dead_lettered_not_dropped(
    processor: None,
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    attempt: str,
) -> None:
    """Its callback row missing (the database restored from a backup taken before the PSP's
    outcome was accepted), the command was acked as "nothing to change": the outcome lost with
    no trace, the payout's funds held (restore review). Dead-lettered, it is there to see."""
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)
    async with sessions() as session:
        payout = await session.get(Payout, created.payout_id)
    assert payout is not None
    outcome = ApplyPspOutcome(
        callback_event_id=f"evt-lost-{uuid.uuid4().hex[:8]}",
        payout_id=payout.id,
        merchant_id=payout.merchant_id,
        # Or of an attempt after it, a reinitiate the restore lost too (second fixes review).
        hold_cycle=payout.hold_cycle + (attempt == "next"),
        outcome=PspOutcome.SUCCESS,
    )
    message_id = f"test-{uuid.uuid4().hex}"
    await rabbit.publish(
        outcome.to_json(),
        exchange=COMMANDS_EXCHANGE,
        routing_key=APPLY_PSP_OUTCOME_KEY,
        message_id=message_id,
    )

    dead = await dead_letters(rabbit, {message_id}, PSP_OUTCOMES)

    reason = str((dead[message_id].headers or {})[LAST_ERROR_HEADER])
    assert reason.startswith(f"PSP outcome {outcome.callback_event_id} was never recorded"), reason
    assert (await state_of(sessions, created.payout_id)).payout.status == "PENDING"


async def test_failing_handler_is_retried_after_the_delay_then_dead_lettered(
    processor: None,
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
    rabbit: RabbitClient,
) -> None:
    """A PAYOUT journal planted for the payout's hold cycle makes posting it fail every time."""
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)
    planted = LedgerJournal(
        merchant_id=created.merchant.merchant_id,
        payout_id=created.payout_id,
        hold_cycle=1,
        kind=PAYOUT,
        description="planted by the test",
        created_at=utcnow(),
    )
    async with transaction(sessions) as session:
        session.add(planted)
    try:
        await accepted(send_ipn(api_client, settings.psp_secret, created.payout_id, "SUCCESS"))
        [command] = [
            row
            for row in await outbox_for_payout(sessions, created.payout_id)
            if row.routing_key == APPLY_PSP_OUTCOME_KEY
        ]
        dead = await dead_letters(rabbit, {str(command.id)}, PSP_OUTCOMES)
    finally:
        async with transaction(sessions) as session:
            await session.execute(delete(LedgerJournal).where(LedgerJournal.id == planted.id))

    headers = dead[str(command.id)].headers
    assert headers[RETRY_COUNT_HEADER] == HANDLER_RETRIES + 1  # failed attempts, incl. the last
    # Each retry's copy kept when the command was first published (they had no timestamp).
    published_at = dead[str(command.id)].timestamp
    assert published_at is not None
    assert published_at.replace(tzinfo=None) == command.created_at.replace(microsecond=0)
    assert "IntegrityError" in str(headers[LAST_ERROR_HEADER])
    state = await state_of(sessions, created.payout_id)
    assert (state.payout.status, len(state.events)) == ("PENDING", 3)
    await assert_ledger_consistent(
        sessions,
        created.merchant.merchant_id,
        available=OPENING_BALANCE - Decimal("1500.00"),
        held=Decimal("1500.00"),
    )
    async with sessions() as session:
        key = (PSP_OUTCOMES.name, inbox_key(str(command.id), command.body))
        assert await session.get(ProcessedMessage, key) is None


async def accepted(response: Awaitable[httpx.Response]) -> dict[str, Any]:
    answer = await response
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


async def test_ipn_success_settles_a_payout_pending_at_the_psp(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)

    await accepted(
        send_ipn(
            api_client, settings.psp_secret, created.payout_id, "SUCCESS", pspReference="BANK-REF-1"
        )
    )

    state = await reaches(sessions, created.payout_id, "SUCCESS", events=4)
    assert state.events[-2:] == ["pending", "succeeded"]
    assert state.journals == [HOLD, PAYOUT]
    assert state.payout.psp_reference == "BANK-REF-1"
    await assert_ledger_consistent(
        sessions,
        created.merchant.merchant_id,
        available=OPENING_BALANCE - Decimal("1500.00"),
        held=Decimal("0.00"),
    )


async def test_replayed_ipn_event_is_applied_once(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)
    event_id = f"evt-{uuid.uuid4().hex}"

    def replay() -> Awaitable[httpx.Response]:
        return send_ipn(
            api_client, settings.psp_secret, created.payout_id, "SUCCESS", event_id=event_id
        )

    first, early_copy = await accepted(replay()), await accepted(replay())
    state = await reaches(sessions, created.payout_id, "SUCCESS", events=4)
    late_copy = await accepted(replay())

    assert [answer["duplicate"] for answer in (first, early_copy, late_copy)] == [
        False,
        True,
        True,
    ]
    assert state.journals == [HOLD, PAYOUT]
    outcomes = [
        row
        for row in await outbox_for_payout(sessions, created.payout_id)
        if row.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    assert len(outcomes) == 1


async def test_reversal_returns_the_money_to_available(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "other", "SUCCESS", events=3)

    await accepted(
        send_ipn(
            api_client,
            settings.psp_secret,
            created.payout_id,
            "REVERSED",
            failureReason="Beneficiary account closed",
        )
    )

    state = await reaches(sessions, created.payout_id, "REVERSED", events=4)
    assert state.events[-1] == "reversed"
    assert state.payout.failure_reason == "Beneficiary account closed"  # the PSP's, not ours
    # A code, as every failure has: a reversal had none (first-integration review).
    assert state.payout.failure_code == "RETURNED_BY_BANK"
    assert state.journals == [HOLD, PAYOUT, REVERSAL]
    await assert_ledger_consistent(
        sessions, created.merchant.merchant_id, available=OPENING_BALANCE, held=Decimal("0.00")
    )


async def test_ipn_failure_releases_the_hold_of_an_on_hold_payout(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0005", "ON_HOLD", events=3)

    await accepted(
        send_ipn(
            api_client,
            settings.psp_secret,
            created.payout_id,
            "FAILED",
            failureReason="Beneficiary blocked",
            pspReference="PSP-REFUSED-0005",
        )
    )

    state = await reaches(sessions, created.payout_id, "FAILED", events=4)
    assert state.events[-2:] == ["on_hold", "failed"]
    assert state.journals == [HOLD, RELEASE]
    assert (state.payout.failure_code, state.payout.failure_reason) == (
        "PSP_REJECTED",
        "Beneficiary blocked",
    )
    assert state.payout.psp_reference == "PSP-REFUSED-0005"  # it was dropped
    await assert_ledger_consistent(
        sessions, created.merchant.merchant_id, available=OPENING_BALANCE, held=Decimal("0.00")
    )


async def test_sandbox_simulation_settles_a_payout_in_review(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    created = await new_payout(api_client, sessions, "review", "IN_REVIEW", events=3)

    response = await api_client.post(
        f"{API}/sandbox/payouts/{created.payout_id}/simulate",
        json={"outcome": "SUCCESS"},
        headers=auth(created.merchant),
    )

    assert response.status_code == 202, response.text
    state = await reaches(sessions, created.payout_id, "SUCCESS", events=4)
    assert state.journals == [HOLD, PAYOUT]
    await assert_ledger_consistent(
        sessions,
        created.merchant.merchant_id,
        available=OPENING_BALANCE - Decimal(SCENARIOS["review"].amount),
        held=Decimal("0.00"),
    )


async def test_ipn_success_during_a_retry_wins_and_the_delayed_retry_changes_nothing(
    processor: None,
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    created = await new_payout(api_client, sessions, "0002", "RETRY", events=3)

    await accepted(send_ipn(api_client, settings.psp_secret, created.payout_id, "SUCCESS"))

    state = await reaches(sessions, created.payout_id, "SUCCESS", events=4)
    assert state.events == ["created", "processing", "retrying", "succeeded"]
    seen = await footprint(sessions, created.payout_id)
    [delayed] = [
        row for row in await outbox_for_payout(sessions, created.payout_id) if row.delay_ms
    ]

    await changed_nothing(caplog, delayed)

    assert await footprint(sessions, created.payout_id) == seen
    assert (await state_of(sessions, created.payout_id)).journals == [HOLD, PAYOUT]


async def test_payout_failed_at_the_psp_and_reinitiated_is_submitted_again(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)
    await accepted(send_ipn(api_client, settings.psp_secret, created.payout_id, "FAILED"))
    await reaches(sessions, created.payout_id, "FAILED", events=4)

    response = await api_client.post(
        f"{API}/payouts/{created.payout_id}/reinitiate", headers=auth(created.merchant)
    )
    assert response.status_code == 200, response.text
    state = await reaches(sessions, created.payout_id, "PENDING", events=7)
    assert state.events[-3:] == ["reinitiated", "processing", "pending"]
    assert state.payout.status == "PENDING"
    assert state.journals == [HOLD, RELEASE, HOLD]
    assert state.payout.psp_reference and state.payout.psp_reference.endswith("-2")


async def changed_nothing(caplog: pytest.LogCaptureFixture, command: OutboxMessage) -> None:
    """Wait until the processor consumed `command` and found nothing to change (it writes
    nothing then: the log says so)."""
    said = f"message {command.id}: nothing to change"

    async def logged() -> None:
        assert any(record.getMessage() == said for record in caplog.records)

    await eventually(logged)


# IPN ordering and attempts: each callback is judged against the newest accepted outcome, and
# outcomes belong to the attempt (hold cycle) they were sent for.


async def answers(responses: list[httpx.Response]) -> list[tuple[int, str | None]]:
    return [
        (response.status_code, response.json().get("error", {}).get("code"))
        for response in responses
    ]


async def test_success_then_failed_back_to_back_is_200_then_409(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)

    first = await send_ipn(api_client, settings.psp_secret, created.payout_id, "SUCCESS")
    second = await send_ipn(api_client, settings.psp_secret, created.payout_id, "FAILED")

    assert await answers([first, second]) == [(200, None), (409, "INVALID_TRANSITION")]
    state = await reaches(sessions, created.payout_id, "SUCCESS", events=4)
    await consistently(lambda: reaches(sessions, created.payout_id, "SUCCESS", events=4), 1.0)
    assert state.journals == [HOLD, PAYOUT]


async def test_success_then_reversed_back_to_back_are_both_applied_in_order(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)

    first = await send_ipn(api_client, settings.psp_secret, created.payout_id, "SUCCESS")
    second = await send_ipn(api_client, settings.psp_secret, created.payout_id, "REVERSED")

    assert await answers([first, second]) == [(200, None), (200, None)]
    state = await reaches(sessions, created.payout_id, "REVERSED", events=5)
    assert state.events[-2:] == ["succeeded", "reversed"]
    assert state.journals == [HOLD, PAYOUT, REVERSAL]
    await assert_ledger_consistent(
        sessions, created.merchant.merchant_id, available=OPENING_BALANCE, held=Decimal("0.00")
    )


async def test_a_late_callback_of_an_earlier_attempt_is_stale_and_changes_nothing(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    created = await new_payout(api_client, sessions, "0004", "PENDING", events=3)
    first_reference = (await state_of(sessions, created.payout_id)).payout.psp_reference
    assert first_reference
    await accepted(send_ipn(api_client, settings.psp_secret, created.payout_id, "FAILED"))
    await reaches(sessions, created.payout_id, "FAILED", events=4)
    reinitiated = await api_client.post(
        f"{API}/payouts/{created.payout_id}/reinitiate", headers=auth(created.merchant)
    )
    assert reinitiated.status_code == 200, reinitiated.text
    await reaches(sessions, created.payout_id, "PENDING", events=7)

    late = await send_ipn(
        api_client, settings.psp_secret, created.payout_id, "SUCCESS", pspReference=first_reference
    )

    assert await answers([late]) == [(409, "STALE_PSP_REFERENCE")]
    await consistently(lambda: reaches(sessions, created.payout_id, "PENDING", events=7), 1.0)
    # Without a reference, a callback is for the current attempt.
    await accepted(send_ipn(api_client, settings.psp_secret, created.payout_id, "SUCCESS"))
    state = await reaches(sessions, created.payout_id, "SUCCESS", events=8)
    assert state.journals == [HOLD, RELEASE, HOLD, PAYOUT]
    assert state.payout.psp_reference and state.payout.psp_reference.endswith("-2")


async def test_a_reinitiated_0002_payout_retries_again_before_succeeding(
    processor: None, api_client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    """The scenario table behaves the same on every attempt cycle."""
    merchant = await new_merchant(sessions)
    payout_id = await create(api_client, merchant, "1500.00", "1234567890000002")
    await accepted(send_ipn(api_client, settings.psp_secret, payout_id, "FAILED"))
    await eventually(lambda: _status_is(sessions, payout_id, "FAILED"))

    response = await api_client.post(
        f"{API}/payouts/{payout_id}/reinitiate", headers=auth(merchant)
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["attempts"] == 0

    state = await eventually(lambda: _status_is(sessions, payout_id, "SUCCESS"))
    after_reinitiate = state.events[state.events.index("reinitiated") :]
    assert after_reinitiate == ["reinitiated", "processing", "retrying", "processing", "succeeded"]
    assert state.payout.attempts == 2


async def _status_is(sessions: SessionFactory, payout_id: str, status: str) -> PayoutState:
    state = await state_of(sessions, payout_id)
    assert state.payout.status == status, state.events
    return state


async def publish_by_hand(infrastructure: Infrastructure, body: bytes) -> None:
    """As an operator does in the management UI: no message id (aio-pika always sets one)."""
    path = f"/api/exchanges/{quote(TEST_VHOST, safe='')}/{COMMANDS_EXCHANGE}/publish"
    message = {
        "properties": {"delivery_mode": 2, "content_type": "application/json"},
        "routing_key": PROCESS_PAYOUT_KEY,
        "payload": body.decode(),
        "payload_encoding": "string",
    }
    async with management_client(infrastructure.management_url) as client:
        answer = await client.post(path, json=message)
    assert answer.json() == {"routed": True}, answer.text


@pytest.mark.usefixtures("processor")
async def test_copies_of_a_command_published_without_a_message_id_are_one_message(
    api_client: httpx.AsyncClient, sessions: SessionFactory, infrastructure: Infrastructure
) -> None:
    """A hand-published command (no message id, no attempt named: the inbox judges it) is known
    by its body's digest. FastStream gave it a random id, so each copy was a new message."""
    created = await new_payout(api_client, sessions, "0001", "SUCCESS", events=3)
    merchant_id = created.merchant.merchant_id
    body = ProcessPayout(payout_id=created.payout_id, merchant_id=merchant_id).to_json()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()

    def duplicates() -> float:
        labels = {"queue": PAYOUT_COMMANDS.name, "result": "duplicate"}
        return REGISTRY.get_sample_value("payouts_processor_messages_total", labels) or 0.0

    seen_before = duplicates()
    for _ in range(2):
        await publish_by_hand(infrastructure, body)

    async def duplicate_seen() -> None:
        assert duplicates() == seen_before + 1

    await eventually(duplicate_seen)
    async with sessions() as session:
        keys = await session.scalar(
            select(func.count())
            .select_from(ProcessedMessage)
            .where(ProcessedMessage.consumer == PAYOUT_COMMANDS.name)
            .where(ProcessedMessage.message_id == digest)
        )
    assert keys == 1
