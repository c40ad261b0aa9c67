"""The Balance and Webhooks pages page by cursor, as the payouts page does: by page number the
Balance page counted every ledger line of the merchant twice a view (the history and the chart)
and skipped every line before its page with an OFFSET (2.6 s at page 9,999 of 385,000 lines:
scale review)."""

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from contracts.db.engine import SessionFactory, utcnow
from contracts.settings import Settings
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import create_payout, new_merchant
from tests.support.dashboard_client import signed_in
from tests.support.delivery_records import events_of, seed_delivery

OLDER = re.compile(r'href="/dashboard/balance\?startingAfter=([0-9]+)" rel="next"')


@contextmanager
def sql_sent() -> Iterator[list[tuple[str, Any]]]:
    sent: list[tuple[str, Any]] = []

    def statement(_conn: Any, _cursor: Any, sql: str, parameters: Any, *_args: Any) -> None:
        sent.append((" ".join(sql.split()), parameters))

    event.listen(Engine, "before_cursor_execute", statement)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", statement)


def ledger_reads(sent: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(sql, parameters) for sql, parameters in sent if "FROM ledger_lines" in sql]


async def test_older_ledger_lines_are_read_by_cursor_and_counted_once(
    settings: Settings, sessions: SessionFactory, api_client: httpx.AsyncClient
) -> None:
    merchant = await new_merchant(sessions)
    for _ in range(15):  # two ledger lines each, a top-up's before them: more than a page of 25
        await create_payout(api_client, merchant)
    async with in_process_api(settings) as dashboard:
        await signed_in(dashboard, merchant)
        newest = await dashboard.get("/dashboard/balance")
        (cursor,) = OLDER.findall(newest.text)
        with sql_sent() as sent:
            older = await dashboard.get("/dashboard/balance", params={"startingAfter": cursor})

    assert older.status_code == 200
    assert OLDER.findall(older.text) == []  # the 31st line was the last
    assert older.text.count('<td class="num') >= 6 * 3  # its six lines, three amounts each
    reads = ledger_reads(sent)
    skipped = [parameters[-2] for sql, parameters in reads if sql.endswith("LIMIT %s, %s")]
    assert skipped == [0], reads  # the chart's newest lines alone are read by page (page 1)
    assert len([sql for sql, _ in reads if "count(*)" in sql]) == 1, reads


DELIVERY_ROW = re.compile(r'data-delivery-id="([0-9a-f-]{36})"')
OLDER_LINK = re.compile(r'<a class="button ghost" href="([^"]+)" rel="next">')
LIVE_PART = re.compile(r'data-live-fragment="([^"]+)"')


async def test_after_a_live_refresh_the_older_deliveries_start_after_the_tables_last_row(
    settings: Settings,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """The newest 25 deliveries, PENDING: refreshed live. Two more come in, and the refreshed
    table shows the newest 25: drawn once, "Older" started after the row that was last when
    the page loaded, and the two that slid off the table were on neither page (diff review)."""
    merchant = await make_merchant()
    events = [
        (await events_of(sessions, (await create_payout(api_client, merchant))["id"]))[0]
        for _ in range(28)
    ]
    start = utcnow() - timedelta(hours=1)
    ids = [
        await seed_delivery(
            sessions, event, DeliveryStatus.PENDING, [], start + timedelta(seconds=n)
        )
        for n, event in enumerate(events[:26])
    ]
    async with in_process_api(settings) as client:
        await signed_in(client, merchant)
        page = await client.get("/dashboard/webhooks")
        live = LIVE_PART.search(page.text)
        assert live is not None
        for n, event in enumerate(events[26:], start=26):
            ids.append(
                await seed_delivery(
                    sessions, event, DeliveryStatus.PENDING, [], start + timedelta(seconds=n)
                )
            )
        refreshed = await client.get(html.unescape(live.group(1)))
        older = OLDER_LINK.search(refreshed.text)
        assert older is not None, "the refreshed part carries its own pager"
        older_page = await client.get(html.unescape(older.group(1)))

    shown = DELIVERY_ROW.findall(refreshed.text) + DELIVERY_ROW.findall(older_page.text)
    assert [ids.index(one) for one in ids if one not in shown] == []
