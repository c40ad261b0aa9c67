"""Money the processor puts back (a released hold) comes back in the order it came on the
merchant's sandbox clock, each after the queue's expiries due by then
(processor_service.transitions._post). A batch judged them all by the first release in it, and a
payout the clock started judged its PSP outcome by that start (diff review): either way, which
queued payout started or expired depended on the order the processor took its messages in."""

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from unittest.mock import patch

import httpx
import pytest
from sqlalchemy import select, update

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Payout, ScheduledAction
from contracts.domain.scheduled_actions import Action
from contracts.messages import ApplyPspOutcome, ProcessPayout
from contracts.settings import Settings
from contracts.topology import APPLY_PSP_OUTCOME_KEY, PROCESS_PAYOUT_KEY
from processor_service.handlers import (
    Context,
    apply_psp_outcome,
    apply_scheduled_action,
    process_payouts,
)
from processor_service.schedule import Timetable
from processor_service.scheduler import Scheduler
from tests.conftest import MerchantFactory
from tests.integration.test_queued_payouts import (
    assert_reconciled,
    create,
    in_review_until,
    statuses,
)
from tests.support.api_helpers import API, auth, new_payout_command, outbox_for_payout, send_ipn
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay
from tests.support.statements import counting_statements

FAILING = "03001230003"  # ACCOUNT_INVALID at once
CONTEXT = Context(None, 0)


async def advance(client: httpx.AsyncClient, merchant: NewMerchant, hours: int) -> None:
    advanced = await client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": hours * 3600}, headers=auth(merchant)
    )
    assert advanced.status_code == 200, advanced.text


async def failure_code(sessions: SessionFactory, payout_id: str) -> str | None:
    async with sessions() as session:
        return await session.scalar(select(Payout.failure_code).where(Payout.id == payout_id))


@pytest.mark.parametrize(
    ("before", "after", "earlier_first", "queued_ends"),
    [
        # A's 60 is short of the queued 80, whose 72 h then run out: B's 40, batched after A,
        # started it, judged at A's time.
        ("60.00", "40.00", True, ("FAILED", "QUEUE_EXPIRED")),
        # A's 90 covers the queued 80 long before its expiry: with B's 10 batched first, it
        # expired, judged at B's time.
        ("90.00", "10.00", False, ("PENDING", None)),
    ],
)
async def test_releases_in_one_batch_come_back_in_the_order_they_came_whatever_their_places(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    before: str,
    after: str,
    earlier_first: bool,
    queued_ends: tuple[str, str | None],
) -> None:
    """A's money comes back at sandbox time 0 (its attempt started then), B's at +73 h; the
    queued payout's expiry is due at +72 h."""
    client = client_that_does_not_wait
    merchant = await make_merchant(balance="100.00")
    a = await new_payout_command(client, sessions, merchant, amount=before, accountNumber=FAILING)
    queued = await create(client, merchant, "80.00")
    await advance(client, merchant, 73)
    b = await new_payout_command(client, sessions, merchant, amount=after, accountNumber=FAILING)
    batch = [(a, CONTEXT), (b, CONTEXT)] if earlier_first else [(b, CONTEXT), (a, CONTEXT)]

    async with transaction(sessions) as session:
        assert await process_payouts(session, batch) == ["FAILED"] * 2

    assert (
        *await statuses(sessions, queued["id"]),
        await failure_code(sessions, queued["id"]),
    ) == queued_ends
    await assert_reconciled(sessions)


@pytest.mark.parametrize("scripted", [True, False], ids=["sandbox", "production"])
async def test_a_steps_release_comes_back_at_its_due_time_after_the_expiries_due_before_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    scripted: bool,
) -> None:
    """A decision window that ended a minute ago releases 100; the queued payout's 72 h ran out
    two minutes ago, its expiry not applied yet (another scheduler worker has it). In
    production, where events carry no sandbox time, the release was judged at the attempt's
    start, ten minutes ago, and started the payout (diff review)."""
    merchant = await make_merchant(balance="100.00")
    in_review = await create(api_client, merchant, "100.00")
    queued = await create(api_client, merchant, "50.00")
    now = utcnow()
    await in_review_until(sessions, in_review["id"], timedelta(minutes=-1))
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout)
            .where(Payout.id == in_review["id"])
            .values(updated_at=now - timedelta(minutes=10))
        )
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == queued["id"])
            .values(due_at=now - timedelta(minutes=2))
        )
        window = await session.scalar(
            select(ScheduledAction).where(
                ScheduledAction.payout_id == in_review["id"],
                ScheduledAction.action == Action.EXPIRE_DECISION.value,
            )
        )
        assert window is not None
        await apply_scheduled_action(session, window, Timetable(scripted=scripted))

    assert await statuses(sessions, in_review["id"], queued["id"]) == ["FAILED", "FAILED"]
    assert await failure_code(sessions, queued["id"]) == "QUEUE_EXPIRED"
    await assert_reconciled(sessions)


async def started_by_the_clock_then_failed_73_h_later(
    client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> tuple[str, str, ProcessPayout, ApplyPspOutcome]:
    """A decision window that ended at +1 h releases 100, which starts the first of two queued
    payouts at that sandbox time (its ProcessPayout carries it); its FAILED is simulated at
    +74 h, when the second queued payout's 72 h have run out. (payout started, payout still
    queued, the started one's ProcessPayout, its ApplyPspOutcome)."""
    merchant = await make_merchant(balance="100.00")
    in_review = await create(client, merchant, "100.00")
    started = await create(client, merchant, "100.00")
    queued = await create(client, merchant, "50.00")
    await in_review_until(sessions, in_review["id"], timedelta(hours=1))
    await advance(client, merchant, 2)
    await Scheduler(sessions, Timetable(), poll_interval_seconds=0.1).apply_due()
    assert await statuses(sessions, started["id"], queued["id"]) == ["PENDING", "QUEUED"]
    await advance(client, merchant, 72)
    simulated = await client.post(
        f"{API}/sandbox/payouts/{started['id']}/simulate",
        json={"outcome": "FAILED"},
        headers=auth(merchant),
    )
    assert simulated.status_code == 202, simulated.text
    rows = await outbox_for_payout(sessions, started["id"])
    [process] = [
        ProcessPayout.model_validate_json(row.body)
        for row in rows
        if row.routing_key == PROCESS_PAYOUT_KEY
    ]
    [outcome] = [
        ApplyPspOutcome.model_validate_json(row.body)
        for row in rows
        if row.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    assert process.sandbox_time is not None
    return started["id"], queued["id"], process, outcome


async def test_an_outcome_taken_with_a_clock_started_payouts_command_counts_from_when_it_came(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """The processor takes the ProcessPayout first, and with it the FAILED already accepted: it
    was judged at the clock's start of the payout, and its 100 started the queued payout."""
    failed, queued, process, _ = await started_by_the_clock_then_failed_73_h_later(
        client_that_does_not_wait, make_merchant, sessions
    )
    async with transaction(sessions) as session:
        assert await process_payouts(session, [(process, CONTEXT)]) == ["FAILED"]

    assert await statuses(sessions, failed, queued) == ["FAILED", "FAILED"]
    assert await failure_code(sessions, queued) == "QUEUE_EXPIRED"
    await assert_reconciled(sessions)


async def test_the_same_outcome_from_its_own_command_counts_from_when_it_came(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    failed, queued, _, outcome = await started_by_the_clock_then_failed_73_h_later(
        client_that_does_not_wait, make_merchant, sessions
    )
    async with transaction(sessions) as session:
        assert await apply_psp_outcome(session, outcome, CONTEXT) == "FAILED"

    assert await statuses(sessions, failed, queued) == ["FAILED", "FAILED"]
    assert await failure_code(sessions, queued) == "QUEUE_EXPIRED"
    await assert_reconciled(sessions)


@pytest.mark.parametrize(
    ("account", "outcome"), [("03001230001", "REVERSED"), ("03001230004", "FAILED")]
)
async def test_an_outcome_accepted_before_an_advance_comes_before_the_expiries_it_made_due(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    account: str,
    outcome: str,
) -> None:
    """The PSP's outcome is accepted at sandbox time 0, and the clock advanced 73 h before the
    processor applied it: the scheduler applied the queued payout's expiry first, and the money
    that came back 72 h before it started nothing (reversals review)."""
    client = client_that_does_not_wait
    merchant = await make_merchant(balance="100.00")
    paid = await new_payout_command(
        client, sessions, merchant, amount="100.00", accountNumber=account
    )
    async with transaction(sessions) as session:
        await process_payouts(session, [(paid, CONTEXT)])
    queued = await create(client, merchant, "100.00")
    said = await send_ipn(client, settings.psp_secret, paid.payout_id, outcome)
    assert said.status_code == 200, said.text
    await advance(client, merchant, 73)

    await Scheduler(sessions, Timetable(), poll_interval_seconds=0.1).apply_due()
    [command] = [
        ApplyPspOutcome.model_validate_json(row.body)
        for row in await outbox_for_payout(sessions, paid.payout_id)
        if row.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    async with transaction(sessions) as session:
        assert await apply_psp_outcome(session, command, CONTEXT) == outcome

    assert await statuses(sessions, queued["id"]) == ["PENDING"]
    await assert_reconciled(sessions)


async def test_an_advance_is_not_settled_while_an_outcome_it_follows_waits_to_be_applied(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """The steps due after the outcome wait for it: the clock is not where the advance put it
    until the processor has applied it."""
    client = client_that_does_not_wait
    merchant = await make_merchant()
    paid = await new_payout_command(client, sessions, merchant, accountNumber="03001230001")
    async with transaction(sessions) as session:
        await process_payouts(session, [(paid, CONTEXT)])
    said = await send_ipn(client, settings.psp_secret, paid.payout_id, "REVERSED")
    assert said.status_code == 200, said.text

    async def settled() -> str:
        advanced = await client.post(
            f"{API}/sandbox/clock/advance", json={"seconds": 1}, headers=auth(merchant)
        )
        assert advanced.status_code == 200, advanced.text
        return advanced.headers["Sandbox-Clock-Settled"]

    assert await settled() == "false"
    [command] = [
        ApplyPspOutcome.model_validate_json(row.body)
        for row in await outbox_for_payout(sessions, paid.payout_id)
        if row.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    async with transaction(sessions) as session:
        await apply_psp_outcome(session, command, CONTEXT)
    assert await settled() == "true"


async def test_a_release_to_a_merchant_with_no_queue_costs_nine_statements(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The payout read, its row, its event; its balance row taken and its queue looked at, under
    that lock (where a look for queued payouts to start came after the posting: one more); the
    posting's three statements."""
    merchant = await make_merchant()
    command = await new_payout_command(api_client, sessions, merchant, accountNumber=FAILING)
    async with transaction(sessions) as session:
        with counting_statements() as counted:
            assert await process_payouts(session, [(command, CONTEXT)]) == ["FAILED"]
    assert len(counted.statements) <= 9, counted.statements


async def test_a_step_passed_over_for_its_held_payout_holds_back_its_merchants_later_steps(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """A decision window that ends at +1 h releases 100, which starts the queued 50 long before
    its 72 h run out. The in-review payout's row held for a moment (a PSP outcome, a cancel:
    ordinary contention) as the scheduler reaches its step: the step was passed over, alone,
    and the queue's expiry (+72 h) applied first (diff review)."""
    client = client_that_does_not_wait
    merchant = await make_merchant(balance="100.00")
    in_review = await create(client, merchant, "100.00")
    queued = await create(client, merchant, "50.00")
    assert await statuses(sessions, in_review["id"], queued["id"]) == ["PENDING", "QUEUED"]
    await in_review_until(sessions, in_review["id"], timedelta(hours=1))
    await advance(client, merchant, 73)
    scheduler = Scheduler(sessions, Timetable(), poll_interval_seconds=0.1)

    async with sessions() as holder, holder.begin():
        await holder.execute(
            select(Payout.id).where(Payout.id == in_review["id"]).with_for_update()
        )
        await asyncio.wait_for(scheduler.apply_due(), timeout=10)

    async def all_applied() -> bool:
        await scheduler.apply_due()
        async with sessions() as session:
            pending = await session.scalar(
                select(ScheduledAction.id).where(
                    ScheduledAction.merchant_id == merchant.merchant_id,
                    ScheduledAction.applied_at.is_(None),
                    ScheduledAction.action.in_(
                        [Action.EXPIRE_DECISION.value, Action.EXPIRE_QUEUE.value]
                    ),
                )
            )
        return pending is None

    await eventually(all_applied, within=10, what="every step applied")
    assert (await statuses(sessions, in_review["id"]))[0] == "FAILED"
    assert await failure_code(sessions, queued["id"]) != "QUEUE_EXPIRED"


def processor_started_this_morning(scheduler: Scheduler) -> None:
    """The processor down all night."""


def broker_back_this_morning(scheduler: Scheduler) -> None:
    """The processor up all night, its broker down: its heartbeat's check found it not working
    for hours, then working again (late fixes review: the hour counted from its start)."""
    with patch.object(time, "monotonic", lambda: 0.0):  # the evening
        scheduler.note_working(True)
    with patch.object(time, "monotonic", lambda: 3600.0):  # an hour into the night
        scheduler.note_working(False)
    with patch.object(time, "monotonic", lambda: 3 * 3600.0):  # the broker still down
        scheduler.note_working(False)
    scheduler.note_working(True)  # back this morning


@pytest.mark.parametrize("night", [processor_started_this_morning, broker_back_this_morning])
async def test_a_failure_made_in_a_night_without_processor_starts_the_queue_before_its_expiry(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    night: Callable[[Scheduler], None],
) -> None:
    """The processor, or its broker, down for three hours: a 0003 payout made an hour into the
    night, holding all the money, and a queue's 72 h running out ten minutes later. Had the
    processor run, the failure's release started the queue. It came back, its scheduler polling
    before its consumer took the night's commands: every payout of the night had waited over
    START_WAIT_LIMIT, so none held back the expiry, and the queued payout failed (overnight
    review)."""
    client = client_that_does_not_wait
    merchant = await make_merchant(balance="100.00")
    failing = await create(client, merchant, "100.00", accountNumber="03001230003")
    queued = await create(client, merchant, "50.00")
    assert await statuses(sessions, failing["id"], queued["id"]) == ["PENDING", "QUEUED"]
    made_at = utcnow() - timedelta(hours=3)
    expires_at = made_at + timedelta(minutes=10)
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout).where(Payout.id == failing["id"]).values(updated_at=made_at)
        )
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == queued["id"])
            .values(due_at=expires_at)
        )
    scheduler = Scheduler(sessions, Timetable(), poll_interval_seconds=0.1)
    night(scheduler)

    await scheduler.apply_due()
    async with running_processor_and_relay(settings):

        async def settled() -> list[str] | None:
            found = await statuses(sessions, failing["id"], queued["id"])
            return found if found[0] == "FAILED" and found[1] in ("SUCCESS", "FAILED") else None

        assert await eventually(settled, within=30, what="both settled") == ["FAILED", "SUCCESS"]
