"""The ids a merchant sees of counters every merchant shares (ledger lines and journals, request
log entries) no longer count what other merchants did between two of its own (the tenancy
review: A made a payout, B three, A another, and A's two journal ids were 4 apart), and they
still page the lists as cursors."""

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import LedgerLine
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, create_payout
from tests.support.cli import run_payouts
from tests.support.polling import eventually

THEIR_CREATES = 3


async def listed(client: httpx.AsyncClient, merchant: NewMerchant, path: str, **query: Any) -> Any:
    answer = await client.get(f"{API}{path}", params=query, headers=auth(merchant, ""))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


async def test_journal_and_line_ids_do_not_count_another_merchants_postings(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    a, b = await make_merchant(), await make_merchant()
    await create_payout(api_client, a)
    for _ in range(THEIR_CREATES):
        await create_payout(api_client, b)
    await create_payout(api_client, a)

    history = await listed(api_client, a, "/balance/history", limit=100)

    holds = [entry["journalId"] for entry in history["entries"] if entry["type"] == "HOLD"]
    newer, older = dict.fromkeys(holds)  # each hold: a journal of two lines
    assert abs(newer - older) != THEIR_CREATES + 1  # their journals in between
    first = await listed(api_client, a, "/balance/history", limit=2)
    rest = await listed(
        api_client, a, "/balance/history", startingAfter=first["pagination"]["nextCursor"]
    )
    paged = [entry["id"] for entry in first["entries"] + rest["entries"]]
    assert paged == [entry["id"] for entry in history["entries"]]


async def test_request_log_ids_do_not_count_another_merchants_calls(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    a, b = await make_merchant(), await make_merchant()
    await api_client.get(f"{API}/balance", headers=auth(a, ""))
    for _ in range(THEIR_CREATES):
        await api_client.get(f"{API}/balance", headers=auth(b, ""))
    await api_client.get(f"{API}/balance", headers=auth(a, ""))

    async def both_logged() -> list[Any] | None:
        calls = (await listed(api_client, a, "/requests", limit=100))["requests"]
        return calls if len(calls) == 2 else None

    newer, older = await eventually(both_logged, what="A's two calls in its request log")
    assert abs(newer["id"] - older["id"]) != THEIR_CREATES + 1
    first = await listed(api_client, a, "/requests", limit=1)
    assert first["pagination"]["nextCursor"] == newer["id"]
    rest = await listed(api_client, a, "/requests", startingAfter=newer["id"])
    assert [call["id"] for call in rest["requests"]] == [older["id"]]


async def test_an_operator_finds_the_row_behind_an_id_a_merchant_quotes(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    service_env: dict[str, str],
) -> None:
    """The logs and the database carry the rows' own ids: `payouts ids` maps a merchant's back
    and forth (an operator had no way to find the line a merchant asks about)."""
    merchant = await make_merchant()
    [entry] = (await listed(api_client, merchant, "/balance/history"))["entries"]
    async with sessions() as session:
        line_id = await session.scalar(
            select(LedgerLine.id).where(LedgerLine.merchant_id == merchant.merchant_id)
        )

    internal = await asyncio.to_thread(
        run_payouts, service_env, "ids", "internal", str(entry["id"])
    )
    public = await asyncio.to_thread(run_payouts, service_env, "ids", "public", str(line_id))

    assert (internal.returncode, internal.stdout.strip()) == (0, str(line_id)), internal.stderr
    assert (public.returncode, public.stdout.strip()) == (0, str(entry["id"])), public.stderr
