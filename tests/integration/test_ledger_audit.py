"""The ledger audit runs in the background and is kept; the Operations page shows the last one
(plans review: at 300,000 payouts the page ran the audit itself, one statement 16 s, past the
API's 10 s database timeout, and failed on every load)."""

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import LedgerAudit
from contracts.ledger_audit import KEPT_PROBLEMS, audit_if_due, last_audit, record_audit
from contracts.reconcile import reconcile
from contracts.settings import Settings
from tests.conftest import in_process_api
from tests.support.statements import statements_sent

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
OPERATOR_TOKEN = "operator-token-of-the-audit-tests"


async def _unclaimed(sessions: SessionFactory) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(LedgerAudit).values(claimed_at=None))


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

    await record_audit(sessions, problems, 1.25)

    kept = await last_audit(sessions)
    assert kept.problems == problems[:KEPT_PROBLEMS]
    assert (kept.problem_count, kept.took_ms) == (KEPT_PROBLEMS + 20, 1250)
    await audit_if_due(sessions, every=timedelta(0))  # the real state again, for other tests


@pytest.fixture
def with_operations(settings: Settings) -> Settings:
    return settings.model_copy(update={"operator_token": OPERATOR_TOKEN})


async def test_the_operations_page_shows_the_last_audit_and_runs_none(
    with_operations: Settings, sessions: SessionFactory
) -> None:
    await record_audit(sessions, ["journal 7 does not balance: 2 lines summing to 1.00"], 0.5)
    async with in_process_api(with_operations) as client:
        form = await client.get("/dashboard/operations/sign-in")
        await client.post(
            "/dashboard/operations/sign-in",
            data={"csrf_token": CSRF.findall(form.text)[0], "operator_token": OPERATOR_TOKEN},
        )
        with statements_sent() as sent:
            page = await client.get("/dashboard/operations")

    assert page.status_code == 200, page.text
    assert "journal 7 does not balance" in page.text
    assert "Needs attention" in page.text
    assert not [s.sql for s in sent if "ledger_lines" in s.sql or "ledger_journals" in s.sql]
    await audit_if_due(sessions, every=timedelta(0))
