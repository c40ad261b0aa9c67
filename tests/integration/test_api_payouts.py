"""Payouts: create (one transaction of payout + HOLD journal + outbox), read, duplicate
references, and reinitiate of FAILED payouts."""

import asyncio
from decimal import Decimal

import httpx
import orjson
import pytest
from sqlalchemy import select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import LedgerJournal, LedgerLine, Payout, PayoutEvent
from contracts.reconcile import reconcile
from contracts.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, PROCESS_PAYOUT_KEY
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    MONEY,
    TIMESTAMP,
    assert_error,
    auth,
    create_payout,
    fail_payout,
    footprint,
    get_balance,
    outbox_for_payout,
    payout_body,
)

PAYOUT_FIELDS = {
    "id",
    "merchantReference",
    "amount",
    "currency",
    "destType",
    "bankCode",
    "walletCode",
    "accountNumber",
    "accountTitle",
    "status",
    "failureReason",
    "failureCode",
    "pspReference",
    "attempts",
    "processedAt",
    "createdAt",
    "updatedAt",
}


async def test_create_returns_the_pending_payout_in_the_envelope(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    body = payout_body(amount=1500, accountTitle="Ayesha Khan", purpose="salary")
    response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    envelope = response.json()
    assert envelope["success"] is True
    assert envelope["message"] == "Payout created"
    payout = envelope["data"]
    assert set(payout) >= PAYOUT_FIELDS
    assert payout["status"] == "PENDING"
    assert payout["amount"] == "1500.00"
    assert payout["currency"] == "PKR"
    assert payout["merchantReference"] == body["merchantReference"]
    assert payout["attempts"] == 0
    assert payout["processedAt"] is None
    assert TIMESTAMP.fullmatch(payout["createdAt"])
    assert TIMESTAMP.fullmatch(payout["updatedAt"])

    fetched = await api_client.get(f"{API}/payouts/{payout['id']}", headers=auth(merchant, ""))
    assert fetched.status_code == 200
    assert fetched.json()["data"] == payout


async def test_create_writes_payout_hold_journal_and_two_outbox_rows(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    payout = await create_payout(api_client, merchant, amount="250.50")

    async with sessions() as session:
        row = await session.get(Payout, payout["id"])
        assert row is not None
        assert (row.status, row.amount, row.hold_cycle) == ("PENDING", Decimal("250.50"), 1)
        journals = list(
            await session.scalars(select(LedgerJournal).where(LedgerJournal.payout_id == row.id))
        )
        assert [(j.kind, j.hold_cycle) for j in journals] == [("HOLD", 1)]
        lines = list(
            await session.scalars(select(LedgerLine).where(LedgerLine.journal_id == journals[0].id))
        )
        assert sorted((line.account, line.amount) for line in lines) == [
            ("AVAILABLE", Decimal("-250.50")),
            ("HELD", Decimal("250.50")),
        ]
        events = list(
            await session.scalars(select(PayoutEvent).where(PayoutEvent.payout_id == row.id))
        )
        assert [event.type for event in events] == ["payout.created"]

    outbox = await outbox_for_payout(sessions, payout["id"])
    assert sorted((m.exchange, m.routing_key) for m in outbox) == sorted(
        [(COMMANDS_EXCHANGE, PROCESS_PAYOUT_KEY), (EVENTS_EXCHANGE, "payout.created")]
    )
    created_event = next(m for m in outbox if m.routing_key == "payout.created")
    snapshot = orjson.loads(created_event.body)["payout"]
    assert (snapshot["id"], snapshot["status"], snapshot["amount"]) == (
        payout["id"],
        "PENDING",
        "250.50",
    )
    assert all(m.sent_at is None for m in outbox), "the API never publishes itself"


async def test_failed_create_leaves_no_partial_rows(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The payout row is inserted before the hold fails: one transaction means it is gone too."""
    merchant = await make_merchant(balance="99.99")
    before = await footprint(sessions, merchant.merchant_id)
    response = await api_client.post(
        f"{API}/payouts", json=payout_body(amount="100.00"), headers=auth(merchant)
    )
    assert_error(response, 422, "INSUFFICIENT_BALANCE", "amount")
    assert await footprint(sessions, merchant.merchant_id) == before
    assert (await get_balance(api_client, merchant))["availableBalance"] == "99.99"


async def test_duplicate_merchant_reference_is_409(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, other = await make_merchant(), await make_merchant()
    first = await create_payout(api_client, merchant, merchantReference="order-77")
    before = await footprint(sessions, merchant.merchant_id)
    again = await api_client.post(
        f"{API}/payouts", json=payout_body(merchantReference="order-77"), headers=auth(merchant)
    )
    assert_error(again, 409, "DUPLICATE_REFERENCE", "merchantReference")
    assert await footprint(sessions, merchant.merchant_id) == before
    # References are unique per merchant, not globally.
    theirs = await create_payout(api_client, other, merchantReference="order-77")
    assert theirs["id"] != first["id"]


async def test_duplicate_reference_race_creates_exactly_one_payout(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="100000.00")
    body = payout_body(merchantReference="race-1")
    responses = await asyncio.gather(
        *(api_client.post(f"{API}/payouts", json=body, headers=auth(merchant)) for _ in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "DUPLICATE_REFERENCE")
    balance = await get_balance(api_client, merchant)
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("99900.00", "100.00")
    async with sessions() as session:
        assert await reconcile(session) == []


async def creates_at_once(
    client: httpx.AsyncClient, merchant: NewMerchant, *, references: int, copies: int
) -> list[int | str]:
    """`copies` creates of 100.00 under each of `references` references, all at once: each
    answer's status, or its error code."""
    responses = await asyncio.gather(
        *(
            client.post(
                f"{API}/payouts",
                json=payout_body(merchantReference=f"contested-{n % references}", amount="100"),
                headers=auth(merchant),
            )
            for n in range(references * copies)
        )
    )
    return [r.json()["error"]["code"] if r.status_code >= 400 else r.status_code for r in responses]


@pytest.mark.parametrize("round_", range(3))
async def test_reference_race_with_refused_holds_is_never_a_5xx(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    round_: int,
) -> None:
    """Four references, five creates each, funds for two payouts: when the first insert of a
    reference rolls back (refused hold), the creates waiting on it must not deadlock."""
    merchant = await make_merchant(balance="250.00")
    outcomes = await creates_at_once(api_client, merchant, references=4, copies=5)
    assert outcomes.count(201) == 2, outcomes
    assert set(outcomes) <= {201, "DUPLICATE_REFERENCE", "INSUFFICIENT_BALANCE"}, outcomes
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 2
    async with sessions() as session:
        assert await reconcile(session) == []


@pytest.mark.parametrize("round_", range(3))
async def test_a_storm_of_copies_of_a_reference_no_balance_covers_is_never_a_5xx(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    round_: int,
) -> None:
    """Fifteen creates of each of three references, funds for none: each insert that rolls back
    (refused hold) deadlocks the copies waiting on its reference, again and again. Three retries
    of a deadlock's victim were not enough: 503, with the database up."""
    merchant = await make_merchant(balance="50.00")
    outcomes = await creates_at_once(api_client, merchant, references=3, copies=15)
    assert set(outcomes) == {"INSUFFICIENT_BALANCE"}, outcomes
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 0


async def test_amounts_and_timestamps_keep_their_wire_format_everywhere(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="1234.5")
    payout = await create_payout(api_client, merchant, amount=7)
    listed = (await api_client.get(f"{API}/payouts", headers=auth(merchant, ""))).json()
    assert listed["data"]["payouts"][0]["amount"] == "7.00"
    balance = await get_balance(api_client, merchant)
    for name in ("balance", "lockedBalance", "availableBalance"):
        assert MONEY.fullmatch(balance[name]), balance
    assert balance["balance"] == "1234.50"
    history = (await api_client.get(f"{API}/balance/history", headers=auth(merchant, ""))).json()
    for entry in history["data"]["entries"]:
        for name in ("amount", "balanceAfter", "availableAfter"):
            assert MONEY.fullmatch(entry[name].lstrip("-")), entry
        assert TIMESTAMP.fullmatch(entry["createdAt"])
    assert TIMESTAMP.fullmatch(payout["createdAt"])


async def test_get_unknown_payout_is_404(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    for payout_id in ("00000000-0000-4000-8000-000000000001", "not-a-uuid", "x" * 300):
        response = await api_client.get(f"{API}/payouts/{payout_id}", headers=auth(merchant, ""))
        assert_error(response, 404, "NOT_FOUND")


async def test_reinitiate_of_a_payout_that_is_not_failed_is_409(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    before = await footprint(sessions, merchant.merchant_id)
    response = await api_client.post(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant)
    )
    assert_error(response, 409, "INVALID_STATUS")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_reinitiate_holds_the_funds_again_and_returns_to_pending(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    payout = await create_payout(api_client, merchant, amount="400.00")
    await fail_payout(sessions, payout["id"])
    failed = await api_client.get(f"{API}/payouts/{payout['id']}", headers=auth(merchant, ""))
    assert failed.json()["data"]["status"] == "FAILED"
    assert (await get_balance(api_client, merchant))["availableBalance"] == "1000.00"

    response = await api_client.post(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant)
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["failureCode"], data["failureReason"]) == ("PENDING", None, None)
    balance = await get_balance(api_client, merchant)
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("600.00", "400.00")

    async with sessions() as session:
        journals = await session.execute(
            select(LedgerJournal.kind, LedgerJournal.hold_cycle)
            .where(LedgerJournal.payout_id == payout["id"])
            .order_by(LedgerJournal.id)
        )
        assert [tuple(row) for row in journals] == [("HOLD", 1), ("RELEASE", 1), ("HOLD", 2)]
        assert await reconcile(session) == []
    outbox = await outbox_for_payout(sessions, payout["id"])
    assert [m.routing_key for m in outbox][-2:] in (
        ["payout.reinitiated", PROCESS_PAYOUT_KEY],
        [PROCESS_PAYOUT_KEY, "payout.reinitiated"],
    )

    again = await api_client.post(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant)
    )
    assert_error(again, 409, "INVALID_STATUS")


async def test_reinitiate_without_the_funds_is_422_and_stays_failed(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="500.00")
    payout = await create_payout(api_client, merchant, amount="300.00")
    await fail_payout(sessions, payout["id"])
    await create_payout(api_client, merchant, amount="300.00")  # the freed funds are gone
    before = await footprint(sessions, merchant.merchant_id)

    response = await api_client.post(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant)
    )
    assert_error(response, 422, "INSUFFICIENT_BALANCE")
    assert await footprint(sessions, merchant.merchant_id) == before
    fetched = await api_client.get(f"{API}/payouts/{payout['id']}", headers=auth(merchant, ""))
    assert fetched.json()["data"]["status"] == "FAILED"
    balance = await get_balance(api_client, merchant)
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("200.00", "300.00")
    async with sessions() as session:
        assert await reconcile(session) == []


async def test_reinitiate_of_an_unknown_payout_is_404(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    response = await api_client.post(
        f"{API}/payouts/00000000-0000-4000-8000-000000000002/reinitiate",
        headers=auth(await make_merchant()),
    )
    assert_error(response, 404, "NOT_FOUND")
