"""The sandbox clock against the real MariaDB and RabbitMQ, with the processor (its consumers and
its scheduler loop) and an outbox relay in this process: the scripted suffixes 0006-0009 reach
their final states only when a merchant's clock passes their steps, exactly once; clocks are
per merchant; ON_HOLD / IN_REVIEW payouts expire after the decision window."""

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select
from sqlalchemy.dialects.mysql import insert

from api_service.sandbox.clock import MAX_OFFSET_SECONDS
from cli.merchants import NewMerchant
from contracts.clock import SANDBOX_TIME, START_WAIT_LIMIT
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Payout, PayoutEvent, SandboxClock, ScheduledAction
from contracts.domain.statuses import PayoutStatus
from contracts.logging import ContextFilter
from contracts.reconcile import reconcile
from contracts.settings import Settings
from processor_service.scheduler import (
    ListedFrom,
    claim_action_due_ahead,
    claim_due_action,
    merchants_with_actions_due_ahead,
)
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, assert_error, auth, bank_payout_body, payout_body
from tests.support.payout_records import balance_and_ledger, event_types, journal_kinds
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay
from tests.support.statements import explain, explain_sent, statements_sent

OPENING = Decimal("1000000.00")
AMOUNT = "1500.00"
HOUR = 3600


@pytest.fixture(scope="module")
async def processor(settings: Settings) -> AsyncIterator[None]:
    """The processor app (consumers and scheduler loop) and an outbox relay loop."""
    quick = settings.model_copy(update={"scheduler_poll_interval_seconds": 0.1})
    async with running_processor_and_relay(quick):
        yield


async def create(
    client: httpx.AsyncClient, merchant: NewMerchant, suffix: str, amount: str = AMOUNT
) -> str:
    body = bank_payout_body(
        f"123456{suffix}",
        amount=amount,
    )
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def payout(client: httpx.AsyncClient, merchant: NewMerchant, payout_id: str) -> Any:
    response = await client.get(f"{API}/payouts/{payout_id}", headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def reaches(
    client: httpx.AsyncClient, merchant: NewMerchant, payout_id: str, status: str
) -> Any:
    async def probe() -> Any:
        data = await payout(client, merchant, payout_id)
        # PENDING at the PSP, not PENDING as created: submitted, with a PSP reference.
        submitted = status != "PENDING" or data["pspReference"] is not None
        return data if data["status"] == status and submitted else None

    return await eventually(probe, within=15, what=f"{payout_id} {status}")


async def advance(client: httpx.AsyncClient, merchant: NewMerchant, seconds: int) -> Any:
    response = await client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": seconds}, headers=auth(merchant)
    )
    assert response.status_code == 200, response.text
    assert response.headers["Sandbox-Clock-Settled"] == "true"
    return response.json()["data"]


async def clock(client: httpx.AsyncClient, merchant: NewMerchant) -> Any:
    response = await client.get(f"{API}/sandbox/clock", headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def sandbox_times(sessions: SessionFactory, payout_id: str) -> dict[str, str | None]:
    async with sessions() as session:
        events = await session.scalars(
            select(PayoutEvent).where(PayoutEvent.payout_id == payout_id)
        )
        return {event.type: orjson.loads(event.body).get("sandboxTime") for event in events}


STATUS_CHANGES = "payouts_status_changes_total"


async def ledger_problems(sessions: SessionFactory, *names: str) -> list[str]:
    async with sessions() as session:
        return [problem for problem in await reconcile(session) if any(n in problem for n in names)]


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


@pytest.mark.usefixtures("processor")
async def test_0006_succeeds_then_is_reversed_48_hours_later_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    merchant = await make_merchant(balance=OPENING)
    payout_id = await create(api_client, merchant, "0006")
    await reaches(api_client, merchant, payout_id, "SUCCESS")
    assert (await clock(api_client, merchant))["offsetSeconds"] == 0
    reversals = REGISTRY.get_sample_value(STATUS_CHANGES, {"status": "REVERSED"}) or 0.0
    caplog.handler.addFilter(ContextFilter())  # the ids a line is about, as our handler adds

    with caplog.at_level(logging.INFO, logger="processor.scheduler"):
        advanced = await advance(api_client, merchant, 49 * HOUR)

    assert [(due["payoutId"], due["action"]) for due in advanced["due"]] == [
        (payout_id, "SCRIPT_STEP")
    ]
    data = await payout(api_client, merchant, payout_id)
    assert (data["status"], data["failureCode"]) == ("REVERSED", "RETURNED_BY_BANK")
    assert await event_types(sessions, payout_id) == (
        "payout.created",
        "payout.processing",
        "payout.succeeded",
        "payout.reversed",
    )
    assert await journal_kinds(sessions, payout_id) == ("HOLD", "PAYOUT", "REVERSAL")
    assert await balance_and_ledger(sessions, merchant.merchant_id) == ((OPENING, 0), (OPENING, 0))
    # Counted and traceable as the processor's changes are: it was neither.
    assert REGISTRY.get_sample_value(STATUS_CHANGES, {"status": "REVERSED"}) == reversals + 1
    (line,) = [
        r for r in caplog.records if r.name == "processor.scheduler" and payout_id in r.getMessage()
    ]
    assert (getattr(line, "payout_id", None), getattr(line, "merchant_id", None)) == (
        payout_id,
        merchant.merchant_id,
    )
    # And by the correlation id of the messages it sent (docs/operations.md, tracing): it had
    # none.
    assert getattr(line, "correlation_id", "").startswith("scheduled-action-")
    # The reversal is stamped with the sandbox time it was due at (48 h after the payout
    # started, in sandbox time: its success followed at once); the events before it with none.
    stamps = await sandbox_times(sessions, payout_id)
    assert stamps["payout.succeeded"] is None
    reversed_at = stamps["payout.reversed"]
    assert reversed_at is not None
    started_at = parse(data["createdAt"])
    assert timedelta(hours=48) <= parse(reversed_at) - started_at < timedelta(hours=48, seconds=5)
    # Once: advancing again changes nothing.
    assert (await advance(api_client, merchant, 100 * HOUR))["due"] == []
    assert len(await event_types(sessions, payout_id)) == 4
    assert await ledger_problems(sessions, merchant.merchant_id, payout_id) == []


@pytest.mark.usefixtures("processor")
async def test_0007_0008_0009_finish_only_when_the_clock_passes_their_steps(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance=OPENING)
    slow = await create(api_client, merchant, "0007")
    offline = await create(api_client, merchant, "0008")
    retried = await create(api_client, merchant, "0009")
    await reaches(api_client, merchant, slow, "PROCESSING")
    await reaches(api_client, merchant, offline, "PENDING")
    assert (await reaches(api_client, merchant, retried, "RETRY"))["attempts"] == 1

    # 29 min: 0009's two next retries (at +1 min, +6 min) ran; nothing else is due yet.
    advanced = await advance(api_client, merchant, 29 * 60)
    assert [due["payoutId"] for due in advanced["due"]] == [retried]
    assert (await payout(api_client, merchant, slow))["status"] == "PROCESSING"
    assert (await payout(api_client, merchant, offline))["status"] == "PENDING"
    waiting = await payout(api_client, merchant, retried)
    assert (waiting["status"], waiting["attempts"]) == ("RETRY", 3)

    # 1 h 59 min: 0007 (at 30 min) and 0009 (at 36 min) finish; 0008 still waits.
    await advance(api_client, merchant, HOUR + 30 * 60)
    assert (await payout(api_client, merchant, slow))["status"] == "SUCCESS"
    assert (await payout(api_client, merchant, offline))["status"] == "PENDING"
    exhausted = await payout(api_client, merchant, retried)
    assert (exhausted["status"], exhausted["failureCode"], exhausted["attempts"]) == (
        "FAILED",
        "RETRIES_EXHAUSTED",
        4,
    )

    # 2 h 1 min: 0008's bank is offline.
    await advance(api_client, merchant, 2 * 60)
    failed = await payout(api_client, merchant, offline)
    assert (failed["status"], failed["failureCode"]) == ("FAILED", "BENEFICIARY_BANK_OFFLINE")

    assert await event_types(sessions, slow) == (
        "payout.created",
        "payout.processing",
        "payout.succeeded",
    )
    assert await event_types(sessions, offline) == (
        "payout.created",
        "payout.processing",
        "payout.pending",
        "payout.failed",
    )
    assert await event_types(sessions, retried) == (
        "payout.created",
        *("payout.processing", "payout.retrying") * 3,
        "payout.processing",
        "payout.failed",
    )
    assert await journal_kinds(sessions, slow) == ("HOLD", "PAYOUT")
    assert await journal_kinds(sessions, offline) == ("HOLD", "RELEASE")
    assert await journal_kinds(sessions, retried) == ("HOLD", "RELEASE")
    spent = Decimal(AMOUNT)
    assert await balance_and_ledger(sessions, merchant.merchant_id) == (
        (OPENING - spent, 0),
        (OPENING - spent, 0),
    )
    assert await ledger_problems(sessions, merchant.merchant_id) == []


@pytest.mark.usefixtures("processor")
async def test_a_queued_payout_that_a_clock_step_starts_says_so_with_sandbox_time(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The 0006 reversal 48 h later puts money back, which starts the queue: payout.dequeued is
    caused by the clock as much as payout.reversed is."""
    merchant = await make_merchant(balance="1500.00")
    reversed_payout = await create(api_client, merchant, "0006")
    await reaches(api_client, merchant, reversed_payout, "SUCCESS")
    body = payout_body(amount="1000.00", queueIfLowBalance=True, accountNumber="1234567777")
    created = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    queued = created.json()["data"]
    assert queued["status"] == "QUEUED", created.text

    await advance(api_client, merchant, 49 * HOUR)

    await reaches(api_client, merchant, queued["id"], "SUCCESS")
    reversed_at = (await sandbox_times(sessions, reversed_payout))["payout.reversed"]
    assert reversed_at is not None
    assert (await sandbox_times(sessions, queued["id"]))["payout.dequeued"] == reversed_at


@pytest.mark.usefixtures("processor")
async def test_a_payout_started_by_one_a_clock_step_started_runs_from_that_step_too(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """0008 fails 2 h in and starts the first queued payout (0003), which fails at once and
    starts the second (0006) at 2 h of sandbox time: reversed 48 h later, within the advance.
    The second's start carried no sandbox time: its script ran from the end of the advance, and
    it was still SUCCESS, its reversal put off to about 99 h."""
    merchant = await make_merchant(balance=AMOUNT)
    offline = await create(api_client, merchant, "0008")
    await reaches(api_client, merchant, offline, "PENDING")
    first, second = [
        await queue(api_client, merchant, AMOUNT, suffix=suffix) for suffix in ("0003", "0006")
    ]

    await advance(api_client, merchant, 51 * HOUR)

    assert (await payout(api_client, merchant, first))["failureCode"] == "ACCOUNT_INVALID"
    assert (await payout(api_client, merchant, second))["status"] == "REVERSED"
    failed_at = (await sandbox_times(sessions, offline))["payout.failed"]
    assert failed_at is not None
    assert (await sandbox_times(sessions, first))["payout.failed"] == failed_at
    assert (await sandbox_times(sessions, second))["payout.dequeued"] == failed_at
    assert await ledger_problems(sessions, merchant.merchant_id) == []


@pytest.mark.usefixtures("processor")
@pytest.mark.parametrize(
    ("suffix", "amount", "hours", "status"),
    [("0006", AMOUNT, 49, "REVERSED"), ("7777", "150000.00", 73, "FAILED")],
    ids=["0006 reversed", "in review expired"],
)
async def test_a_payout_created_just_before_an_advance_finishes_within_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    suffix: str,
    amount: str,
    hours: int,
    status: str,
) -> None:
    """The processor picks the payout up after the advance: its script (or decision window)
    started then, a whole advance late, and the advance answered settled with nothing done."""
    merchant = await make_merchant()
    payout_id = await create(api_client, merchant, suffix, amount)

    await advance(api_client, merchant, hours * HOUR)

    assert (await payout(api_client, merchant, payout_id))["status"] == status


@pytest.mark.usefixtures("processor")
async def test_a_payout_a_clock_step_starts_runs_its_script_from_that_step(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A 0008 payout fails 2 h in and its money starts a queued 0006 payout then; the 0006
    reversal (48 h after) is due 50 h in, inside a 51 h advance. The script started when the
    processor picked the payout up, at the advance's end, and put the reversal off to 99 h."""
    merchant = await make_merchant(balance=AMOUNT)
    failing = await create(api_client, merchant, "0008")
    await reaches(api_client, merchant, failing, "PENDING")
    body = bank_payout_body(
        "1234560006",
        amount=AMOUNT,
        queueIfLowBalance=True,
    )
    created = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert created.json()["data"]["status"] == "QUEUED", created.text

    await advance(api_client, merchant, 51 * HOUR)

    assert (await payout(api_client, merchant, failing))["status"] == "FAILED"
    assert (await payout(api_client, merchant, created.json()["data"]["id"]))["status"] == (
        "REVERSED"
    )


async def queue(
    client: httpx.AsyncClient, merchant: NewMerchant, amount: str, *, suffix: str | None = None
) -> str:
    """A queued payout (to the bank account ending `suffix`: its scenario)."""
    account = {} if suffix is None else {"accountNumber": f"123456{suffix}"}
    body = payout_body(amount=amount, queueIfLowBalance=True, **account)
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.json()["data"]["status"] == "QUEUED", response.text
    return str(response.json()["data"]["id"])


@pytest.mark.usefixtures("processor")
async def test_queued_payouts_expire_72_hours_of_sandbox_time_after_they_were_queued(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The queue's expiry runs on the merchant's clock: advancing it past 72 h expires a queued
    payout before the call answers, and a payout queued on a clock already ahead expires 72 h
    after that; the expiry's money (none held) starts the queue behind it."""
    merchant = await make_merchant(balance="0.00")
    old = await queue(api_client, merchant, "100.00")
    await advance(api_client, merchant, 48 * HOUR)
    behind = await queue(api_client, merchant, "40.00")
    top_up = await api_client.post(
        f"{API}/sandbox/top-up", json={"amount": "50.00"}, headers=auth(merchant)
    )
    assert top_up.json()["data"]["startedPayouts"] == [], top_up.text  # the old one blocks

    advanced = await advance(api_client, merchant, 25 * HOUR)  # 73 h after the old one

    assert [(due["payoutId"], due["action"]) for due in advanced["due"]] == [(old, "EXPIRE_QUEUE")]
    expired = await payout(api_client, merchant, old)
    assert (expired["status"], expired["failureCode"]) == ("FAILED", "QUEUE_EXPIRED")
    assert await event_types(sessions, old) == ("payout.queued", "payout.failed")
    assert await journal_kinds(sessions, old) == ()  # nothing held, nothing released
    failed_at = (await sandbox_times(sessions, old))["payout.failed"]
    assert failed_at is not None
    assert (await sandbox_times(sessions, behind))["payout.dequeued"] == failed_at
    await reaches(api_client, merchant, behind, "SUCCESS")

    # The one queued 48 h in: its expiry, 120 h in, finds it started and is skipped.
    await advance(api_client, merchant, 48 * HOUR)
    recent = {
        action["payoutId"]: action for action in (await clock(api_client, merchant))["recent"]
    }
    assert (recent[behind]["action"], recent[behind]["result"]) == ("EXPIRE_QUEUE", "SKIPPED")
    assert (recent[old]["result"], recent[old]["statusAfter"]) == ("APPLIED", "FAILED")
    assert (await payout(api_client, merchant, behind))["status"] == "SUCCESS"
    assert await ledger_problems(sessions, merchant.merchant_id) == []


@pytest.mark.usefixtures("processor")
async def test_a_payroll_queued_together_expires_together(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Its items' expiries fall due at one instant: the first one's must not start the others
    with the money it leaves (they were held and paid out, a day late)."""
    merchant = await make_merchant(balance="0.00")
    items = [payout_body(amount=amount, queueIfLowBalance=True) for amount in ("1000", "10", "10")]
    response = await api_client.post(
        f"{API}/payouts/batch", json={"payouts": items}, headers=auth(merchant)
    )
    ids = [item["payout"]["id"] for item in response.json()["data"]["results"]]
    top_up = await api_client.post(
        f"{API}/sandbox/top-up", json={"amount": "20.00"}, headers=auth(merchant)
    )
    assert top_up.json()["data"]["startedPayouts"] == [], top_up.text  # the 1000.00 blocks

    await advance(api_client, merchant, 73 * HOUR)

    for payout_id in ids:
        expired = await payout(api_client, merchant, payout_id)
        assert (expired["status"], expired["failureCode"]) == ("FAILED", "QUEUE_EXPIRED")
        assert await journal_kinds(sessions, payout_id) == ()
    results = {
        action["payoutId"]: action["result"]
        for action in (await clock(api_client, merchant))["recent"]
    }
    assert results == dict.fromkeys(ids, "APPLIED")
    assert await balance_and_ledger(sessions, merchant.merchant_id) == (
        (Decimal("20.00"), 0),
        (Decimal("20.00"), 0),
    )


@pytest.mark.usefixtures("processor")
async def test_merchants_clocks_are_independent(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    moved, still = await make_merchant(balance=OPENING), await make_merchant(balance=OPENING)
    moved_payout = await create(api_client, moved, "0008")
    still_payout = await create(api_client, still, "0008")
    await reaches(api_client, moved, moved_payout, "PENDING")
    await reaches(api_client, still, still_payout, "PENDING")

    await advance(api_client, moved, 3 * HOUR)

    assert (await payout(api_client, moved, moved_payout))["status"] == "FAILED"
    assert (await payout(api_client, still, still_payout))["status"] == "PENDING"
    moved_clock, still_clock = await clock(api_client, moved), await clock(api_client, still)
    assert (moved_clock["offsetSeconds"], still_clock["offsetSeconds"]) == (3 * HOUR, 0)
    assert parse(moved_clock["sandboxTime"]) - parse(moved_clock["realTime"]) == timedelta(hours=3)
    assert [action["payoutId"] for action in still_clock["scheduled"]] == [still_payout]
    assert moved_clock["recent"][0]["result"] == "APPLIED"


@pytest.mark.usefixtures("processor")
async def test_undecided_payouts_expire_after_72_hours_and_release_the_hold(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance=OPENING)
    on_hold = await create(api_client, merchant, "0005")
    in_review = await create(api_client, merchant, "0001", amount="150000.00")
    decided = await create(api_client, merchant, "0005")
    await reaches(api_client, merchant, on_hold, "ON_HOLD")
    await reaches(api_client, merchant, in_review, "IN_REVIEW")
    await reaches(api_client, merchant, decided, "ON_HOLD")
    response = await api_client.post(
        f"{API}/sandbox/payouts/{decided}/simulate",
        json={"outcome": "SUCCESS"},
        headers=auth(merchant),
    )
    assert response.status_code == 202, response.text
    await reaches(api_client, merchant, decided, "SUCCESS")

    await advance(api_client, merchant, 71 * HOUR)
    assert (await payout(api_client, merchant, on_hold))["status"] == "ON_HOLD"
    assert (await payout(api_client, merchant, in_review))["status"] == "IN_REVIEW"

    await advance(api_client, merchant, 2 * HOUR)
    for payout_id in (on_hold, in_review):
        expired = await payout(api_client, merchant, payout_id)
        assert (expired["status"], expired["failureCode"]) == ("FAILED", "DECISION_EXPIRED")
        assert await journal_kinds(sessions, payout_id) == ("HOLD", "RELEASE")
    assert (await payout(api_client, merchant, decided))["status"] == "SUCCESS"
    assert await journal_kinds(sessions, decided) == ("HOLD", "PAYOUT")
    async with sessions() as session:
        rows = await session.execute(
            select(ScheduledAction.payout_id, ScheduledAction.result).where(
                ScheduledAction.merchant_id == merchant.merchant_id
            )
        )
        results = {payout_id: result for payout_id, result in rows}
    assert results == {on_hold: "APPLIED", in_review: "APPLIED", decided: "SKIPPED"}
    remaining = OPENING - Decimal(AMOUNT)
    assert await balance_and_ledger(sessions, merchant.merchant_id) == (
        (remaining, 0),
        (remaining, 0),
    )
    assert await ledger_problems(sessions, merchant.merchant_id) == []


async def test_an_advance_replayed_with_its_key_moves_the_clock_once(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    headers = auth(merchant)
    for _ in range(2):
        response = await api_client.post(
            f"{API}/sandbox/clock/advance", json={"seconds": 60}, headers=headers
        )
        assert response.status_code == 200, response.text
    assert response.headers.get("Idempotent-Replayed") == "true"
    assert (await clock(api_client, merchant))["offsetSeconds"] == 60


async def test_an_advance_does_not_wait_for_a_payout_stuck_before_its_submission(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """An advance waits for the payouts the processor has yet to submit (their steps start with
    them), but not for one stuck past the scheduler's limit (its command dead-lettered, say):
    every advance of that merchant waited out its wait and answered unsettled (clock review).
    The stuck payout is written by hand, with no command: no processor can submit it."""
    merchant = await make_merchant()
    stuck_since = utcnow() - START_WAIT_LIMIT - timedelta(minutes=1)
    stuck = Payout(
        id=str(uuid.uuid4()),
        merchant_id=merchant.merchant_id,
        merchant_reference="stuck",
        amount=Decimal(AMOUNT),
        currency="PKR",
        dest_type="BANK",
        bank_code="HBL",
        account_number="PK36SCBL0000001123456702",
        account_title="Stuck",
        status=PayoutStatus.PENDING.value,
        attempts=0,
        hold_cycle=1,
        created_at=stuck_since,
        updated_at=stuck_since,
        in_bulk=False,
    )
    async with transaction(sessions) as session:
        session.add(stuck)
    try:
        waiting = settings.model_copy(update={"sandbox_clock_wait_seconds": 0.5})
        async with in_process_api(waiting) as client:
            response = await client.post(
                f"{API}/sandbox/clock/advance", json={"seconds": 60}, headers=auth(merchant)
            )
    finally:
        async with transaction(sessions) as session:
            await session.execute(delete(Payout).where(Payout.id == stuck.id))

    assert response.status_code == 200, response.text
    assert response.headers["Sandbox-Clock-Settled"] == "true"


@pytest.mark.parametrize("body", [{"seconds": 0}, {"seconds": -5}, {"seconds": 1.5}, {}])
async def test_an_advance_needs_a_positive_whole_number_of_seconds(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, body: dict[str, Any]
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/sandbox/clock/advance", json=body, headers=auth(merchant)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_a_clock_goes_at_most_100_years_ahead(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Once past 9999-12-31 a clock had no sandbox time (GET /sandbox/clock was a 500) and the
    scheduler's bound, the furthest clock, was NULL for every merchant."""
    merchant = await make_merchant()
    async with transaction(sessions) as session:
        await session.execute(
            insert(SandboxClock).values(
                merchant_id=merchant.merchant_id,
                offset_seconds=MAX_OFFSET_SECONDS - 60,
                updated_at=utcnow(),
            )
        )

    refused = await api_client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 61}, headers=auth(merchant)
    )

    error = assert_error(refused, 400, "VALIDATION_ERROR", "seconds")
    assert "100 years" in error["message"]
    assert (await clock(api_client, merchant))["offsetSeconds"] == MAX_OFFSET_SECONDS - 60
    assert (await advance(api_client, merchant, 60))["offsetSeconds"] == MAX_OFFSET_SECONDS
    # 100 years of 365.2425 days: 100 of 366 let a clock go 76 days further.
    assert MAX_OFFSET_SECONDS == (36_524 * 24 + 6) * 3600  # 36,524.25 days


async def test_the_scheduler_claims_read_an_index_range_whatever_the_clocks(
    sessions: SessionFactory, api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """What is due on the database's clock: a range of the claim index. What is due only on an
    advanced clock: the clocks, or the merchants with actions to apply, first, then each
    merchant's range. (One claim bounded by the furthest clock read every pending action of
    every merchant once a clock was far ahead: 90 ms a poll with 50,000 pending, against 2 ms
    now.)"""
    due, *waiting = await explain(sessions, claim_due_action(SANDBOX_TIME))
    assert (due["type"], due["key"]) == ("range", "ix_scheduled_actions_claim"), due
    # The merchant's payouts still waiting to start, and the PSP outcomes still waiting to be
    # applied: off indexes (no_earlier_start_waits).
    for table in ("payouts", "psp_callbacks"):
        reads = [read for read in waiting if read["table"] == table]
        assert reads and all(read["type"] not in ("ALL", "index") for read in reads), waiting
    # Whether an earlier action of the merchant waits (first_of_its_merchant): its index.
    [earlier] = [read for read in waiting if read["table"] == "earlier"]
    assert earlier["key"] == "ix_scheduled_actions_merchant", earlier
    assert earlier["type"] in ("ref", "range"), earlier

    # From the clocks: each probe of a clock's actions (its earliest due, and whether a payout
    # holds it back), a range of the merchant's index.
    clocks, *probes = await explain(
        sessions, merchants_with_actions_due_ahead(listed_from=ListedFrom.CLOCKS)
    )
    assert clocks["table"] == "sandbox_clocks", clocks
    actions = [probe for probe in probes if probe["table"] == "scheduled_actions"]
    assert actions, probes
    for probe in actions:
        assert probe["type"] in ("ref", "range"), probe
        assert probe["key"] == "ix_scheduled_actions_merchant", probe
    # From the merchants with actions to apply, each with its first due: a range of the index
    # that starts with applied_at (a loose scan once it is large); then their clocks, by key.
    pending, clocks, *probes = await explain(
        sessions, merchants_with_actions_due_ahead(listed_from=ListedFrom.PENDING)
    )
    assert pending["table"].startswith("<derived"), pending
    assert (clocks["table"], clocks["type"]) == ("sandbox_clocks", "eq_ref"), clocks
    [actions] = [probe for probe in probes if probe["table"] == "scheduled_actions"]
    assert actions["type"] in ("ref", "range"), actions
    assert actions["key"] == "ix_scheduled_actions_pending_merchant", actions

    merchant = await make_merchant()
    await advance(api_client, merchant, 60)
    clock_row, actions, *after = await explain(
        sessions, claim_action_due_ahead(merchant.merchant_id)
    )

    assert clock_row["table"] == "sandbox_clocks", clock_row
    assert (actions["table"], actions["key"]) == (
        "scheduled_actions",
        "ix_scheduled_actions_merchant",
    )
    assert actions["type"] in ("ref", "range"), actions
    # In index order: locked are only the rows read up to the claimed one.
    assert "filesort" not in str(actions["Extra"]), actions
    [earlier] = [read for read in after if read["table"] == "earlier"]
    assert earlier["key"] == "ix_scheduled_actions_merchant", earlier


async def test_the_clock_is_not_found_in_production(
    production_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    got = await production_client.get(f"{API}/sandbox/clock", headers=auth(merchant, ""))
    moved = await production_client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 60}, headers=auth(merchant)
    )
    assert (got.status_code, moved.status_code) == (404, 404)


async def test_the_clock_lists_what_was_applied_in_the_order_of_its_index(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """By applied_at and id, MariaDB sorted all of a merchant's applied actions to list 20 (51,000
    rows read, 119 ms, at 300,000 payouts: plans review)."""
    merchant = await make_merchant()
    with statements_sent() as sent:
        await clock(api_client, merchant)

    [recent] = [s for s in sent if "applied_at IS NOT NULL" in s.sql and "ORDER BY" in s.sql]
    plan = await explain_sent(sessions, recent)
    assert not [step for step in plan if "filesort" in str(step["Extra"])], plan
