"""How many statements a payout costs the database: a ceiling per request that fails the day
someone adds a round trip to the hot path (`make bench` measures the whole pipeline)."""

import httpx

from tests.conftest import MerchantFactory
from tests.support.api_helpers import create_payout
from tests.support.statements import counting_statements

# The idempotency key (carrying the answer); payout; its event; its two outbox messages; the HOLD
# journal; the balance's one conditional UPDATE; the two ledger lines. The merchant of the API key
# is remembered from the first create (api_service/merchant_cache.py).
CREATE_STATEMENTS = 7


async def test_a_create_is_one_transaction_of_at_most_seven_statements(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    await create_payout(api_client, merchant)  # the directory and the key are remembered now

    with counting_statements() as counted:
        await create_payout(api_client, merchant)

    assert len(counted.statements) <= CREATE_STATEMENTS, "\n".join(counted.statements)
    assert (counted.commits, counted.rollbacks) == (1, 0), counted
    # The balance row is locked by its UPDATE: only the ledger lines and the commit may follow.
    [balance_update] = [sql for sql in counted.statements if sql.startswith("UPDATE balances")]
    assert counted.statements[counted.statements.index(balance_update) + 1 :] == [
        sql for sql in counted.statements if sql.startswith("INSERT INTO ledger_lines")
    ]
