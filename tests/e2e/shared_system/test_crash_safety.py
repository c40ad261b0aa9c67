"""SIGKILL the processor and the outbox relay at random moments while 200 payouts are in flight:
every payout still reaches its scenario's final state exactly once."""

import asyncio
import random
from decimal import Decimal
from typing import Any

import httpx

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.conftest import MerchantFactory
from tests.support.api_helpers import auth
from tests.support.fault_load import settled
from tests.support.payout_records import balance_and_ledger, event_types, journal_kinds
from tests.support.polling import eventually
from tests.support.scenarios import SCENARIOS, Scenario
from tests.support.system import PROCESSOR, RELAY, RunningSystem

PAYOUTS = 200
CONCURRENCY = 16
OPENING_BALANCE = Decimal("5000000.00")


async def keep_crashing(system: RunningSystem, stop: asyncio.Event, chaos: random.Random) -> int:
    """Kill and restart the processor or the relay every few hundred milliseconds."""
    kills = 0
    while not stop.is_set():
        await asyncio.sleep(chaos.uniform(0.2, 0.8))
        system.restart(chaos.choice((PROCESSOR, RELAY)))
        kills += 1
    return kills


async def create_all(
    http: httpx.AsyncClient, merchant: NewMerchant, scenarios: list[Scenario]
) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(scenario: Scenario) -> str:
        async with gate:
            response = await http.post(
                "/payouts", json=scenario.request_body(), headers=auth(merchant)
            )
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    return list(await asyncio.gather(*(create(scenario) for scenario in scenarios)))


async def test_every_payout_settles_exactly_once_despite_crashes(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant(balance=OPENING_BALANCE)
    chaos = random.Random(20261127)
    scenarios = [SCENARIOS[i % len(SCENARIOS)] for i in range(PAYOUTS)]
    stop = asyncio.Event()
    crasher = asyncio.create_task(keep_crashing(system, stop, chaos))

    ids = await create_all(http, merchant, scenarios)
    await asyncio.sleep(2.0)  # keep crashing while the backlog drains
    stop.set()
    kills = await crasher
    expected = dict(zip(ids, scenarios, strict=True))

    await eventually(
        lambda: _all_settled(sessions, expected),
        within=90,
        interval=0.5,
        what="all payouts settled",
    )

    assert kills >= 5
    assert not system.group.exited(), system.logs()
    wrong: list[Any] = []
    for payout_id, scenario in expected.items():
        events = await event_types(sessions, payout_id)
        journals = await journal_kinds(sessions, payout_id)
        if events != tuple(e.value for e in scenario.events) or journals != scenario.journals:
            wrong.append((scenario.name, payout_id, events, journals))
    assert wrong == []
    row, lines = await balance_and_ledger(sessions, merchant.merchant_id)
    spent = sum(
        (Decimal(s.amount) for s in scenarios if s.journals[-1] == "PAYOUT"), Decimal("0.00")
    )
    held = sum((Decimal(s.amount) for s in scenarios if s.journals == ("HOLD",)), Decimal("0.00"))
    assert row == lines == (OPENING_BALANCE - spent - held, held)


async def _all_settled(sessions: SessionFactory, expected: dict[str, Scenario]) -> bool:
    return await settled(sessions, expected) == len(expected)
