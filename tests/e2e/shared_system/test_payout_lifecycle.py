"""Each row of the scenario table, through the real processes, as a merchant sees it; then the
PSP's word (IPN) and the sandbox controls on the parked ones."""

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import auth, payout_body, psp_headers
from tests.support.payout_records import balance_and_ledger, event_types, journal_kinds
from tests.support.polling import eventually
from tests.support.scenarios import SCENARIOS, Scenario

OPENING_BALANCE = Decimal("200000.00")


async def create_payout(
    http: httpx.AsyncClient, api_key_headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    response = await http.post("/payouts", json=payout_body(**fields), headers=api_key_headers)
    assert response.status_code == 201, response.text
    payout: dict[str, Any] = response.json()["data"]
    return payout


async def wait_for(
    http: httpx.AsyncClient, headers: dict[str, str], payout_id: str, done: Any
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        payout: dict[str, Any] = (await http.get(f"/payouts/{payout_id}", headers=headers)).json()[
            "data"
        ]
        return payout if done(payout) else None

    return await eventually(probe, what=f"payout {payout_id} settled")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_scenario_reaches_its_status_with_its_ledger_and_events(
    scenario: Scenario,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant(balance=OPENING_BALANCE)
    headers = auth(merchant)
    created = await create_payout(
        http,
        headers,
        amount=scenario.amount,
        destType="BANK",
        bankCode="HBL",
        walletCode=None,
        accountNumber=scenario.account_number,
    )

    payout = await wait_for(http, headers, created["id"], scenario.is_final)

    assert payout["attempts"] == scenario.attempts
    assert (payout["pspReference"] is not None) == scenario.psp_reference
    assert payout["failureCode"] == scenario.failure_code
    assert await journal_kinds(sessions, payout["id"]) == scenario.journals
    assert await event_types(sessions, payout["id"]) == tuple(e.value for e in scenario.events)
    amount = Decimal(scenario.amount)
    spent = amount if scenario.journals[-1] == "PAYOUT" else Decimal("0.00")
    held = amount if scenario.journals == ("HOLD",) else Decimal("0.00")
    row, lines = await balance_and_ledger(sessions, merchant.merchant_id)
    assert row == lines == (OPENING_BALANCE - spent - held, held)


def signed(settings: Settings, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, psp_headers(settings.psp_secret, raw)


async def test_ipn_settles_a_payout_pending_at_the_psp_and_a_reversal_returns_the_money(
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant(balance="5000.00")
    headers = auth(merchant)
    created = await create_payout(http, headers, amount="1200.00", accountNumber="03001230004")
    await wait_for(http, headers, created["id"], lambda p: p["pspReference"] is not None)

    success = {"eventId": f"ipn-{uuid.uuid4()}", "payoutId": created["id"], "status": "SUCCESS"}
    raw, ipn_headers = signed(settings, success)
    for _ in range(2):  # the PSP retries its callback: applied once
        response = await http.post("/ipn/psp", content=raw, headers=ipn_headers)
        assert response.status_code == 200, response.text
    await wait_for(http, headers, created["id"], lambda p: p["status"] == "SUCCESS")

    reversal = {"eventId": f"ipn-{uuid.uuid4()}", "payoutId": created["id"], "status": "REVERSED"}
    raw, ipn_headers = signed(settings, reversal)
    assert (await http.post("/ipn/psp", content=raw, headers=ipn_headers)).status_code == 200
    await wait_for(http, headers, created["id"], lambda p: p["status"] == "REVERSED")

    assert await journal_kinds(sessions, created["id"]) == ("HOLD", "PAYOUT", "REVERSAL")
    assert await event_types(sessions, created["id"]) == (
        "payout.created",
        "payout.processing",
        "payout.pending",
        "payout.succeeded",
        "payout.reversed",
    )
    balance = (await http.get("/balance", headers=headers)).json()["data"]
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("5000.00", "0.00")


@pytest.mark.parametrize(
    ("account", "amount", "parked_status"),
    [("03001230005", "40.00", "ON_HOLD"), ("03001239999", "150000.00", "IN_REVIEW")],
)
async def test_sandbox_simulation_fails_a_parked_payout_and_releases_its_hold(
    account: str,
    amount: str,
    parked_status: str,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant(balance="200000.00")
    headers = auth(merchant)
    created = await create_payout(http, headers, amount=amount, accountNumber=account)
    await wait_for(http, headers, created["id"], lambda p: p["status"] == parked_status)

    response = await http.post(
        f"/sandbox/payouts/{created['id']}/simulate",
        json={"outcome": "FAILED", "failureReason": "Beneficiary bank declined"},
        headers=auth(merchant),
    )
    assert response.status_code == 202, response.text
    failed = await wait_for(http, headers, created["id"], lambda p: p["status"] == "FAILED")

    assert failed["failureReason"] == "Beneficiary bank declined"
    assert await journal_kinds(sessions, created["id"]) == ("HOLD", "RELEASE")
    balance = (await http.get("/balance", headers=headers)).json()["data"]
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("200000.00", "0.00")


async def test_reinitiated_payout_is_held_and_processed_again(
    http: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    headers = auth(merchant)
    created = await create_payout(http, headers, amount="600.00", accountNumber="03001230003")
    await wait_for(http, headers, created["id"], lambda p: p["status"] == "FAILED")

    response = await http.post(f"/payouts/{created['id']}/reinitiate", headers=auth(merchant))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "PENDING"
    # The attempt count restarts with the new cycle: the scenario table runs from its start.
    await wait_for(
        http, headers, created["id"], lambda p: p["status"] == "FAILED" and p["attempts"] == 1
    )

    assert await journal_kinds(sessions, created["id"]) == ("HOLD", "RELEASE", "HOLD", "RELEASE")
    row, lines = await balance_and_ledger(sessions, merchant.merchant_id)
    assert row == lines == (Decimal("1000.00"), Decimal("0.00"))
