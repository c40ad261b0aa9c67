"""A database error's text shows its statement, not its values (pii review): the services log
such errors, and a consumer writes one into a dead letter's last-error header; the values of a
payout's statement are its beneficiary's account, name and purpose."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contracts.db.engine import create_engine
from contracts.settings import Settings

TITLE = "Ayesha Khan Enterprises"


async def test_an_error_names_no_value_of_its_statement(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as failed:
                await connection.execute(
                    text("SELECT * FROM no_such_table WHERE title = :title"), {"title": TITLE}
                )
    finally:
        await engine.dispose()

    assert TITLE not in str(failed.value)
    assert "no_such_table" in str(failed.value)
