"""The ledger audit runs in the background and is kept; the Operations page shows the last one
(plans review: at 300,000 payouts the page ran the audit itself, one statement 16 s, past the
API's 10 s database timeout, and failed on every load)."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

import processor_service.relay_service as relay_service
from contracts import ledger, ledger_audit
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import LedgerAudit, LedgerLine
from contracts.ledger_audit import (
    KEPT_PROBLEMS,
    Audit,
    audit_if_due,
    last_audit,
    record_audit,
    timed_reconcile,
)
from contracts.reconcile import LedgerProblems, reconcile
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.cli import run_payouts
from tests.support.dashboard_client import operator_signed_in
from tests.support.infrastructure import database_account
from tests.support.polling import eventually
from tests.support.statements import statements_sent

OPERATOR_TOKEN = "operator-token-of-the-audit-tests"


async def _unclaimed(sessions: SessionFactory) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(LedgerAudit).values(claimed_at=None))


def _audit_now(problems: list[str], took_seconds: float = 0.5) -> Audit:
    return Audit(problems, len(problems), took_seconds, as_of=utcnow())


async def test_one_of_several_relays_audits_and_what_it_found_is_kept(
    sessions: SessionFactory,
) -> None:
    await _unclaimed(sessions)

    audited = await asyncio.gather(*(audit_if_due(sessions) for _ in range(3)))

    assert sorted(audited) == [False, False, True]
    async with sessions() as session:
        expected = await reconcile(session)
    kept = await last_audit(sessions)
    assert kept.finished_at is not None and kept.took_ms is not None
    assert (kept.problems, kept.problem_count) == (expected[:KEPT_PROBLEMS], len(expected))
    assert not await audit_if_due(sessions), "claimed again within AUDIT_EVERY"
    assert await audit_if_due(sessions, every=timedelta(0))


async def test_the_first_problems_are_kept_and_all_are_counted(sessions: SessionFactory) -> None:
    problems = [f"journal {n} does not balance" for n in range(KEPT_PROBLEMS + 20)]

    await record_audit(sessions, _audit_now(problems, 1.25))

    kept = await last_audit(sessions)
    assert kept.problems == problems[:KEPT_PROBLEMS]
    assert (kept.problem_count, kept.took_ms) == (KEPT_PROBLEMS + 20, 1250)
    await audit_if_due(sessions, every=timedelta(0))  # the real state again, for other tests


async def test_problems_past_the_hundred_of_a_kind_are_counted(
    sessions: SessionFactory, make_merchant: MerchantFactory
) -> None:
    """Each check lists 100 problems, then "... and N more": the audit counted that line as one
    problem, and the N not at all (diff review)."""
    merchant = await make_merchant(balance="0.00")
    async with transaction(sessions) as session:
        for _ in range(110):
            await ledger.top_up(session, merchant_id=merchant.merchant_id, amount=Decimal("1.00"))
    first = select(func.min(LedgerLine.id)).where(LedgerLine.merchant_id == merchant.merchant_id)
    async with transaction(sessions) as session:
        line = await session.scalar(first)
        await session.execute(
            update(LedgerLine).where(LedgerLine.id == line).values(amount=Decimal("2.00"))
        )
    try:
        async with sessions() as session:
            audit = await timed_reconcile(session)
        await record_audit(sessions, audit)
        kept = await last_audit(sessions)
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                update(LedgerLine).where(LedgerLine.id == line).values(amount=Decimal("1.00"))
            )
        await audit_if_due(sessions, every=timedelta(0))  # the real state again

    assert "... and 10 more running balances off not listed" in audit.problems
    assert kept.problem_count == len(audit.problems) - 1 + 10


async def test_an_audit_of_an_older_snapshot_does_not_replace_a_newer_one(
    sessions: SessionFactory,
) -> None:
    """A relay's long audit that began before a `payouts reconcile` and finished after it wrote
    its older snapshot over the newer result (diff review)."""
    async with sessions() as older_session:
        older = await timed_reconcile(older_session)
    older = Audit(["journal 7 does not balance (the older snapshot)"], 1, 16.0, older.as_of)
    async with sessions() as newer_session:
        newer = await timed_reconcile(newer_session)

    assert await record_audit(sessions, newer)
    assert not await record_audit(sessions, older)

    kept = await last_audit(sessions)
    assert (kept.problems, kept.took_ms) == (
        newer.problems[:KEPT_PROBLEMS],
        round(newer.took_seconds * 1000),
    )


@pytest.fixture
def with_operations(settings: Settings) -> Settings:
    return settings.model_copy(update={"operator_token": OPERATOR_TOKEN})


async def test_the_operations_page_shows_the_last_audit_and_runs_none(
    with_operations: Settings, sessions: SessionFactory
) -> None:
    await record_audit(
        sessions, _audit_now(["journal 7 does not balance: 2 lines summing to 1.00"])
    )
    with statements_sent() as sent:
        page = await _operations_page(with_operations)

    assert "journal 7 does not balance" in page
    assert "Needs attention" in page
    assert not [s.sql for s in sent if "ledger_lines" in s.sql or "ledger_journals" in s.sql]
    await audit_if_due(sessions, every=timedelta(0))


async def _operations_page(settings: Settings) -> str:
    async with in_process_api(settings) as client:
        await operator_signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/dashboard/operations")
    assert page.status_code == 200, page.text
    return page.text


@pytest.mark.parametrize("finished", [None, timedelta(days=2)], ids=["never", "two days ago"])
async def test_a_ledger_not_audited_lately_is_not_called_healthy(
    with_operations: Settings, sessions: SessionFactory, finished: timedelta | None
) -> None:
    """A clean audit of two days ago, or none, read "Healthy": it vouches for nothing done since,
    and says no relay runs its chores (diff review)."""
    await record_audit(sessions, _audit_now([]))
    async with transaction(sessions) as session:
        when = None if finished is None else utcnow() - finished
        await session.execute(update(LedgerAudit).values(finished_at=when))
    try:
        page = await _operations_page(with_operations)
    finally:
        await audit_if_due(sessions, every=timedelta(0))

    assert "Needs attention" in page
    assert ("Not audited yet" if finished is None else "no outbox relay has audited") in page


async def test_the_relays_other_chores_run_while_it_audits(
    settings: Settings, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as one more chore, an audit held every other one up for as long as it ran (16 s and
    more at 300,000 payouts): the clock's webhook retries, due each second, among them (diff
    review)."""
    auditing = asyncio.Event()

    async def slow_reconcile(session: AsyncSession) -> LedgerProblems:
        auditing.set()
        await session.execute(text("SELECT SLEEP(20)"))
        return LedgerProblems([], 0)

    released: list[float] = []

    async def release_retries(_sessions: SessionFactory) -> None:
        released.append(time.monotonic())

    monkeypatch.setattr(ledger_audit, "ledger_problems", slow_reconcile)
    monkeypatch.setattr(relay_service, "release_retries_due_on_advanced_clocks", release_retries)
    await _unclaimed(sessions)
    stop = asyncio.Event()
    relay = asyncio.create_task(relay_service.run_outbox_relay(settings, stop))
    try:

        async def under_way() -> bool:
            return auditing.is_set()

        await eventually(under_way, within=30, what="the audit under way")
        audit_started = time.monotonic()

        async def released_twice_since() -> bool:
            return len([at for at in released if at > audit_started]) >= 2

        await eventually(released_twice_since, within=10, what="the clock's retries released")
    finally:
        stop.set()
        await relay


@pytest.fixture
async def read_only_url(settings: Settings, sessions: SessionFactory) -> AsyncIterator[str]:
    """The tests' database as an auditor's account that may only read it."""
    auditor = database_account(
        sessions, settings.database_url, "payouts_audit_ro", granted="SELECT ON *"
    )
    async with auditor as url:
        yield url


async def test_reconcile_as_a_read_only_account_still_gives_its_verdict(
    read_only_url: str, service_env: dict[str, str]
) -> None:
    """Its record of the audit, an UPDATE after the checks, failed the command: the verdict of an
    auditor's read-only account, or of a run on a replica, was lost (diff review)."""
    done = await asyncio.to_thread(
        run_payouts, {**service_env, "PAYOUTS_DATABASE_URL": read_only_url}, "reconcile"
    )

    verdicts = [*done.stdout.splitlines(), *done.stderr.splitlines()]
    assert [line for line in verdicts if line.startswith("ledger ")], done
    assert "not recorded for the Operations page" in done.stderr
