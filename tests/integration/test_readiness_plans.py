"""The go-live readiness report's statements read index ranges: a merchant with a long history
made each of them read every row of its payouts, journals, deliveries and attempts (5 to 30 s
for 150,000 payouts, migration 0035). Each statement the report sends is EXPLAINed against a
database where the merchant is one of several, with and without a readiness restart."""

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_service.sandbox import readiness
from api_service.sandbox.faults import FaultKind
from api_service.sandbox.readiness import calls_with_their_retries, readiness_report
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import (
    ApiRequestRecord,
    LedgerJournal,
    Merchant,
    Payout,
    PayoutEvent,
    WebhookAttempt,
    WebhookDelivery,
    table_of,
)
from contracts.domain.statuses import EventType, PayoutStatus
from contracts.ledger import JournalKind
from contracts.settings import Settings
from contracts.webhook_chaos import ChaosKind
from contracts.webhooks import DeliveryStatus
from contracts.wire import format_timestamp
from tests.conftest import in_process_api
from tests.support.api_helpers import new_merchant
from tests.support.dashboard_client import signed_in
from tests.support.statements import explain_sent, statements_sent

PAYOUTS_EACH = 60
START = datetime(2026, 1, 1)
# The report's tables that grow with a merchant's history: read only through an index of the
# merchant's rows, and only the index (a row of `payouts` may be read by its key).
HISTORY = {"payouts", "payout_events", "ledger_journals", "webhook_deliveries", "webhook_attempts"}
INDEX_READS = {"const", "eq_ref", "ref", "range"}
STATUSES = (PayoutStatus.SUCCESS, PayoutStatus.FAILED, PayoutStatus.REVERSED, PayoutStatus.PENDING)
FINAL_EVENTS = {
    PayoutStatus.SUCCESS: EventType.SUCCEEDED,
    PayoutStatus.FAILED: EventType.FAILED,
    PayoutStatus.REVERSED: EventType.REVERSED,
    PayoutStatus.PENDING: EventType.PENDING,
}


def history(merchant_id: str) -> dict[type[Any], list[dict[str, Any]]]:
    """A history of every scenario, one payout a minute: each with three events, each event
    delivered and attempted, its journals (a reinitiation of some failed ones), its API calls
    (a timeout-after-commit and a 429 among them)."""
    rows: dict[type[Any], list[dict[str, Any]]] = {
        table: []
        for table in (
            Payout,
            PayoutEvent,
            LedgerJournal,
            WebhookDelivery,
            WebhookAttempt,
            ApiRequestRecord,
        )
    }
    for n in range(PAYOUTS_EACH):
        payout_id, at = str(uuid.uuid4()), START + timedelta(minutes=n)
        status = STATUSES[n % len(STATUSES)]
        cycle = 2 if status is PayoutStatus.FAILED and n % 3 == 0 else 1
        rows[Payout].append(
            {
                "id": payout_id,
                "merchant_id": merchant_id,
                "merchant_reference": f"ref-{n}",
                "amount": Decimal("150000.00") if n % 7 == 0 else Decimal("100.00"),
                "currency": "PKR",
                "dest_type": "BANK",
                "bank_code": "HBL",
                "account_number": f"PK00HABB{n:012d}{n % 10:04d}",
                "account_title": "A",
                "status": status.value,
                "failure_code": "ACCOUNT_INVALID" if status is PayoutStatus.FAILED else None,
                # Pending at the PSP (an IPN's wait, 0004), as its events say: PENDING without
                # a reference is a stalled payout, which the stalled sweep of a module run after
                # this one on the same database took up, and choked on its made-up event bodies.
                "psp_reference": f"psp-{payout_id}" if status is PayoutStatus.PENDING else None,
                "hold_cycle": cycle,
                "created_at": at,
                "updated_at": at,
            }
        )
        kinds = [(1, JournalKind.HOLD), (1, JournalKind.RELEASE)]
        kinds += [(2, JournalKind.HOLD)] if cycle == 2 else []
        rows[LedgerJournal] += [
            {
                "merchant_id": merchant_id,
                "payout_id": payout_id,
                "hold_cycle": hold_cycle,
                "kind": kind.value,
                "description": kind.value,
                "created_at": at + timedelta(seconds=hold_cycle),
            }
            for hold_cycle, kind in kinds
        ]
        for event_type in (EventType.CREATED, EventType.PROCESSING, FINAL_EVENTS[status]):
            event_id, delivery_id = f"evt_{uuid.uuid4().hex}", str(uuid.uuid4())
            rows[PayoutEvent].append(
                {
                    "id": event_id,
                    "merchant_id": merchant_id,
                    "payout_id": payout_id,
                    "type": event_type.value,
                    "body": b"{}",
                    "created_at": at,
                }
            )
            rows[WebhookDelivery].append(
                {
                    "id": delivery_id,
                    "event_id": event_id,
                    "merchant_id": merchant_id,
                    "payout_id": payout_id,
                    "event_type": event_type.value,
                    "status": DeliveryStatus.DELIVERED.value,
                    "delivered_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
            )
            rows[WebhookAttempt].append(
                {
                    "delivery_id": delivery_id,
                    "attempt_number": 1,
                    "url": "http://receiver.test/hook",
                    "status_code": 200,
                    "latency_ms": 20,
                    "chaos": ChaosKind.DUPLICATE.value if n % 5 == 0 else None,
                    "created_at": at,
                }
            )
        rows[ApiRequestRecord].append(
            {
                "merchant_id": merchant_id,
                "request_id": f"req-{n}",
                "method": "POST",
                "path": "/api/v1/payouts",
                "status": 429 if n % 11 == 0 else 201,
                "latency_ms": 30,
                "fault": FaultKind.TIMEOUT_AFTER_COMMIT.value if n % 13 == 0 else None,
                "retry_after_seconds": 1 if n % 11 == 0 else None,
                "started_at": at,
                "request_digest": f"{n:064d}",
            }
        )
    return rows


@pytest.fixture
async def merchants_with_history(sessions: SessionFactory) -> AsyncIterator[list[NewMerchant]]:
    """Four merchants alike, their statistics fresh: a plan does not hang on when the server
    last sampled the tables. Their history deleted after the test: its journals have no lines
    and its events made-up bodies, and a module run after this one on the same database
    reconciles (or sweeps) every merchant's (4,636 journals "not balanced" in a CI run)."""
    merchants: list[NewMerchant] = [await new_merchant(sessions) for _ in range(4)]
    async with transaction(sessions) as session:
        for merchant in merchants:
            for model, rows in history(merchant.merchant_id).items():
                await session.execute(insert(table_of(model)), rows)
    async with sessions() as session:
        connection = await session.connection()
        await connection.exec_driver_sql(f"ANALYZE TABLE {', '.join(sorted(HISTORY))}")
    yield merchants
    ids = [merchant.merchant_id for merchant in merchants]
    theirs = select(WebhookDelivery.id).where(WebhookDelivery.merchant_id.in_(ids))
    async with transaction(sessions) as session:
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(theirs)))
        for model in (WebhookDelivery, PayoutEvent, ApiRequestRecord):
            await session.execute(delete(model).where(model.merchant_id.in_(ids)))
        # The payouts' journals (not their merchants' top-ups, which have lines).
        await session.execute(
            delete(LedgerJournal).where(
                LedgerJournal.merchant_id.in_(ids), LedgerJournal.payout_id.is_not(None)
            )
        )
        await session.execute(delete(Payout).where(Payout.merchant_id.in_(ids)))


def careless_reads(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reads of `plan` that scan a table or an index whole, or that read rows of the
    merchant's history behind an index other than a primary key's (the server's own results,
    a UNION's, `<union1,2>`, are read whole)."""
    return [
        read
        for read in plan
        if (read["type"] not in INDEX_READS and not read["table"].startswith("<"))
        or (
            read["table"] in HISTORY
            and read["key"] != "PRIMARY"
            and "Using index" not in (read["Extra"] or "").split("; ")
        )
    ]


@pytest.mark.parametrize("restarted", [False, True], ids=["whole history", "since a restart"])
async def test_every_statement_of_the_report_reads_an_index_range(
    engine: AsyncEngine,
    sessions: SessionFactory,
    merchants_with_history: list[NewMerchant],
    restarted: bool,
) -> None:
    merchant_id = merchants_with_history[0].merchant_id
    since = START + timedelta(minutes=PAYOUTS_EACH // 2) if restarted else None
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == merchant_id).values(readiness_since=since)
        )

    with statements_sent(engine) as sent:  # not the session's API app's request log writes
        async with sessions() as session:
            await readiness_report(session, merchant_id)

    assert len(sent) == 8, [statement.sql for statement in sent]  # every fact read
    careless = {}
    for statement in sent:
        if reads := careless_reads(await explain_sent(sessions, statement)):
            careless[statement.sql] = [(r["table"], r["type"], r["key"], r["Extra"]) for r in reads]
    assert careless == {}, list(careless.values())


async def test_the_report_reads_the_calls_of_the_evidences_requests_alone(
    sessions: SessionFactory, merchants_with_history: list[NewMerchant]
) -> None:
    """Where a retry of each call that carries evidence (a timeout-after-commit, a 429) is
    looked for: the calls of the same request (method, path and body). Every call to the same
    path since the first such call was read and sorted in the API's process: after one lost
    answer and a week of creates, 300,000 calls, and the API's other requests waited seconds
    (found by the readiness review)."""
    merchant_id = merchants_with_history[0].merchant_id
    evidence = [n for n in range(PAYOUTS_EACH) if n % 11 == 0 or n % 13 == 0]
    retried = evidence[1]
    async with transaction(sessions) as session:
        await session.execute(
            insert(ApiRequestRecord).values(
                merchant_id=merchant_id,
                request_id="req-retry",
                method="POST",
                path="/api/v1/payouts",
                status=201,
                latency_ms=30,
                started_at=START + timedelta(minutes=retried, seconds=5),
                request_digest=f"{retried:064d}",
            )
        )

    async with sessions() as session:
        calls = await calls_with_their_retries(session, merchant_id, None)

    assert sorted(call.body_digest or "" for call in calls) == sorted(
        [f"{n:064d}" for n in evidence] + [f"{retried:064d}"]
    )


@pytest.mark.parametrize("restarted", [False, True], ids=["whole history", "since a restart"])
async def test_a_long_run_is_judged_on_its_latest_payouts(
    sessions: SessionFactory,
    merchants_with_history: list[NewMerchant],
    monkeypatch: pytest.MonkeyPatch,
    restarted: bool,
) -> None:
    """150,000 payouts took 4 to 8 s at each view of the report (scale review): a run longer
    than LATEST_PAYOUTS_JUDGED is judged from its latest payouts on, and says so."""
    monkeypatch.setattr(readiness, "LATEST_PAYOUTS_JUDGED", 20)
    merchant_id = merchants_with_history[0].merchant_id
    since = START + timedelta(minutes=10) if restarted else None
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == merchant_id).values(readiness_since=since)
        )

    async with sessions() as session:
        report = await readiness_report(session, merchant_id)

    # Payouts 40 to 59, one a minute; every fifth one's webhooks (3 each) sent as duplicates.
    assert report["since"] == format_timestamp(START + timedelta(minutes=40))
    assert report["limitedToLatestPayouts"] == 20
    (duplicates,) = [item for item in report["items"] if item["id"] == "duplicates_accepted"]
    assert duplicates["evidence"] == "all 12 duplicate deliveries answered right"


@pytest.mark.parametrize("limit", [PAYOUTS_EACH, PAYOUTS_EACH + 1], ids=["as long", "shorter"])
async def test_a_run_no_longer_than_the_limit_is_judged_whole(
    sessions: SessionFactory,
    merchants_with_history: list[NewMerchant],
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
) -> None:
    """A run of exactly as many payouts was cut at its oldest one (diff review)."""
    monkeypatch.setattr(readiness, "LATEST_PAYOUTS_JUDGED", limit)
    async with sessions() as session:
        report = await readiness_report(session, merchants_with_history[0].merchant_id)

    assert (report["since"], report["limitedToLatestPayouts"]) == (None, None)
    (duplicates,) = [item for item in report["items"] if item["id"] == "duplicates_accepted"]
    assert duplicates["evidence"] == "all 36 duplicate deliveries answered right"


async def test_the_dashboard_says_a_long_run_is_judged_on_its_latest_payouts(
    settings: Settings,
    merchants_with_history: list[NewMerchant],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readiness, "LATEST_PAYOUTS_JUDGED", 20)
    async with in_process_api(settings) as client:
        await signed_in(client, merchants_with_history[0])
        page = await client.get("/dashboard/readiness")

    assert page.status_code == 200
    assert "Counting your latest 20 payouts and what you did since the oldest of them" in page.text


async def test_after_a_restart_an_earlier_webhooks_attempts_do_not_count(
    sessions: SessionFactory, merchants_with_history: list[NewMerchant]
) -> None:
    """As the README says: the run counts the webhooks made since its start, with their
    attempts; a resend or retry of an earlier one is not counted (the report reads the run's
    deliveries by ix_deliveries_merchant_created_status, not every delivery of the merchant's)."""
    merchant_id = merchants_with_history[0].merchant_id
    since = START + timedelta(minutes=PAYOUTS_EACH // 2)
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == merchant_id).values(readiness_since=since)
        )
        earlier = await session.scalar(
            select(WebhookDelivery.id).where(
                WebhookDelivery.merchant_id == merchant_id, WebhookDelivery.created_at < since
            )
        )
        session.add(
            WebhookAttempt(
                delivery_id=earlier,
                attempt_number=2,
                url="http://receiver.test/hook",
                status_code=200,
                latency_ms=20,
                chaos=ChaosKind.DUPLICATE.value,
                created_at=since + timedelta(minutes=5),
            )
        )

    async with sessions() as session:
        report = await readiness_report(session, merchant_id)

    # Payouts 30 to 59: every fifth one's three webhooks sent as duplicates.
    (duplicates,) = [item for item in report["items"] if item["id"] == "duplicates_accepted"]
    assert duplicates["evidence"] == "all 18 duplicate deliveries answered right"
