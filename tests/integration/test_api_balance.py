"""GET /balance and /balance/history, and no overdraft under concurrent creates."""

import asyncio
from decimal import Decimal

import httpx
from sqlalchemy import select

from contracts import ledger
from contracts.db.engine import SessionFactory
from contracts.db.models import Balance
from contracts.payout_queue import start_queued_payouts
from contracts.reconcile import reconcile
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    fail_payout,
    get_balance,
    payout_body,
)
from tests.support.polling import eventually
from tests.support.statements import statement_running, statements_sent


async def test_balance_splits_available_and_locked(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    opening = await get_balance(api_client, merchant)
    assert opening == {
        "currency": "PKR",
        "balance": "1000.00",
        "lockedBalance": "0.00",
        "availableBalance": "1000.00",
        "version": opening["version"],
    }
    await create_payout(api_client, merchant, amount="250.25")
    held = await get_balance(api_client, merchant)
    assert (held["balance"], held["lockedBalance"], held["availableBalance"]) == (
        "1000.00",
        "250.25",
        "749.75",
    )
    assert held["version"] == opening["version"] + 1


async def test_version_counts_every_journal_that_moved_the_balance(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A payroll moves the balance row once for all its holds; its version still goes up by one
    per hold, as /balance promises, so a merchant can tell how many movements it missed."""
    merchant = await make_merchant(balance="1000.00")
    opening = await get_balance(api_client, merchant)
    payroll = await api_client.post(
        f"{API}/payouts/batch",
        json={"payouts": [payout_body(amount="10.00") for _ in range(3)]},
        headers=auth(merchant),
    )
    assert payroll.json()["data"]["summary"]["created"] == 3, payroll.text
    assert (await get_balance(api_client, merchant))["version"] == opening["version"] + 3


async def test_history_lists_the_merchants_ledger_lines_newest_first(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    payout = await create_payout(api_client, merchant, amount="300.00")
    await fail_payout(sessions, payout["id"])

    response = await api_client.get(f"{API}/balance/history", headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    entries = data["entries"]
    summary = [(e["type"], e["amount"], e["balanceAfter"], e["availableAfter"]) for e in entries]
    # Each journal shows its available and held lines; after the release all is available again.
    assert sorted(summary[:2]) == [
        ("RELEASE", "-300.00", "1000.00", "1000.00"),
        ("RELEASE", "300.00", "1000.00", "1000.00"),
    ]
    assert sorted(summary[2:4]) == [
        ("HOLD", "-300.00", "1000.00", "700.00"),
        ("HOLD", "300.00", "1000.00", "700.00"),
    ]
    assert summary[4] == ("TOPUP", "1000.00", "1000.00", "1000.00")
    times = [e["createdAt"] for e in entries]
    assert times == sorted(times, reverse=True) and len({e["id"] for e in entries}) == 5
    assert {e["payoutId"] for e in entries[:4]} == {payout["id"]}
    assert entries[4]["payoutId"] is None
    assert len({e["journalId"] for e in entries}) == 3
    assert all(e["description"] for e in entries)
    assert data["pagination"] == {
        "page": 1,
        "limit": 20,
        "total": 5,
        "totalPages": 1,
        "hasMore": False,
        "nextCursor": None,
    }

    page = await api_client.get(
        f"{API}/balance/history", params={"page": 2, "limit": 2}, headers=auth(merchant, "")
    )
    paged = page.json()["data"]
    assert [e["id"] for e in paged["entries"]] == [e["id"] for e in entries[2:4]]
    assert paged["pagination"]["hasMore"] is True
    too_big = await api_client.get(
        f"{API}/balance/history", params={"limit": 101}, headers=auth(merchant, "")
    )
    assert_error(too_big, 400, "VALIDATION_ERROR", "limit")


async def test_history_newest_first_never_goes_forward_in_time(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A create that waited for the balance row while a top-up started a queued payout stamped
    its lines before its wait: listed above the payout's, and earlier than them."""
    merchant = await make_merchant(balance="100.00")
    body = payout_body(amount="500.00", queueIfLowBalance=True)
    queued = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert queued.json()["data"]["status"] == "QUEUED", queued.text

    async with sessions() as top_up:  # a top-up split where it holds the balance row
        await ledger.top_up(top_up, merchant_id=merchant.merchant_id, amount=Decimal("450.00"))
        create = asyncio.create_task(
            api_client.post(
                f"{API}/payouts", json=payout_body(amount="10.00"), headers=auth(merchant)
            )
        )
        await eventually(
            lambda: statement_running(sessions, "UPDATE balances"),
            within=10,
            what="the create waiting for the balance row",
        )
        started = await start_queued_payouts(
            top_up, merchant_id=merchant.merchant_id, correlation_id=None
        )
        await top_up.commit()
    assert len(started) == 1
    assert (await create).status_code == 201

    history = await api_client.get(f"{API}/balance/history", headers=auth(merchant, ""))
    stamps = [entry["createdAt"] for entry in history.json()["data"]["entries"]]
    assert len(stamps) == 6  # the opening balance, the top-up, two lines of each hold
    assert stamps == sorted(stamps, reverse=True)  # ISO 8601 in UTC, one format: sortable


async def test_history_shows_only_the_merchants_own_lines(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant, other = await make_merchant(balance="10.00"), await make_merchant(balance="20.00")
    await create_payout(api_client, other, amount="5.00")
    mine = await api_client.get(f"{API}/balance/history", headers=auth(merchant, ""))
    entries = mine.json()["data"]["entries"]
    assert [(e["type"], e["amount"]) for e in entries] == [("TOPUP", "10.00")]


async def test_a_history_page_counts_the_merchants_lines_without_their_journals(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """The total counted the lines joined with their journals: MariaDB then read every merchant's
    lines (1.5 M rows at 300,000 payouts, a second per page: plans review)."""
    merchant = await make_merchant(balance="10.00")
    with statements_sent() as sent:
        answer = await api_client.get(f"{API}/balance/history", headers=auth(merchant, ""))

    assert answer.json()["data"]["pagination"]["total"] == 1
    [count] = [s.sql for s in sent if s.sql.lstrip().upper().startswith("SELECT COUNT(")]
    assert "ledger_journals" not in count, count


async def test_concurrent_creates_never_overdraw(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Balance for exactly five payouts, twenty at once: five succeed, fifteen are refused."""
    merchant = await make_merchant(balance="500.00")
    responses = await asyncio.gather(
        *(
            api_client.post(
                f"{API}/payouts", json=payout_body(amount="100.00"), headers=auth(merchant)
            )
            for _ in range(20)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [422] * 15, [r.text for r in responses]
    for response in responses:
        if response.status_code == 422:
            assert_error(response, 422, "INSUFFICIENT_BALANCE")
    balance = await get_balance(api_client, merchant)
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("0.00", "500.00")
    async with sessions() as session:
        row = await session.scalar(
            select(Balance).where(Balance.merchant_id == merchant.merchant_id)
        )
        assert row is not None
        assert (row.available, row.held) == (Decimal("0.00"), Decimal("500.00"))
        assert await reconcile(session) == []


async def test_concurrent_creates_and_reinitiates_never_overdraw(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Reinitiates compete with creates for the same available funds."""
    merchant = await make_merchant(balance="600.00")
    failed = [await create_payout(api_client, merchant, amount="100.00") for _ in range(3)]
    for payout in failed:
        await fail_payout(sessions, payout["id"])
    creates = [
        api_client.post(f"{API}/payouts", json=payout_body(amount="100.00"), headers=auth(merchant))
        for _ in range(6)
    ]
    reinitiates = [
        api_client.post(f"{API}/payouts/{p['id']}/reinitiate", headers=auth(merchant))
        for p in failed
    ]
    responses = await asyncio.gather(*creates, *reinitiates)
    succeeded = [r for r in responses if r.status_code in (200, 201)]
    refused = [r for r in responses if r.status_code == 422]
    assert (len(succeeded), len(refused)) == (6, 3), [r.text for r in responses]
    balance = await get_balance(api_client, merchant)
    assert (balance["availableBalance"], balance["lockedBalance"]) == ("0.00", "600.00")
    async with sessions() as session:
        assert await reconcile(session) == []


async def test_no_cache_keeps_an_api_answer_and_the_dashboards_assets_stay_cacheable(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """An API answer carries a payout's account number and title, or a new webhook secret: none
    said not to store it (pii review)."""
    merchant = await make_merchant()
    answer = await api_client.get(f"{API}/balance", headers=auth(merchant, ""))
    refused = await api_client.get(f"{API}/balance")
    asset = await api_client.get("/dashboard/static/dashboard.css")

    assert answer.headers["cache-control"] == "no-store"
    assert refused.headers["cache-control"] == "no-store"
    assert "no-store" not in asset.headers.get("cache-control", "")
