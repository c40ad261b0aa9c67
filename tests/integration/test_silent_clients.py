"""A transaction whose client went silent (its network dropping packets: the client gives up on
the connection, the server is never told) against the real MariaDB."""

import contextlib

from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from api_service.app import create_app
from contracts.db.engine import IDLE_TRANSACTION_SECONDS, SessionFactory, create_engine, transaction
from contracts.db.models import Balance
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.polling import eventually


async def test_the_server_ends_a_transaction_its_client_went_silent_on(
    settings: Settings, sessions: SessionFactory, make_merchant: MerchantFactory
) -> None:
    """It kept the transaction, and the merchant's balance row it had locked, for hours (until
    `wait_timeout`): each create of the merchant a 503 (half-open connections review)."""
    merchant = await make_merchant()
    silent = create_engine(settings.database_url, pool_size=1, idle_transaction_seconds=2)
    connection = await silent.connect()
    try:
        await connection.execute(
            select(Balance.merchant_id)
            .where(Balance.merchant_id == merchant.merchant_id)
            .with_for_update()
        )
        # Not a word more from this client.

        async def balance_row_free() -> bool:
            with contextlib.suppress(DBAPIError):  # 1205 / 3572: still held
                async with transaction(sessions) as session:
                    await session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
                    await session.execute(
                        select(Balance.merchant_id)
                        .where(Balance.merchant_id == merchant.merchant_id)
                        .with_for_update()
                    )
                    return True
            return False

        await eventually(balance_row_free, within=20, what="the silent client's lock let go")
    finally:
        with contextlib.suppress(DBAPIError):  # the server closed it
            await connection.close()
        await silent.dispose()


async def test_the_apis_connections_carry_the_idle_limit(settings: Settings) -> None:
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app), app.state.sessions() as session:
        limit = await session.scalar(text("SELECT @@session.idle_transaction_timeout"))

    assert limit == IDLE_TRANSACTION_SECONDS
