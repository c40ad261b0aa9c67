"""Reads under MySQL 8's default sql_mode, whose ONLY_FULL_GROUP_BY MariaDB's default leaves out:
the session of each test is set to it (MariaDB judges such reads the same way)."""

import httpx
from sqlalchemy import text

from api_service.sandbox.readiness import readiness_report
from contracts.db.engine import SessionFactory
from tests.conftest import MerchantFactory
from tests.support.api_helpers import create_payout

MYSQL8_SQL_MODE = (
    "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)


async def test_the_readiness_report_reads_under_mysql8s_sql_mode(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Its scenario counts grouped by a subquery that the select list named again under an
    alias: MySQL 8 matched them by name, found payouts.id neither grouped nor dependent, and
    refused the read (1055): the report was a 500 (MySQL 8 review)."""
    merchant = await make_merchant()
    await create_payout(api_client, merchant)

    async with sessions() as session:
        await session.execute(text(f"SET SESSION sql_mode = '{MYSQL8_SQL_MODE}'"))
        report = await readiness_report(session, merchant.merchant_id)
        await session.rollback()

    assert report["items"], report
