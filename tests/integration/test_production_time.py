"""With PAYOUTS_ENV=production the merchants' sandbox clocks are not read (contracts.clock,
MerchantTime): a clock a merchant advanced in test mode, on the same database, times nothing and
stamps nothing. It was read: queue expiries, decision windows and webhook retries were timed
41 days ahead, the scheduler claimed actions on the old clock, the relay copied every webhook
retry as overdue, reconcile called every pending action long due, and production events carried
`sandboxTime`. No processor runs here: the tests drive its parts by hand."""

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
from sqlalchemy import select, update

from api_service.dashboard.pipeline import pipeline_health
from cli.merchants import NewMerchant
from cli.reconcile import _check
from contracts.clock import REAL_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import (
    Payout,
    PayoutEvent,
    SandboxClockAdvance,
    ScheduledAction,
    WebhookDelivery,
)
from contracts.domain.scheduled_actions import Action
from contracts.pipeline_health import Thresholds
from contracts.settings import Settings
from processor_service.handlers import Context, process_payout
from processor_service.relay_service import housekeeping
from processor_service.schedule import Timetable
from processor_service.scheduler import Scheduler
from tests.conftest import MerchantFactory, in_process_api, in_production
from tests.integration.test_sandbox_clock import queue
from tests.support.api_helpers import API, auth, new_payout_command
from tests.support.webhook_flow import created_event, event_id_of, first_request, resent_copies
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.app import PayoutEventConsumer
from webhook_service.delivery import Disposition, EventDelivery
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

AHEAD = timedelta(days=41)  # how far the merchant advanced its clock in test mode
PRODUCTION = Timetable(scripted=False)


@pytest.fixture(scope="module")
async def test_mode_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API in test mode, not waiting for an advance to settle (no processor runs here)."""
    unsettled = settings.model_copy(update={"sandbox_clock_wait_seconds": 0.0})
    async with in_process_api(unsettled) as client:
        yield client


async def clock_left_ahead(
    client: httpx.AsyncClient, sessions: SessionFactory, merchant: NewMerchant
) -> None:
    """The merchant's clock, advanced in test mode a day before the switch to production."""
    advanced = await client.post(
        f"{API}/sandbox/clock/advance",
        json={"seconds": int(AHEAD.total_seconds())},
        headers=auth(merchant),
    )
    assert advanced.status_code == 200, advanced.text
    async with transaction(sessions) as session:
        await session.execute(
            update(SandboxClockAdvance)
            .where(SandboxClockAdvance.merchant_id == merchant.merchant_id)
            .values(advanced_at=utcnow() - timedelta(days=1))
        )


async def actions_of(sessions: SessionFactory, payout_id: str) -> list[ScheduledAction]:
    async with sessions() as session:
        rows = await session.scalars(
            select(ScheduledAction).where(ScheduledAction.payout_id == payout_id)
        )
        return list(rows)


async def status_of(sessions: SessionFactory, payout_id: str) -> tuple[str, str | None]:
    async with sessions() as session:
        payout = await session.get(Payout, payout_id)
        assert payout is not None
        return payout.status, payout.failure_code


async def drain(scheduler: Scheduler) -> None:
    """Apply every action the scheduler may claim now (other tests' too), until none is left."""
    for _ in range(100):
        if await scheduler.apply_due() == 0:
            return
    raise AssertionError("the scheduler kept finding actions")


def within_a_minute_of(due: datetime, expected: datetime) -> bool:
    return abs(due - expected) < timedelta(minutes=1)


async def test_a_queued_payout_expires_on_real_time_in_production(
    test_mode_client: httpx.AsyncClient,
    production_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """Its expiry is due 72 h of real time after it was queued; the production scheduler
    neither applies it before (on the old clock it was due already), nor reconcile calls it
    long due; applied, its event carries no sandbox time."""
    merchant = await make_merchant(balance="0.00")
    await clock_left_ahead(test_mode_client, sessions, merchant)

    payout_id = await queue(production_client, merchant, "100.00")

    [expiry] = await actions_of(sessions, payout_id)
    assert within_a_minute_of(expiry.due_at, utcnow() + settings.queued_expiry)
    ledger, pipeline, _ = await _check(in_production(settings), Thresholds())  # payouts reconcile
    operations_page = await pipeline_health(sessions, in_production(settings))
    listed = ledger + pipeline + operations_page.pipeline_problems
    assert not [line for line in listed if payout_id in line]
    scheduler = Scheduler(sessions, PRODUCTION, poll_interval_seconds=0.1)
    await drain(scheduler)
    assert await status_of(sessions, payout_id) == ("QUEUED", None)

    async with transaction(sessions) as session:
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.id == expiry.id)
            .values(due_at=utcnow() - timedelta(seconds=1))
        )
    await drain(scheduler)

    assert await status_of(sessions, payout_id) == ("FAILED", "QUEUE_EXPIRED")
    assert await sandbox_times(sessions, payout_id) == {
        "payout.queued": None,
        "payout.failed": None,
    }


async def sandbox_times(sessions: SessionFactory, payout_id: str) -> dict[str, str | None]:
    async with sessions() as session:
        events = await session.scalars(
            select(PayoutEvent).where(PayoutEvent.payout_id == payout_id)
        )
        return {event.type: orjson.loads(event.body).get("sandboxTime") for event in events}


async def test_a_decision_window_runs_on_real_time_in_production(
    test_mode_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A payout in review: its decision expires 72 h of real time after it was taken up."""
    merchant = await make_merchant()
    command = await new_payout_command(test_mode_client, sessions, merchant, amount="150000.00")
    await clock_left_ahead(test_mode_client, sessions, merchant)

    async with transaction(sessions) as session:
        await process_payout(session, command, Context(None, retry_delay_ms=0), PRODUCTION)

    [expiry] = await actions_of(sessions, command.payout_id)
    assert expiry.action == Action.EXPIRE_DECISION.value
    assert within_a_minute_of(expiry.due_at, utcnow() + PRODUCTION.decision_sla)
    assert await sandbox_times(sessions, command.payout_id) == {
        "payout.created": None,
        "payout.processing": None,
        "payout.in_review": None,
    }


async def test_a_step_scheduled_in_test_mode_still_runs_in_production(
    test_mode_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A 0007 payout (a slow PSP) taken up in test mode waits for its step: applied by a
    production processor, it moves on to SUCCESS (it was marked applied with nothing done, and
    the payout stayed PROCESSING for good)."""
    merchant = await make_merchant()
    command = await new_payout_command(
        test_mode_client, sessions, merchant, accountNumber="1234560007"
    )
    async with transaction(sessions) as session:
        await process_payout(session, command, Context(None, retry_delay_ms=0))
    [step] = await actions_of(sessions, command.payout_id)
    async with transaction(sessions) as session:
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.id == step.id)
            .values(due_at=utcnow() - timedelta(seconds=1))
        )

    await drain(Scheduler(sessions, PRODUCTION, poll_interval_seconds=0.1))

    assert await status_of(sessions, command.payout_id) == ("SUCCESS", None)


async def test_webhook_retries_run_on_real_time_in_production(
    test_mode_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    receiver: WebhookReceiver,
) -> None:
    """A failed attempt's retry is due a step of real time later; the relay's sweep of overdue
    retries leaves it alone (on the old clock it was 41 days late, and copied at once)."""
    receiver.always(Reply(500))
    merchant, row = await created_event(test_mode_client, make_merchant, sessions, receiver.url)
    await clock_left_ahead(test_mode_client, sessions, merchant)
    sender = WebhookSender(timeout_seconds=5, allow_private_urls=True)
    delivery = EventDelivery(
        sessions=sessions,
        sender=sender,
        ladder=RetryLadder.of((60, 300)),
        lease_seconds=20,
        max_batch=4,
        lease_window_seconds=0.005,
        record_window_seconds=0.005,
        time=REAL_TIME,
    )
    request = first_request(row)
    try:
        decision = await delivery.deliver(request)
    finally:
        await delivery.aclose()
        await sender.aclose()
    assert decision.disposition is Disposition.RETRY
    assert decision.step is not None and decision.step.delay_seconds > 30  # not sent at once
    async with sessions() as session:
        due = await session.scalar(
            select(WebhookDelivery.next_attempt_at).where(
                WebhookDelivery.event_id == event_id_of(row)
            )
        )
    assert due is not None and within_a_minute_of(due, utcnow() + timedelta(seconds=60))

    [stalled_retries] = [
        chore
        for chore in housekeeping(in_production(settings), sessions)
        if chore.name == "stalled-webhook-retries"
    ]
    await stalled_retries.run()

    assert await resent_copies(sessions, request.event.payout.id) == []


async def test_the_production_webhook_service_times_retries_on_real_time(
    settings: Settings,
) -> None:
    """The webhook service's delivery is given production's real time (the test above shows
    what that does)."""
    consumer = PayoutEventConsumer(in_production(settings))
    await consumer.open()
    try:
        assert consumer._delivery is not None
        assert consumer._delivery.time == REAL_TIME
    finally:
        await consumer.close()
