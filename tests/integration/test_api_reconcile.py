"""contracts.reconcile against a clean ledger and deliberately corrupted ones, and the
`payouts reconcile` command. Corruptions happen in a transaction that is rolled back (or undone),
so the rest of the session's database stays clean."""

import asyncio
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import CursorResult, delete, func, insert, select, update
from sqlalchemy.dialects.mysql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncSession

from cli.merchants import create_merchant
from contracts import ledger
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import (
    Balance,
    LedgerJournal,
    LedgerLine,
    Merchant,
    OutboxMessage,
    Payout,
    PayoutEvent,
    PspCallback,
    SandboxClock,
    SandboxClockAdvance,
    ScheduledAction,
    WebhookDelivery,
)
from contracts.domain.scheduled_actions import Action, Result
from contracts.domain.statuses import PayoutStatus
from contracts.pipeline_health import UNDELIVERED_EVENTS_WINDOW, Thresholds, pipeline_problems
from contracts.reconcile import ledger_size, reconcile
from contracts.settings import Settings
from contracts.topology import COMMANDS_EXCHANGE
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.api_helpers import create_payout, move_payout, send_ipn
from tests.support.webhook_flow import set_delivery

Corruption = Callable[[AsyncSession, str, str], Awaitable[None]]


async def _journal(
    session: AsyncSession,
    merchant_id: str,
    *,
    kind: str,
    lines: list[tuple[str, Decimal]],
    payout_id: str | None = None,
    hold_cycle: int | None = None,
) -> None:
    """A journal written behind the ledger module's back."""
    result = cast(
        CursorResult[Any],
        await session.execute(
            insert(LedgerJournal).values(
                merchant_id=merchant_id,
                payout_id=payout_id,
                hold_cycle=hold_cycle,
                kind=kind,
                description="corruption",
                created_at=utcnow(),
            )
        ),
    )
    journal_id = result.lastrowid
    for account, amount in lines:
        session.add(
            LedgerLine(
                journal_id=journal_id,
                merchant_id=None if account == "PSP_SETTLEMENT" else merchant_id,
                account=account,
                amount=amount,
                created_at=utcnow(),
            )
        )
    await session.flush()


async def _unbalanced_journal(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    await _journal(session, merchant_id, kind="TOPUP", lines=[("PSP_SETTLEMENT", Decimal("-5.00"))])


async def _one_sided_journal(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    await _journal(session, merchant_id, kind="TOPUP", lines=[])


async def _balance_drift(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    await session.execute(
        update(Balance)
        .where(Balance.merchant_id == merchant_id)
        .values(available=Balance.available + Decimal("0.01"))
    )


async def _negative_available(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    await session.execute(
        update(Balance).where(Balance.merchant_id == merchant_id).values(available=-5)
    )


async def _posted_and_released(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    # The payout was paid out in cycle 1; a RELEASE of the same hold is a second settlement
    # (the unique key only stops the same kind twice). Zero lines keep the balances equal.
    zero = Decimal("0.00")
    await _journal(
        session,
        merchant_id,
        kind="RELEASE",
        lines=[("HELD", zero), ("AVAILABLE", zero)],
        payout_id=payout_id,
        hold_cycle=1,
    )


async def _status_without_ledger(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    await session.execute(update(Payout).where(Payout.id == payout_id).values(status="PROCESSING"))


def _status(status: PayoutStatus) -> Corruption:
    """The paid payout's status changed alone: its journals say otherwise."""

    async def corrupt(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
        await session.execute(
            update(Payout).where(Payout.id == payout_id).values(status=status.value)
        )

    return corrupt


async def _failed_with_no_journals(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    """A held payout (not a queued one that expired) FAILED with no HOLD nor RELEASE: reconcile
    took it for a queue expiry, which holds nothing (reconcile review)."""
    journals = select(LedgerJournal.id).where(LedgerJournal.payout_id == payout_id)
    await session.execute(delete(LedgerLine).where(LedgerLine.journal_id.in_(journals)))
    await session.execute(delete(LedgerJournal).where(LedgerJournal.payout_id == payout_id))
    await session.execute(
        update(Payout)
        .where(Payout.id == payout_id)
        .values(status=PayoutStatus.FAILED.value, failure_code="ACCOUNT_INVALID")
    )


async def _paid_again(
    session: AsyncSession, merchant_id: str, payout_id: str, hold_cycle: int | None
) -> None:
    """Held and paid out once more, through the ledger, in `hold_cycle`: debited twice."""
    for posting in (ledger.HOLD, ledger.PAYOUT):
        await ledger.post(
            session,
            posting,
            merchant_id=merchant_id,
            payout_id=payout_id,
            hold_cycle=hold_cycle,
            amount=Decimal("100.00"),
        )


async def _paid_in_two_cycles(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    """Held and paid out again in a second hold cycle, which the payout went on to."""
    await _paid_again(session, merchant_id, payout_id, hold_cycle=2)
    await session.execute(update(Payout).where(Payout.id == payout_id).values(hold_cycle=2))


def _paid_outside_its_cycles(hold_cycle: int | None) -> Corruption:
    """Paid again in a cycle the payout never reached (or none), its row left in cycle 1:
    reconcile was clean."""

    async def corrupt(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
        await _paid_again(session, merchant_id, payout_id, hold_cycle)

    return corrupt


async def _another_amount(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    await session.execute(
        update(Payout).where(Payout.id == payout_id).values(amount=Decimal("150.00"))
    )


async def _payout_booked_to_available(
    session: AsyncSession, merchant_id: str, payout_id: str
) -> None:
    """The merchant keeps what was sent to the bank; its balance row kept equal to its lines."""
    journal = select(LedgerJournal.id).where(
        LedgerJournal.payout_id == payout_id, LedgerJournal.kind == "PAYOUT"
    )
    await session.execute(
        update(LedgerLine)
        .where(LedgerLine.journal_id == journal.scalar_subquery())
        .where(LedgerLine.account == "PSP_SETTLEMENT")
        .values(account="AVAILABLE", merchant_id=merchant_id)
    )
    await session.execute(
        update(Balance)
        .where(Balance.merchant_id == merchant_id)
        .values(available=Balance.available + Decimal("100.00"))
    )


async def _top_up_of_a_payout(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    """50.00 into available booked as a TOPUP of the payout (reconcile raised StopIteration)."""
    await ledger.post(
        session,
        ledger.TOPUP,
        merchant_id=merchant_id,
        amount=Decimal("50.00"),
        payout_id=payout_id,
        hold_cycle=1,
    )


async def _journal_of_another_merchant(
    session: AsyncSession, merchant_id: str, payout_id: str
) -> None:
    """Its lines and its payout are the merchant's, the journal names another: the dashboard's
    timeline, which finds a payout's journals by it, lost it, and reconcile passed it."""
    other = await create_merchant(
        session, name="Another merchant", balance=Decimal("0.00"), webhook_url=None
    )
    await session.execute(
        update(LedgerJournal)
        .where(LedgerJournal.payout_id == payout_id, LedgerJournal.kind == "HOLD")
        .values(merchant_id=other.merchant_id)
    )


async def _running_balance_drift(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    """/balance/history's balanceAfter and availableAfter of the last journal 500.00 too high,
    every balance and line amount still right."""
    last = select(func.max(LedgerLine.id)).where(LedgerLine.merchant_id == merchant_id)
    await session.execute(
        update(LedgerLine)
        .where(LedgerLine.id == last.scalar_subquery())
        .values(
            balance_after=LedgerLine.balance_after + Decimal("500.00"),
            available_after=LedgerLine.available_after + Decimal("500.00"),
        )
    )


async def _hold_line(session: AsyncSession, merchant_id: str, payout_id: str) -> int:
    """The first of the merchant's lines of the payout's HOLD (its AVAILABLE one)."""
    line = await session.scalar(
        select(func.min(LedgerLine.id))
        .join(LedgerJournal, LedgerJournal.id == LedgerLine.journal_id)
        .where(
            LedgerJournal.payout_id == payout_id,
            LedgerJournal.kind == "HOLD",
            LedgerLine.merchant_id == merchant_id,
        )
    )
    assert line is not None
    return line


async def _running_balance_drift_on_a_first_line(
    session: AsyncSession, merchant_id: str, payout_id: str
) -> None:
    """The HOLD's first line alone 500.00 too high: the check read a journal's last line only."""
    line = await _hold_line(session, merchant_id, payout_id)
    await session.execute(
        update(LedgerLine)
        .where(LedgerLine.id == line)
        .values(
            balance_after=LedgerLine.balance_after + Decimal("500.00"),
            available_after=LedgerLine.available_after + Decimal("500.00"),
        )
    )


async def _running_balance_missing(session: AsyncSession, merchant_id: str, payout_id: str) -> None:
    """A line that shows no balance: `balance_after <> balance` was NULL, not true."""
    line = await _hold_line(session, merchant_id, payout_id)
    await session.execute(
        update(LedgerLine)
        .where(LedgerLine.id == line)
        .values(balance_after=None, available_after=None)
    )


CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "journal lines do not sum to zero": (
        _unbalanced_journal,
        "(merchant {merchant}) does not balance: 1 lines summing to -5.00",
    ),
    "journal with no lines": (_one_sided_journal, "0 lines"),
    "balance row differs from its lines": (_balance_drift, "differs from its ledger lines"),
    "negative available": (_negative_available, "is negative"),
    "hold settled twice": (_posted_and_released, "postings/releases"),
    "held differs from payouts in flight": (_status_without_ledger, "payouts in flight"),
    "paid payout said FAILED": (_status(PayoutStatus.FAILED), "is FAILED but its hold cycle"),
    "payout said REVERSED, never reversed": (
        _status(PayoutStatus.REVERSED),
        "is REVERSED but its hold cycle 1 has 1 HOLD, 1 PAYOUT, 0 RELEASE and 0 REVERSAL",
    ),
    "a held payout FAILED with no journals": (
        _failed_with_no_journals,
        "is FAILED but its hold cycle 1 has 0 HOLD, 0 PAYOUT, 0 RELEASE and 0 REVERSAL",
    ),
    "paid out in two hold cycles": (_paid_in_two_cycles, "hold cycle 1, before its current one"),
    "paid out in a cycle above its current one": (
        _paid_outside_its_cycles(2),
        "(PAYOUT) of payout {payout} is booked in hold cycle 2, outside the cycles the payout "
        "went through (1 to its current 1)",
    ),
    "paid out in no cycle": (
        _paid_outside_its_cycles(None),
        "(HOLD) of payout {payout} is booked in no hold cycle",
    ),
    "journals of another amount than the payout's": (
        _another_amount,
        "(HOLD) of payout {payout} does not move its amount 150.00 from AVAILABLE to HELD",
    ),
    "a PAYOUT booked back to available": (
        _payout_booked_to_available,
        "(PAYOUT) of payout {payout} does not move its amount 100.00 from HELD to PSP_SETTLEMENT",
    ),
    "a payout's journal naming another merchant": (
        _journal_of_another_merchant,
        "(HOLD) of payout {payout} does not move its amount 100.00 from AVAILABLE to HELD",
    ),
    "a running balance that does not follow from the lines": (
        _running_balance_drift,
        "a balance of 1400.00 and available 1400.00 after it, where its ledger lines make 900.00 "
        "and 900.00",
    ),
    "a running balance wrong on a journal's first line": (
        _running_balance_drift_on_a_first_line,
        "a balance of 1500.00 and available 1400.00 after it, where its ledger lines make "
        "1000.00 and 900.00",
    ),
    "a merchant's line without its running balance": (
        _running_balance_missing,
        "a balance of (none) and available (none) after it, where its ledger lines make 1000.00 "
        "and 900.00",
    ),
    "a TOPUP that names a payout": (
        _top_up_of_a_payout,
        "(TOPUP) names payout {payout}: a payout's journals are HOLD, RELEASE, PAYOUT, REVERSAL",
    ),
}


@pytest.mark.parametrize(("corrupt", "symptom"), CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_reconcile_reports_each_broken_invariant(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    corrupt: Corruption,
    symptom: str,
) -> None:
    merchant = await make_merchant(balance="1000.00")
    payout = await create_payout(api_client, merchant, amount="100.00")
    await move_payout(sessions, payout["id"], PayoutStatus.SUCCESS)
    async with sessions() as session:
        assert await reconcile(session) == []
    async with sessions() as session:
        await corrupt(session, merchant.merchant_id, payout["id"])
        problems = await reconcile(session)
        await session.rollback()
    symptom = symptom.format(payout=payout["id"], merchant=merchant.merchant_id)
    assert any(symptom in problem for problem in problems), problems
    async with sessions() as session:
        assert await reconcile(session) == []


async def test_past_a_hundred_problems_of_a_kind_it_says_how_many_more(
    make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """One top-up's line changed: the merchant's 110 running balances are off. 100 lines were
    listed, and not a word of the other 10 (reconcile review)."""
    merchant = await make_merchant(balance="0.00")
    async with transaction(sessions) as session:
        for _ in range(110):
            await ledger.top_up(session, merchant_id=merchant.merchant_id, amount=Decimal("1.00"))
    async with sessions() as session:
        first = await session.scalar(
            select(func.min(LedgerLine.id)).where(LedgerLine.merchant_id == merchant.merchant_id)
        )
        await session.execute(
            update(LedgerLine).where(LedgerLine.id == first).values(amount=Decimal("2.00"))
        )
        problems = await reconcile(session)
        await session.rollback()

    running = [line for line in problems if f"shows merchant {merchant.merchant_id}" in line]
    assert len(running) == 100
    assert "... and 10 more running balances off not listed" in problems, problems[-3:]


async def test_reconcile_is_clean_through_a_payout_lifecycle(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    paid = await create_payout(api_client, merchant, amount="100.00")
    failed = await create_payout(api_client, merchant, amount="200.00")
    reversed_ = await create_payout(api_client, merchant, amount="300.00")
    await move_payout(sessions, paid["id"], PayoutStatus.SUCCESS)
    await move_payout(sessions, failed["id"], PayoutStatus.FAILED)
    await move_payout(sessions, reversed_["id"], PayoutStatus.REVERSED)
    async with sessions() as session:
        assert await reconcile(session) == []
        size = await ledger_size(session)
    assert size.merchants >= 1
    assert size.journals >= 7


async def _run_cli(
    settings: Settings, *pipeline_limits: str, **environment: str
) -> tuple[int, str]:
    """The real command; by default the pipeline checks are relaxed, since other tests leave
    payouts unprocessed on purpose (no processor runs for them)."""
    script = (
        "import typer; from cli.reconcile import reconcile_command; typer.run(reconcile_command)"
    )
    limits = pipeline_limits or ("--stuck-minutes", "100000", "--max-outbox-lag-seconds", "1e9")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *limits,
        env={"PAYOUTS_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin", **environment},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


async def test_reconcile_command_prints_clean_or_each_problem(
    make_merchant: MerchantFactory, sessions: SessionFactory, settings: Settings
) -> None:
    merchant = await make_merchant(balance="10.00")
    code, output = await _run_cli(settings)
    assert code == 0, output
    async with sessions() as session:
        size = await ledger_size(session)
    assert output.strip().endswith(
        f"ledger reconciled: {size.merchants} merchants, {size.journals} journals, clean"
    )

    drift = Balance.merchant_id == merchant.merchant_id
    async with transaction(sessions) as session:
        await session.execute(update(Balance).where(drift).values(held=Balance.held + 1))
    try:
        code, output = await _run_cli(settings)
    finally:
        async with transaction(sessions) as session:
            await session.execute(update(Balance).where(drift).values(held=Balance.held - 1))
    assert code == 1, output
    assert f"merchant {merchant.merchant_id}" in output
    assert "clean" not in output
    assert re.fullmatch(r"ledger NOT reconciled: the \d+ line\(s\) above", output.splitlines()[-1])


async def test_reconcile_command_reports_a_stuck_payout_and_outbox_lag(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """No relay or processor runs here: the payout stays PENDING and its outbox rows unsent."""
    merchant = await make_merchant(balance="100.00")
    async with sessions() as session:
        before = await session.scalar(select(func.coalesce(func.max(OutboxMessage.id), 0)))
    payout_id = (await create_payout(api_client, merchant))["id"]
    an_hour_ago = utcnow() - timedelta(hours=1)
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout).where(Payout.id == payout_id).values(updated_at=an_hour_ago)
        )
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id > before).values(created_at=an_hour_ago)
        )

    code, output = await _run_cli(
        settings, "--stuck-minutes", "30", "--max-outbox-lag-seconds", "1800"
    )

    assert code == 1, output
    assert f"payout {payout_id} stuck in PENDING" in output
    [lag] = [line for line in output.splitlines() if line.startswith("outbox lag")]
    mine = r"(\d+) unsent message\(s\) older than 1800s, the oldest outbox row \d+ \(routing key"
    lagging = re.search(mine, lag)
    assert lagging and int(lagging[1]) >= 2, lag  # the payout's command and its event's
    # The ledger is clean: the summary says the pipeline is what is not (it said "ledger NOT
    # reconciled": reconcile review).
    assert re.fullmatch(
        r"ledger reconciled \(\d+ merchants, \d+ journals\); pipeline NOT flowing: "
        r"the last \d+ line\(s\) above",
        output.splitlines()[-1],
    ), output

    drift = Balance.merchant_id == merchant.merchant_id
    async with transaction(sessions) as session:
        await session.execute(update(Balance).where(drift).values(held=Balance.held + 1))
    try:
        code, output = await _run_cli(
            settings, "--stuck-minutes", "30", "--max-outbox-lag-seconds", "1800"
        )
    finally:
        async with transaction(sessions) as session:
            await session.execute(update(Balance).where(drift).values(held=Balance.held - 1))
    assert code == 1, output
    assert re.fullmatch(
        r"ledger NOT reconciled: the first \d+ line\(s\) above; pipeline NOT flowing: "
        r"the last \d+ line\(s\) above",
        output.splitlines()[-1],
    ), output


async def test_a_payout_in_retry_is_stuck_only_past_its_retry_delay(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """With PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS at 30 minutes, a payout 10 minutes in RETRY
    waits for its next attempt by design: reconcile called it stuck, and exited 1 (review)."""
    merchant = await make_merchant(balance="1000.00")
    waiting, late = [(await create_payout(api_client, merchant))["id"] for _ in range(2)]
    for payout_id, minutes in ((waiting, 10), (late, 40)):
        await move_payout(sessions, payout_id, PayoutStatus.RETRY)
        async with transaction(sessions) as session:
            await session.execute(
                update(Payout)
                .where(Payout.id == payout_id)
                .values(updated_at=utcnow() - timedelta(minutes=minutes))
            )

    try:
        _, output = await _run_cli(
            settings,
            "--stuck-minutes",
            "5",
            "--max-outbox-lag-seconds",
            "1e9",
            PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS="1800",
        )
    finally:
        for payout_id in (waiting, late):
            await move_payout(sessions, payout_id, PayoutStatus.FAILED)

    assert waiting not in output, output
    assert f"payout {late} stuck in RETRY" in output, output


async def test_a_queued_payout_its_available_balance_covers_is_reported(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """After each commit the queue's head is not covered (contracts/payout_queue.py): money
    that came in without starting it (here, a top-up behind the queue's back) left a QUEUED
    payout waiting for its expiry, the money there all along, and reconcile said nothing
    (reconcile review). Only the head is named; a deactivated merchant's queue waits."""
    merchant = await make_merchant(balance="10.00")
    body = {"amount": "500.00", "queueIfLowBalance": True}
    head, behind = [(await create_payout(api_client, merchant, **body))["id"] for _ in range(2)]
    async with transaction(sessions) as session:
        await ledger.top_up(session, merchant_id=merchant.merchant_id, amount=Decimal("1000.00"))
        await session.execute(
            update(Payout)
            .where(Payout.id.in_([head, behind]))
            .values(updated_at=utcnow() - timedelta(hours=1))
        )

    async def named() -> list[str]:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return [line for line in problems if merchant.merchant_id in line]

    lines = await named()
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == merchant.merchant_id).values(is_active=False)
        )
    lines_while_inactive = await named()

    assert len(lines) == 1 and f"payout {head} of merchant" in lines[0], lines
    assert "available balance 1010.00 covers its 500.00" in lines[0], lines
    assert lines_while_inactive == []


async def test_reconcile_reports_an_accepted_psp_outcome_never_applied(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """A payout PENDING at the PSP waits for an IPN by design, so its status alone is not stuck;
    but the PSP got its 200 for a SUCCESS an hour ago, and no processor applied it (here none
    runs): the funds stay held and the merchant is never told. Nothing named it."""
    merchant = await make_merchant(balance="100.00")
    payout_id = (await create_payout(api_client, merchant, accountNumber="03001230004"))["id"]
    an_hour_ago = utcnow() - timedelta(hours=1)
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout)
            .where(Payout.id == payout_id)
            .values(psp_reference="PSP-AT-THE-BANK-1", updated_at=an_hour_ago)
        )
    assert (
        await send_ipn(api_client, settings.psp_secret, payout_id, "SUCCESS")
    ).status_code == 200
    async with transaction(sessions) as session:
        await session.execute(
            update(PspCallback)
            .where(PspCallback.payout_id == payout_id)
            .values(received_at=an_hour_ago)
        )

    try:
        code, output = await _run_cli(
            settings, "--stuck-minutes", "30", "--max-outbox-lag-seconds", "86400"
        )
    finally:  # out of the way of the reconciles of later tests on this database
        async with transaction(sessions) as session:
            await session.execute(
                update(PspCallback)
                .where(PspCallback.payout_id == payout_id)
                .values(applied_at=utcnow())
            )

    assert code == 1, output
    assert f"payout {payout_id} (PENDING): PSP outcome SUCCESS accepted at" in output


async def test_reconcile_command_reports_a_webhook_no_attempt_took_up(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """A delivery PENDING for longer than the stuck time, held by no attempt: the webhook service
    is not taking its messages. Under a live attempt's lease, or delivered, it is not reported."""
    long_ago = utcnow() - timedelta(days=365)  # before any other test's rows: listed first
    event = await _delivered_by_hand(
        api_client,
        make_merchant,
        sessions,
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        at=long_ago,
    )

    async def reported() -> bool:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return any(f"(event {event.id})" in problem for problem in problems)

    code, output = await _run_cli(
        settings, "--stuck-minutes", "30", "--max-outbox-lag-seconds", "1e9"
    )
    assert code == 1, output
    assert (
        f"webhook payout.created (event {event.id}) PENDING since {long_ago:%Y-%m-%d %H:%M:%S} UTC"
        " with no attempt (is the webhook service running?)"
    ) in output
    try:
        in_an_hour = utcnow() + timedelta(hours=1)
        await set_delivery(sessions, event.id, lease_token="a" * 32, leased_until=in_an_hour)
        assert not await reported()  # an attempt is under way
        await set_delivery(sessions, event.id, leased_until=long_ago)
        assert await reported()  # its consumer died with the lease
    finally:
        await set_delivery(
            sessions, event.id, status=DeliveryStatus.DELIVERED.value, lease_token=None
        )
    assert not await reported()


async def test_reconcile_command_reports_an_event_no_webhook_service_took_up(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """The webhook services down: an event gets no delivery row until the relay's sweep makes
    one (after PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS; never, with the relay down too), and
    reconcile said nothing meanwhile, where the runbook says it does (the runbook drill). It
    reads the day the sweep reads: reading only the Operations page's window before the stuck
    time, it said "clean" of an event 20 minutes old that no webhook service took up, the relay
    down too (reconcile review)."""
    merchant = await make_merchant()
    stuck_since = utcnow() - timedelta(hours=10)  # `--stuck-minutes 600`: no other test's rows
    in_the_window = stuck_since - UNDELIVERED_EVENTS_WINDOW / 2
    before_it = stuck_since - UNDELIVERED_EVENTS_WINDOW * 2
    days_before = stuck_since - timedelta(hours=25)
    events = {}
    for recorded_at in (in_the_window, before_it, days_before):
        payout = await create_payout(api_client, merchant)
        mine = PayoutEvent.payout_id == payout["id"]
        async with transaction(sessions) as session:
            events[recorded_at] = await session.scalar(select(PayoutEvent.id).where(mine))
            await session.execute(update(PayoutEvent).where(mine).values(created_at=recorded_at))
    try:
        code, output = await _run_cli(
            settings, "--stuck-minutes", "600", "--max-outbox-lag-seconds", "1e9"
        )
    finally:  # out of the way of the reconciles of later tests on this database
        async with transaction(sessions) as session:
            await session.execute(
                update(PayoutEvent)
                .where(PayoutEvent.id.in_(events.values()))
                .values(created_at=utcnow() - timedelta(days=3))
            )

    assert code == 1, output
    assert (
        f"webhook payout.created (event {events[in_the_window]}) recorded at "
        f"{in_the_window:%Y-%m-%d %H:%M:%S} UTC and taken up by no webhook service (is the "
        "webhook service running?)"
    ) in output
    assert f"(event {events[before_it]}) recorded at" in output
    assert events[days_before] not in output


async def _delivered_by_hand(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    *,
    at: datetime,
    **values: Any,
) -> PayoutEvent:
    """A new payout's first event, with a delivery row written by hand as of `at`."""
    payout = await create_payout(api_client, await make_merchant())
    async with transaction(sessions) as session:
        event = await session.scalar(
            select(PayoutEvent).where(PayoutEvent.payout_id == payout["id"])
        )
        assert event is not None
        await session.execute(
            insert(WebhookDelivery).values(
                id=str(uuid.uuid4()),
                event_id=event.id,
                merchant_id=event.merchant_id,
                payout_id=event.payout_id,
                event_type=event.type,
                created_at=at,
                updated_at=at,
                **values,
            )
        )
    return event


async def test_a_webhook_retry_long_overdue_is_reported(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """With the webhook service down, a RETRYING delivery waited past its due time for ever
    and reconcile said nothing (it looked at PENDING deliveries only)."""
    an_hour_ago = utcnow() - timedelta(hours=1)
    event = await _delivered_by_hand(
        api_client,
        make_merchant,
        sessions,
        status=DeliveryStatus.RETRYING.value,
        attempts=1,
        at=an_hour_ago - timedelta(seconds=5),
        next_attempt_at=an_hour_ago,
    )

    async def reported() -> list[str]:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return [problem for problem in problems if f"(event {event.id})" in problem]

    overdue = [
        f"webhook {event.type} (event {event.id}) retry due at {an_hour_ago:%Y-%m-%d %H:%M:%S} "
        "(sandbox time) not attempted (is the webhook service running?)"
    ]
    assert await reported() == overdue
    async with transaction(sessions) as session:  # an advance since leaves it overdue
        await session.execute(
            insert(SandboxClock).values(
                merchant_id=event.merchant_id, offset_seconds=60, updated_at=utcnow()
            )
        )
    assert await reported() == overdue
    in_a_minute = utcnow() + timedelta(minutes=1)
    await set_delivery(sessions, event.id, lease_token="a" * 32, leased_until=in_a_minute)
    assert await reported() == []  # an attempt is under way


async def test_a_payout_waiting_for_its_scheduled_step_is_not_stuck(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A 0007 payout is PROCESSING for 30 minutes by design: stuck only once its step is
    applied (or skipped) and it still has not moved."""
    payout_id = (await create_payout(api_client, await make_merchant()))["id"]
    an_hour_ago = utcnow() - timedelta(hours=1)
    async with transaction(sessions) as session:
        payout = await session.get(Payout, payout_id)
        assert payout is not None
        await session.execute(
            update(Payout)
            .where(Payout.id == payout_id)
            .values(status=PayoutStatus.PROCESSING.value, updated_at=an_hour_ago)
        )
        await session.execute(
            insert(ScheduledAction).values(
                merchant_id=payout.merchant_id,
                payout_id=payout_id,
                hold_cycle=payout.hold_cycle,
                action="SCRIPT_STEP",
                step=1,
                expected_status=PayoutStatus.PROCESSING.value,
                due_at=utcnow() + timedelta(minutes=30),
                created_at=an_hour_ago,
            )
        )

    async def stuck() -> bool:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return any(payout_id in problem for problem in problems)

    assert not await stuck()
    async with transaction(sessions) as session:
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == payout_id)
            .values(applied_at=utcnow(), result="SKIPPED")
        )
    assert await stuck()


async def _advanced(
    sessions: SessionFactory, merchant_id: str, *, offset: int | None, at: datetime
) -> int:
    """The merchant's clock advanced at `at` to `offset` (None: a second further), as the
    advance endpoint records it; the new offset."""
    async with transaction(sessions) as session:
        clock = await session.get(SandboxClock, merchant_id)
        new_offset = offset if offset is not None else (clock.offset_seconds if clock else 0) + 1
        await session.execute(
            upsert(SandboxClock)
            .values(merchant_id=merchant_id, offset_seconds=new_offset, updated_at=at)
            .on_duplicate_key_update(offset_seconds=new_offset, updated_at=at)
        )
        await session.execute(
            insert(SandboxClockAdvance).values(
                merchant_id=merchant_id, advanced_at=at, offset_seconds=new_offset
            )
        )
    return new_offset


async def test_a_scheduled_action_long_due_and_not_run_is_reported(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """With the processor's scheduler down, a 0007 payout stayed PROCESSING (a queued payout
    QUEUED, an ON_HOLD one ON_HOLD) past its step or expiry, and reconcile said nothing: a
    payout waiting for a step is not stuck by its status. What an advance made due is late only
    once the advance is older than the threshold (the scheduler takes it up within seconds);
    what was due on the database's clock before the advance is late all the same."""
    merchant = await make_merchant()
    payout_id = (await create_payout(api_client, merchant))["id"]
    an_hour_ago = utcnow() - timedelta(hours=1)  # due without any advance
    sandbox_due = utcnow() + timedelta(hours=72)  # due on a clock advanced by 73 h
    async with transaction(sessions) as session:
        for step, due_at in enumerate((an_hour_ago, sandbox_due), start=1):
            await session.execute(
                insert(ScheduledAction).values(
                    merchant_id=merchant.merchant_id,
                    payout_id=payout_id,
                    hold_cycle=0,
                    action="SCRIPT_STEP",
                    step=step,
                    expected_status=PayoutStatus.PROCESSING.value,
                    due_at=due_at,
                    created_at=an_hour_ago,
                )
            )
    await _advanced(sessions, merchant.merchant_id, offset=73 * 3600, at=utcnow())

    async def reported() -> list[str]:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return [problem for problem in problems if payout_id in problem]

    def line(due_at: datetime) -> str:
        return (
            f"payout {payout_id}: its SCRIPT_STEP due at {due_at:%Y-%m-%d %H:%M:%S} (sandbox "
            "time) has not run (is the processor's scheduler running?)"
        )

    assert await reported() == [line(an_hour_ago)]  # the advance was just made
    async with transaction(sessions) as session:  # no: six minutes ago
        await session.execute(
            update(SandboxClockAdvance)
            .where(SandboxClockAdvance.merchant_id == merchant.merchant_id)
            .values(advanced_at=utcnow() - timedelta(minutes=6))
        )
    assert await reported() == [line(an_hour_ago), line(sandbox_due)]
    for _ in range(2):  # advanced again, by a second, just now; and again
        offset = await _advanced(sessions, merchant.merchant_id, offset=None, at=utcnow())
        # Late on the clock before those advances: late still (they hid the step due on it).
        assert await reported() == [line(an_hour_ago), line(sandbox_due)], offset
    async with transaction(sessions) as session:
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == payout_id)
            .values(applied_at=utcnow(), result="APPLIED")
        )
    assert await reported() == []


async def test_reconcile_command_reports_a_parked_outbox_row(
    sessions: SessionFactory, settings: Settings
) -> None:
    """A row the relay gave up on is a problem until an operator retries it."""
    async with transaction(sessions) as session:
        inserted = cast(
            CursorResult[Any],
            await session.execute(
                insert(OutboxMessage).values(
                    exchange=COMMANDS_EXCHANGE,
                    routing_key="test.parked",
                    body=b"{}",
                    headers={},
                    created_at=utcnow(),
                    publish_attempts=20,
                    last_error="PublishError: ('NO_ROUTE', 'test.parked')",
                    parked_at=utcnow(),
                )
            ),
        )
    row_id = inserted.lastrowid
    try:
        code, output = await _run_cli(settings)
    finally:
        async with transaction(sessions) as session:
            await session.execute(delete(OutboxMessage).where(OutboxMessage.id == row_id))

    assert code == 1, output
    assert (
        f"outbox row {row_id} parked after 20 refused publishes (exchange 'payouts.commands', "
        "routing key 'test.parked'): PublishError: ('NO_ROUTE', 'test.parked')"
    ) in output


async def _last_journal_of(session: AsyncSession, merchant_id: str) -> int:
    journal_id = await session.scalar(
        select(LedgerJournal.id)
        .where(LedgerJournal.merchant_id == merchant_id)
        .order_by(LedgerJournal.id.desc())
        .limit(1)
    )
    assert journal_id is not None
    return int(journal_id)


async def _move_available(session: AsyncSession, merchant_id: str, delta: Decimal) -> None:
    await session.execute(
        update(Balance)
        .where(Balance.merchant_id == merchant_id)
        .values(available=Balance.available + delta)
    )


async def _top_up_booked_backwards(session: AsyncSession, merchant_id: str, other: str) -> None:
    """A TOPUP that takes 50.00 out of available to the PSP; the balance row kept equal."""
    await ledger.top_up(session, merchant_id=merchant_id, amount=Decimal("50.00"))
    journal_id = await _last_journal_of(session, merchant_id)
    await session.execute(
        update(LedgerLine)
        .where(LedgerLine.journal_id == journal_id)
        .values(amount=-LedgerLine.amount)
    )
    await _move_available(session, merchant_id, Decimal("-100.00"))


async def _reversal_of_no_payout(session: AsyncSession, merchant_id: str, other: str) -> None:
    """50.00 from nowhere: a REVERSAL (psp_settlement -> available) of no payout."""
    await ledger.post(session, ledger.REVERSAL, merchant_id=merchant_id, amount=Decimal("50.00"))


async def _top_up_credited_to_another(session: AsyncSession, merchant_id: str, other: str) -> None:
    """One merchant's TOPUP whose available line credits another merchant."""
    await ledger.top_up(session, merchant_id=merchant_id, amount=Decimal("50.00"))
    journal_id = await _last_journal_of(session, merchant_id)
    await session.execute(
        update(LedgerLine)
        .where(LedgerLine.journal_id == journal_id, LedgerLine.merchant_id == merchant_id)
        .values(merchant_id=other)
    )
    await _move_available(session, merchant_id, Decimal("-50.00"))
    await _move_available(session, other, Decimal("50.00"))


JOURNALS_OF_NO_PAYOUT: dict[str, Corruption] = {
    "top-up booked from available to psp_settlement": _top_up_booked_backwards,
    "reversal of no payout": _reversal_of_no_payout,
    "top-up credited to another merchant": _top_up_credited_to_another,
}


@pytest.mark.parametrize(
    "corrupt", JOURNALS_OF_NO_PAYOUT.values(), ids=JOURNALS_OF_NO_PAYOUT.keys()
)
async def test_reconcile_reports_a_journal_of_no_payout_that_is_not_a_top_up(
    make_merchant: MerchantFactory, sessions: SessionFactory, corrupt: Corruption
) -> None:
    """Each keeps every balance row equal to its lines: only the journal itself is wrong."""
    merchant = await make_merchant(balance="1000.00")
    other = await make_merchant(balance="1000.00")
    async with sessions() as session:
        await corrupt(session, merchant.merchant_id, other.merchant_id)
        journal_id = await _last_journal_of(session, merchant.merchant_id)
        problems = await reconcile(session)
        await session.rollback()
    assert any(
        problem.startswith(f"journal {journal_id} (") and "names no payout" in problem
        for problem in problems
    ), problems


async def test_a_failed_scheduled_action_its_payout_still_waits_for_is_reported(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """An action the processor marked ERROR (applying it raised) while its payout stays where the
    action was to move it on from: an IN_REVIEW payout whose decision window's expiry failed kept
    its funds held, and nothing said so. Once the payout moved on, it is not reported."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    failed_at = utcnow() - timedelta(days=6)  # within the retention, before other tests' rows
    async with transaction(sessions) as session:
        await session.execute(
            insert(ScheduledAction).values(
                merchant_id=merchant.merchant_id,
                payout_id=payout["id"],
                hold_cycle=1,
                action=Action.EXPIRE_DECISION.value,
                expected_status=PayoutStatus.PENDING.value,
                due_at=failed_at,
                created_at=failed_at,
                applied_at=failed_at,
                result=Result.ERROR.value,
            )
        )

    async def reported() -> bool:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return any(f"payout {payout['id']}: its EXPIRE_DECISION failed" in p for p in problems)

    assert await reported()
    await move_payout(sessions, payout["id"], PayoutStatus.FAILED)
    assert not await reported()
