"""The Balance page's ledger pages by cursor, as the payouts page does: by page number it counted
every ledger line of the merchant twice a view (the history and the chart) and skipped every line
before its page with an OFFSET (2.6 s at page 9,999 of 385,000 lines: scale review)."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.conftest import in_process_api
from tests.support.api_helpers import create_payout, new_merchant
from tests.support.dashboard_client import signed_in

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
