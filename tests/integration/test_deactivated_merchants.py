"""`payouts merchant deactivate` / `activate`: a suspended merchant's queued payouts wait (money
that came back to it, a released hold or a top-up, sent them to the PSP), its dashboard sessions
end, and its activation starts the queue where it stopped, after the expiries due by then
(deactivation review). Real MariaDB; the operator commands run as processes where their
output is the point, in-process elsewhere."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cli.merchants import (
    NewMerchant,
    activate_merchant,
    claim_top_up_key,
    deactivate_merchant,
)
from contracts import ledger
from contracts.clock import MerchantTime
from contracts.db.engine import SessionFactory, committed, transaction, utcnow
from contracts.db.models import Payout, ScheduledAction
from contracts.domain.scheduled_actions import Action
from contracts.funding import top_up_and_start_queued
from contracts.reconcile import reconcile
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, assert_error, auth, payout_body
from tests.support.cli import payouts_said
from tests.support.dashboard_client import signed_in
from tests.support.payout_records import balance_and_ledger, event_types
from tests.support.polling import eventually
from tests.support.processing import fail_as_the_processor
from tests.support.statements import statement_running

T = TypeVar("T")


async def _created(client: httpx.AsyncClient, merchant: NewMerchant, amount: str) -> str:
    body = payout_body(amount=amount, queueIfLowBalance=True)
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    payout_id: str = response.json()["data"]["id"]
    return payout_id


async def _status(sessions: SessionFactory, payout_id: str) -> str | None:
    async with sessions() as session:
        return await session.scalar(select(Payout.status).where(Payout.id == payout_id))


async def _operator(env: dict[str, str], *args: str) -> str:
    code, said = await payouts_said(env, "merchant", *args)
    assert code == 0, said
    return said


async def _deactivated(sessions: SessionFactory, merchant: NewMerchant) -> None:
    """As `payouts merchant deactivate` runs it (`committed`, as the command does)."""
    assert await committed(sessions, lambda s: deactivate_merchant(s, merchant.merchant_id))


async def _activated(
    sessions: SessionFactory, merchant: NewMerchant, settings: Settings
) -> list[Payout] | None:
    time = MerchantTime.of(settings)
    return await committed(
        sessions, lambda s: activate_merchant(s, merchant.merchant_id, time=time)
    )


async def _beside_a_top_up(
    sessions: SessionFactory,
    settings: Settings,
    merchant: NewMerchant,
    amount: str,
    *,
    first: Callable[[AsyncSession], Awaitable[None]],
    operation: Coroutine[Any, Any, T],
    waiting_at: str,
) -> T:
    """`operation` run while a top-up of `amount` has done its `first` step (holding its lock),
    until `operation` waits at the statement that starts `waiting_at`; then the top-up goes on
    and commits. What `operation` returned."""
    async with sessions() as top_up:
        await first(top_up)
        task = asyncio.create_task(operation)
        await eventually(
            lambda: statement_running(sessions, waiting_at), what=f"waiting at {waiting_at}"
        )
        await top_up_and_start_queued(
            top_up, merchant.merchant_id, Decimal(amount), time=MerchantTime.of(settings)
        )
        await top_up.commit()
    return await task


async def _reconciled(sessions: SessionFactory) -> None:
    async with sessions() as session:
        assert await reconcile(session) == []


async def _money_is(
    sessions: SessionFactory, merchant: NewMerchant, available: str, held: str
) -> None:
    """The merchant's balance row (available, held) and its ledger lines, reconciled."""
    money = await balance_and_ledger(sessions, merchant.merchant_id)
    assert money[0] == money[1] == (Decimal(available), Decimal(held))
    await _reconciled(sessions)


async def test_money_back_to_a_deactivated_merchant_starts_its_queue_only_once_activated(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    service_env: dict[str, str],
) -> None:
    merchant = await make_merchant(balance="100.00")
    held = await _created(api_client, merchant, "100.00")
    queued = await _created(api_client, merchant, "80.00")
    assert await _status(sessions, queued) == "QUEUED"

    await _operator(service_env, "deactivate", merchant.merchant_id)
    await fail_as_the_processor(sessions, held)

    assert [await _status(sessions, held), await _status(sessions, queued)] == ["FAILED", "QUEUED"]
    await _money_is(sessions, merchant, "100.00", "0.00")

    said = await _operator(service_env, "activate", merchant.merchant_id)

    assert "started 1 queued payouts" in said, said
    assert await _status(sessions, queued) == "PENDING"
    assert await event_types(sessions, queued) == ("payout.queued", "payout.dequeued")
    await _money_is(sessions, merchant, "20.00", "80.00")


async def test_an_operator_top_up_of_a_deactivated_merchant_starts_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    service_env: dict[str, str],
) -> None:
    merchant = await make_merchant(balance="0.00")
    queued = await _created(api_client, merchant, "500.00")
    await _operator(service_env, "deactivate", merchant.merchant_id)

    said = await _operator(service_env, "topup", merchant.merchant_id, "1000")

    assert "started" not in said, said
    assert await _status(sessions, queued) == "QUEUED"
    await _money_is(sessions, merchant, "1000.00", "0.00")


async def test_activation_applies_the_expiries_due_before_it_starts_the_queue(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """Deactivated past a queued payout's 72 h (the scheduler not yet run), activation must
    expire it, not send it out."""
    merchant = await make_merchant(balance="0.00")
    expired = await _created(api_client, merchant, "300.00")
    await _deactivated(sessions, merchant)
    async with transaction(sessions) as session:
        await ledger.top_up(session, merchant_id=merchant.merchant_id, amount=Decimal("300"))
        await session.execute(
            update(ScheduledAction)
            .where(
                ScheduledAction.payout_id == expired,
                ScheduledAction.action == Action.EXPIRE_QUEUE.value,
            )
            .values(due_at=utcnow())
        )

    started = await _activated(sessions, merchant, settings)

    assert started == []
    assert await _status(sessions, expired) == "FAILED"
    await _reconciled(sessions)


async def test_an_activation_beside_a_top_up_holding_the_balance_row_does_not_deadlock(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """The activation updated the merchant's row, then waited for the balance row the top-up
    held; the top-up's journal then waited for the merchant's row (its foreign key): a
    deadlock, the activation its victim (diff review)."""
    merchant = await make_merchant(balance="0.00")
    queued = await _created(api_client, merchant, "40.00")
    await _deactivated(sessions, merchant)

    async def balance_row(top_up: AsyncSession) -> None:
        await ledger.lock_balance(top_up, merchant_id=merchant.merchant_id)

    started = await _beside_a_top_up(
        sessions,
        settings,
        merchant,
        "100.00",
        first=balance_row,
        operation=_activated(sessions, merchant, settings),
        waiting_at="SELECT balances.available",
    )

    assert [payout.id for payout in started or []] == [queued]
    await _money_is(sessions, merchant, "60.00", "40.00")


async def test_a_deactivation_beside_an_operator_top_up_with_a_key_does_not_fail(
    make_merchant: MerchantFactory, sessions: SessionFactory, settings: Settings
) -> None:
    """A keyed top-up claims its key first (the key row's foreign key: a shared lock on the
    merchant's row), then takes the balance row; the deactivation holds the balance row and
    waits for the merchant's row: a deadlock, the deactivation its victim, and the operator's
    command failed (second diff review). It runs again."""
    merchant = await make_merchant(balance="0.00")

    async def its_key(top_up: AsyncSession) -> None:
        key = str(uuid.uuid4())
        assert await claim_top_up_key(
            top_up, merchant.merchant_id, key, Decimal("10.00"), ttl_seconds=3600
        )

    await _beside_a_top_up(
        sessions,
        settings,
        merchant,
        "10.00",
        first=its_key,
        operation=_deactivated(sessions, merchant),
        waiting_at="UPDATE merchants",
    )

    await _money_is(sessions, merchant, "10.00", "0.00")


async def test_a_deactivation_racing_a_create_of_the_same_merchant_does_not_fail(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A create inserts its rows (a shared lock on the merchant's row), then takes the balance
    row, which the deactivation took first: a deadlock, either its victim (second diff
    review). Both run again; both succeed."""
    merchant = await make_merchant(balance="0.00")
    async with sessions() as holder:  # both queue on the balance row, the deactivation first
        await ledger.lock_balance(holder, merchant_id=merchant.merchant_id)
        deactivation = asyncio.create_task(_deactivated(sessions, merchant))
        await eventually(
            lambda: statement_running(sessions, "SELECT balances.available"),
            what="the deactivation waiting for the balance row",
        )
        body = payout_body(amount="40.00", queueIfLowBalance=True)
        create = asyncio.create_task(
            api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
        )
        await eventually(
            lambda: statement_running(sessions, "UPDATE balances"),
            what="the create waiting for the balance row",
        )
        await holder.rollback()
    await deactivation
    created = await create

    assert created.status_code == 201, created.text
    assert await _status(sessions, created.json()["data"]["id"]) == "QUEUED"


async def test_deactivation_refuses_the_key_and_ends_the_dashboard_sessions(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Refused while the merchant was inactive, its sessions came back with its activation."""
    merchant = await make_merchant()
    async with in_process_api(settings) as client:
        await signed_in(client, merchant)
        await _deactivated(sessions, merchant)
        await _activated(sessions, merchant, settings)

        page = await client.get("/dashboard/balance")
        balance = await client.get(f"{API}/balance", headers=auth(merchant))

    assert page.status_code == 303 and "/dashboard/sign-in" in page.headers["location"]
    assert balance.status_code == 200, balance.text


async def test_a_deactivated_merchants_key_is_refused(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    await _deactivated(sessions, merchant)
    async with in_process_api(settings) as client:  # a new process: no key cached
        balance = await client.get(f"{API}/balance", headers=auth(merchant))

    assert_error(balance, 401, "INVALID_API_KEY")


async def test_an_unknown_merchant_is_exit_1_naming_it(service_env: dict[str, str]) -> None:
    for command in ("deactivate", "activate"):
        code, said = await payouts_said(service_env, "merchant", command, "no-such-merchant")
        assert (code, "no merchant no-such-merchant" in said) == (1, True), said
