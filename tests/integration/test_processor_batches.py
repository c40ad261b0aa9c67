"""Payout commands run in batches (handlers.process_payouts, processor_service.payout_commands),
against the real MariaDB and RabbitMQ: each payout of a batch ends as it would alone, every
ledger line carries the balance after its own journal, a copy in the same batch changes nothing,
and a batch that fails writes nothing, its commands then running one by one."""

import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from faststream.rabbit.message import RabbitMessage
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Balance, LedgerJournal, LedgerLine, Payout, PayoutEvent
from contracts.domain.statuses import PayoutStatus
from contracts.logging import ContextFilter
from contracts.messages import ProcessPayout
from contracts.reconcile import reconcile
from contracts.settings import Settings
from contracts.topology import (
    LAST_ERROR_HEADER,
    PAYOUT_COMMANDS,
    PAYOUT_ID_HEADER,
    declare_topology_at,
)
from processor_service.app import create_processor
from processor_service.consumer import Consumer
from processor_service.handlers import Context, UnknownPayout, process_payouts
from tests.conftest import MerchantFactory
from tests.support.amqp import (
    RabbitClient,
    dead_letters,
    eventually,
    open_rabbit,
    publish_command,
)
from tests.support.api_helpers import new_payout_command
from tests.support.polling import eventually as soon

CONTEXT = Context(None, retry_delay_ms=1000)
OPENING = Decimal("1000000.00")
# Long enough that every command a test publishes, one confirm at a time, lands in one batch,
# on a slow host too (quorum queues confirm after a disk sync).
BATCH_WINDOW_SECONDS = 2.0


def account(suffix: str) -> str:
    """A wallet account number whose last four digits choose the scenario."""
    return f"0300123{suffix}"


async def commands_of(
    client: httpx.AsyncClient,
    sessions: SessionFactory,
    payouts: list[tuple[NewMerchant, str, str]],
) -> list[ProcessPayout]:
    """(merchant, account suffix, amount) -> the new payout's command."""
    return [
        await new_payout_command(
            client, sessions, merchant, accountNumber=account(suffix), amount=amount
        )
        for merchant, suffix, amount in payouts
    ]


async def test_each_payout_of_a_batch_ends_as_it_would_alone(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    first, second = await make_merchant(), await make_merchant()
    batch = [
        (first, "0001", "100.00", PayoutStatus.SUCCESS),
        (second, "0003", "250.50", PayoutStatus.FAILED),
        (first, "0004", "75.25", PayoutStatus.PENDING),
        (second, "0002", "10.00", PayoutStatus.RETRY),
        (first, "0005", "20.00", PayoutStatus.ON_HOLD),
        (second, "7777", "300.00", PayoutStatus.SUCCESS),
        (first, "0003", "40.00", PayoutStatus.FAILED),
        (second, "0001", "1.99", PayoutStatus.SUCCESS),
        (first, "0001", "5.00", PayoutStatus.SUCCESS),
    ]
    commands = await commands_of(api_client, sessions, [row[:3] for row in batch])

    async with transaction(sessions) as session:
        statuses = await process_payouts(session, [(command, CONTEXT) for command in commands])

    assert statuses == [status for *_, status in batch]
    async with sessions() as session:
        stored = await session.execute(
            select(Payout.id, Payout.status).where(Payout.id.in_(c.payout_id for c in commands))
        )
        assert dict(stored.all()) == {
            command.payout_id: status.value
            for command, (*_, status) in zip(commands, batch, strict=True)
        }
        assert await reconcile(session) == []
    for merchant in (first, second):
        paid = sum(Decimal(amount) for m, _, amount, s in batch if m is merchant and not_failed(s))
        held = sum(Decimal(amount) for m, _, amount, s in batch if m is merchant and waits(s))
        assert await balance_of(sessions, merchant) == (OPENING - paid, held)
        await assert_lines_carry_their_balance(sessions, merchant)


def not_failed(status: PayoutStatus) -> bool:
    return status is not PayoutStatus.FAILED


def waits(status: PayoutStatus) -> bool:
    """Still held: not paid out, not released."""
    return status not in (PayoutStatus.SUCCESS, PayoutStatus.FAILED)


async def test_a_copy_of_a_command_in_the_same_batch_changes_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    [command] = await commands_of(api_client, sessions, [(merchant, "0001", "100.00")])

    async with transaction(sessions) as session:
        statuses = await process_payouts(session, [(command, CONTEXT), (command, CONTEXT)])

    assert statuses == [PayoutStatus.SUCCESS, None]
    async with sessions() as session:
        journals = await session.scalars(
            select(LedgerJournal.kind).where(LedgerJournal.payout_id == command.payout_id)
        )
        assert sorted(journals) == ["HOLD", "PAYOUT"]
        events = await session.scalar(
            select(func.count()).where(PayoutEvent.payout_id == command.payout_id)
        )
        assert events == 3  # created, processing, succeeded
    assert await balance_of(sessions, merchant) == (OPENING - Decimal("100.00"), Decimal(0))


async def test_a_batch_with_an_unknown_payout_writes_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    [known] = await commands_of(api_client, sessions, [(merchant, "0001", "100.00")])
    unknown = ProcessPayout(
        payout_id=str(uuid.uuid4()), merchant_id=merchant.merchant_id, attempt=0, hold_cycle=1
    )

    with pytest.raises(UnknownPayout):
        async with transaction(sessions) as session:
            await process_payouts(session, [(known, CONTEXT), (unknown, CONTEXT)])

    async with sessions() as session:
        assert (
            await session.scalar(select(Payout.status).where(Payout.id == known.payout_id))
            == PayoutStatus.PENDING.value
        )
    assert await balance_of(sessions, merchant) == (
        OPENING - Decimal("100.00"),
        Decimal("100.00"),
    )


IDS = ("payout_id", "merchant_id", "correlation_id")


def ids_of(record: logging.LogRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name, None) for name in IDS)


async def test_each_status_change_is_logged_once_written_with_its_payouts_ids(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the processor logged nothing when it moved a payout (PENDING -> PROCESSING ->
    SUCCESS / FAILED / RETRY ...). Now one line per change (transitions.write_changes), with
    from, to and attempt: INFO for a final outcome (a 0003 failure too, never a warning), DEBUG
    for a step; each names its own payout, merchant and request, in a batch too."""
    merchant = await make_merchant()
    commands = await commands_of(
        api_client,
        sessions,
        [(merchant, "0001", "10.00"), (merchant, "0003", "20.00"), (merchant, "0002", "30.00")],
    )
    contexts = [Context(f"req-{n}", retry_delay_ms=1000) for n in range(3)]
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.DEBUG, logger="payouts.status"):
        async with transaction(sessions) as session:
            await process_payouts(session, list(zip(commands, contexts, strict=True)))

    moves = [r for r in caplog.records if hasattr(r, "to_status")]
    logged = [
        (r.levelname, r.payout_id, r.from_status, r.to_status, r.attempt, r.correlation_id)
        for r in moves
    ]
    ok, failed, retried = (c.payout_id for c in commands)
    assert sorted(logged) == sorted(
        [
            ("DEBUG", ok, "PENDING", "PROCESSING", 1, "req-0"),
            ("INFO", ok, "PROCESSING", "SUCCESS", 1, "req-0"),
            ("DEBUG", failed, "PENDING", "PROCESSING", 1, "req-1"),
            ("INFO", failed, "PROCESSING", "FAILED", 1, "req-1"),
            ("DEBUG", retried, "PENDING", "PROCESSING", 1, "req-2"),
            ("DEBUG", retried, "PROCESSING", "RETRY", 1, "req-2"),
        ]
    )
    assert {r.merchant_id for r in moves} == {merchant.merchant_id}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_commands_of_a_batch_log_with_their_own_payouts_ids(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch runs in no message's log context (contracts.batching: an empty one), so the lines
    of its commands ("already made", for a copy) named no payout, merchant or request; now each
    command's work runs with its own ids bound."""
    merchant = await make_merchant()
    [command] = await commands_of(api_client, sessions, [(merchant, "0001", "10.00")])
    context = Context("req-copies", retry_delay_ms=1000)
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.INFO, logger="processor"):
        async with transaction(sessions) as session:
            await process_payouts(session, [(command, context), (command, context)])

    [copy] = [r for r in caplog.records if "already made" in r.getMessage()]
    assert ids_of(copy) == (command.payout_id, merchant.merchant_id, "req-copies")


async def test_a_status_change_is_logged_once_committed_and_not_if_rolled_back(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line was written with the change, before the COMMIT: a COMMIT that failed (a lost
    connection) left the payout PENDING while the log said it moved, and the message's next run
    said so again (diff review)."""
    merchant = await make_merchant()
    [command] = await commands_of(api_client, sessions, [(merchant, "0001", "10.00")])
    context = Context("req-rolled-back", retry_delay_ms=1000)

    def moves() -> list[tuple[str, str]]:
        return [(r.from_status, r.to_status) for r in caplog.records if hasattr(r, "to_status")]

    with caplog.at_level(logging.DEBUG, logger="payouts.status"):
        with pytest.raises(ConnectionError):
            async with transaction(sessions) as session:
                await process_payouts(session, [(command, context)])
                raise ConnectionError("lost during COMMIT")
        assert moves() == []
        async with transaction(sessions) as session:
            await process_payouts(session, [(command, context)])
    assert moves() and len(moves()) == len(set(moves())), moves()


async def test_a_batch_that_fails_names_its_payouts(
    sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """ "N messages failed together" named no payout: which commands now run one by one?"""
    payouts = [str(uuid.uuid4()) for _ in range(3)]
    messages = [
        cast(
            RabbitMessage,
            SimpleNamespace(
                headers={PAYOUT_ID_HEADER: payout_id},
                raw_message=SimpleNamespace(correlation_id=None),
            ),
        )
        for payout_id in [*payouts, payouts[0]]
    ]
    consumer = Consumer(
        broker=cast(Any, None), sessions=sessions, retry_delay_seconds=1.0, max_retries=0
    )

    async def fails(*_: Any) -> list[None]:
        raise UnknownPayout(payouts[1])

    with caplog.at_level(logging.WARNING, logger="processor"):
        assert not await consumer.run_together(messages, PAYOUT_COMMANDS, fails)

    [line] = [r.getMessage() for r in caplog.records if "failed together" in r.getMessage()]
    assert line.startswith("4 messages failed together"), line
    named = line.rpartition("payouts ")[2]  # after the error, which names one of them too
    assert all(named.count(payout_id) == 1 for payout_id in payouts), line


@pytest.fixture(scope="module")
async def processor(settings: Settings) -> AsyncIterator[None]:
    """The processor in this process, its batch window long enough to gather a test's burst,
    and one batch worker: with two, a burst's commands alternate between them, so its batches
    split as the messages happen to arrive. No relay: the tests publish the commands themselves.
    Commands earlier modules' relays left in the queue are purged first: mixed into a burst, they
    split or fail its batches."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    async with open_rabbit(settings.amqp_url) as rabbit:
        await rabbit.purge(PAYOUT_COMMANDS.name, PAYOUT_COMMANDS.retry_queue(1))
    gathering = settings.model_copy(
        update={
            "processor_batch_window_seconds": BATCH_WINDOW_SECONDS,
            "processor_max_handler_retries": 0,
            "processor_batch_workers": 1,
        }
    )
    async with create_processor(gathering):
        yield


async def test_a_failed_batch_runs_its_commands_one_by_one(
    processor: None,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    """An unknown payout fails its batch: it alone is dead-lettered, the others are applied."""
    first, second = await make_merchant(), await make_merchant()
    commands = await commands_of(
        api_client,
        sessions,
        [(first, "0001", "10.00"), (second, "0003", "20.00"), (first, "7777", "30.00")],
    )
    unknown = ProcessPayout(
        payout_id=str(uuid.uuid4()), merchant_id=first.merchant_id, attempt=0, hold_cycle=1
    )
    failed_before = batch_failures()

    # One by one, as a relay's confirms may space them: each arrives on its own.
    message_ids = [
        await publish_command(rabbit, command.to_json()) for command in [*commands, unknown]
    ]

    dead = await dead_letters(rabbit, {message_ids[-1]})
    assert str((dead[message_ids[-1]].headers or {})[LAST_ERROR_HEADER]).startswith(
        "unknown payout"
    )

    async def applied() -> None:
        async with sessions() as session:
            stored = await session.scalars(
                select(Payout.status)
                .where(Payout.id.in_(c.payout_id for c in commands))
                .order_by(Payout.amount)
            )
            assert list(stored) == ["SUCCESS", "FAILED", "SUCCESS"]

    await eventually(applied)
    assert batch_failures() == failed_before + 4
    async with sessions() as session:
        assert await reconcile(session) == []


async def test_a_payout_held_elsewhere_holds_up_neither_its_batch_nor_the_next(
    processor: None,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    """One payout's row held by another transaction (a stuck session, a frozen process) for
    longer than the server's lock wait (50 s): the batch locked every payout in one query and
    waited for it, then its one batch worker ran the commands one by one and waited for that
    one again, the others unacked and the next batches queued behind (batch isolation review).
    The others, and a command published after them, are applied while it is held."""
    held, other = await make_merchant(), await make_merchant()
    [poison, *others] = await commands_of(
        api_client,
        sessions,
        [(held, "0001", "10.00"), (other, "0001", "20.00"), (other, "0001", "30.00")],
    )
    [later] = await commands_of(api_client, sessions, [(other, "0001", "40.00")])

    async def succeeded(*commands: ProcessPayout) -> bool:
        async with sessions() as session:
            statuses = await session.scalars(
                select(Payout.status).where(Payout.id.in_(c.payout_id for c in commands))
            )
            return set(statuses) == {"SUCCESS"}

    async with sessions() as holder, holder.begin():
        await holder.execute(
            select(Payout.id).where(Payout.id == poison.payout_id).with_for_update()
        )
        for command in [poison, *others]:
            await publish_command(rabbit, command.to_json())
        await soon(lambda: succeeded(*others), within=20, what="its batch's others")
        await publish_command(rabbit, later.to_json())
        await soon(lambda: succeeded(later), within=20, what="the next command")

    await soon(lambda: succeeded(poison), within=20, what="the held payout, let go")
    async with sessions() as session:
        assert await reconcile(session) == []


def batch_failures() -> float:
    value = REGISTRY.get_sample_value(
        "payouts_processor_messages_total",
        {"queue": PAYOUT_COMMANDS.name, "result": "batch_failed"},
    )
    return value or 0.0


async def balance_of(sessions: SessionFactory, merchant: NewMerchant) -> tuple[Decimal, Decimal]:
    """(available, held)"""
    async with sessions() as session:
        row = (
            await session.execute(
                select(Balance.available, Balance.held).where(
                    Balance.merchant_id == merchant.merchant_id
                )
            )
        ).one()
    return row.available, row.held


async def assert_lines_carry_their_balance(sessions: SessionFactory, merchant: NewMerchant) -> None:
    """Walking the merchant's lines in order, each journal's lines show the balance it left."""
    async with sessions() as session:
        lines = list(
            await session.scalars(
                select(LedgerLine)
                .where(LedgerLine.merchant_id == merchant.merchant_id)
                .order_by(LedgerLine.id)
            )
        )
    available = held = Decimal(0)
    for journal_id, group in itertools.groupby(lines, key=lambda line: line.journal_id):
        journal_lines = list(group)
        for line in journal_lines:
            if line.account == "AVAILABLE":
                available += line.amount
            else:
                held += line.amount
        for line in journal_lines:
            assert (line.balance_after, line.available_after) == (available + held, available), (
                journal_id
            )
