"""The shared fixed-window counters behind the rate limit and the idempotency-key quota, judged on
the database's clock: `SET timestamp` stands a session at a chosen second."""

import time

from sqlalchemy import text

from api_service.usage_limits import REQUESTS_PER_SECOND, count_hit
from contracts.db.engine import SessionFactory
from tests.conftest import MerchantFactory


async def test_a_statement_of_an_earlier_window_does_not_reset_the_current_ones_count(
    sessions: SessionFactory, make_merchant: MerchantFactory
) -> None:
    """A statement takes its window from when it started; one that waited for the counter's row
    lock across a second's turn ran after the new window's hits. It reset the count, and the
    window it had left behind let a second limit's worth of calls through."""
    merchant = await make_merchant()
    second = int(time.time()) + 60

    async def count_at(at: int, hits: int = 1) -> int:
        async with sessions() as session, session.begin():
            await session.execute(text("SET timestamp = :at"), {"at": at})
            counted = await count_hit(session, merchant.merchant_id, REQUESTS_PER_SECOND, hits)
            await session.execute(text("SET timestamp = DEFAULT"))
            return counted

    assert await count_at(second, hits=3) == 3
    assert await count_at(second - 1) == 4  # late: counted in the window the row is in
    assert await count_at(second) == 5
    assert await count_at(second + 1) == 1
