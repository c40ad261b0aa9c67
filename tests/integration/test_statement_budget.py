"""How many statements a payout costs the database: a ceiling per request that fails the day
someone adds a round trip to the hot path (`make bench` measures the whole pipeline)."""

import httpx
import pytest

from api_service.directory.active import ACTIVE_DIRECTORY
from contracts.db.engine import SessionFactory, transaction
from contracts.settings import Settings
from processor_service.handlers import Context, process_payout, process_payouts
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import create_payout, new_payout_command
from tests.support.statements import counting_statements, statements_built

# The idempotency key (carrying the answer); the savepoint a refusal rolls back to (the key stays
# claimed until its refusal is stored); payout; its event; its two outbox messages; the HOLD
# journal; the balance's one conditional UPDATE; the two ledger lines. The merchant of the API key
# is remembered from the first create (api_service/merchant_cache.py).
CREATE_STATEMENTS = 8


async def test_a_create_is_one_transaction_of_at_most_eight_statements(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    await create_payout(api_client, merchant)  # the directory and the key are remembered now

    with counting_statements() as counted:
        await create_payout(api_client, merchant)

    statements = counted.own_statements
    assert len(statements) <= CREATE_STATEMENTS, "\n".join(statements)
    assert (counted.commits, counted.rollbacks) == (1, 0), counted
    # The balance row is locked by its UPDATE: only the ledger lines and the commit may follow.
    [balance_update] = [sql for sql in statements if sql.startswith("UPDATE balances")]
    assert statements[statements.index(balance_update) + 1 :] == [
        sql for sql in statements if sql.startswith("INSERT INTO ledger_lines")
    ]


async def test_a_create_whose_caches_went_stale_costs_the_same_and_builds_nothing(
    settings: Settings, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a slow machine, where the 2-second caches of the merchant and of the sandbox fault
    settings expire between the two creates: their reads are not the create's own statements,
    and they build no statement either. The directory's 10-second cache is stale at each create
    too: left to its clock, it expired between the two now and then, and showed that its read
    was built anew at each refresh (a red CI)."""
    monkeypatch.setattr(ACTIVE_DIRECTORY, "refresh_seconds", 0.0)
    merchant = await make_merchant()
    async with in_process_api(settings.model_copy(update={"api_key_cache_seconds": 0})) as api:
        await create_payout(api, merchant)

        with counting_statements() as counted, statements_built() as built:
            await create_payout(api, merchant)

    assert counted.cache_refreshes, "the caches were read again"
    assert len(counted.own_statements) <= CREATE_STATEMENTS, "\n".join(counted.statements)
    assert (counted.commits, counted.rollbacks) == (1, 0), counted
    assert built == []


async def test_a_create_builds_no_statement_of_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """Every statement of a create is built once per process: none is rebuilt, or copied and
    walked again for its cache key, per request (that was a tenth of the API's CPU)."""
    merchant = await make_merchant()
    await create_payout(api_client, merchant)

    with statements_built() as built:
        await create_payout(api_client, merchant)

    assert built == []


# The payout locked; its one guarded UPDATE (PENDING -> SUCCESS, through PROCESSING in memory);
# the two events; their two messages; the PAYOUT journal; the balance's UPDATE; the two lines.
PROCESS_STATEMENTS = 7


async def test_processing_to_success_is_one_update_of_the_payout_and_seven_statements(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """No relay runs in this module: the test hands the create's command to the handler."""
    merchant = await make_merchant()
    command = await new_payout_command(api_client, sessions, merchant)

    with counting_statements() as counted:
        async with transaction(sessions) as session:
            status = await process_payout(session, command, Context(None, retry_delay_ms=1000))

    assert status == "SUCCESS"
    assert len(counted.statements) <= PROCESS_STATEMENTS, "\n".join(counted.statements)
    assert counted.commits == 1
    assert sum(sql.startswith("UPDATE payouts") for sql in counted.statements) == 1
    assert counted.statements[-3].startswith("INSERT INTO ledger_journals")


async def test_processing_builds_no_statement_of_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """As a create (above): the processor's statements are built once per process."""
    merchant = await make_merchant()
    first, second = [await new_payout_command(api_client, sessions, merchant) for _ in range(2)]
    async with transaction(sessions) as session:
        await process_payout(session, first, Context(None, retry_delay_ms=1000))

    with statements_built() as built:
        async with transaction(sessions) as session:
            await process_payout(session, second, Context(None, retry_delay_ms=1000))

    assert built == []


async def test_a_batch_of_commands_costs_one_update_per_payout_and_a_few_for_all(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Eight payouts of two merchants to SUCCESS in one transaction: the payouts locked in one
    query; one guarded UPDATE each; their events and their messages in one INSERT each; the
    PAYOUT journals, read back; one balance UPDATE per merchant; the balances read back; every
    line in one INSERT. The balance rows are locked from their UPDATEs to the commit only."""
    merchants = [await make_merchant(), await make_merchant()]
    commands = [await new_payout_command(api_client, sessions, merchants[n % 2]) for n in range(8)]
    context = Context(None, retry_delay_ms=1000)

    with counting_statements() as counted:
        async with transaction(sessions) as session:
            statuses = await process_payouts(session, [(c, context) for c in commands])

    assert statuses == ["SUCCESS"] * 8
    assert len(counted.statements) <= 8 + 2 + 7, "\n".join(counted.statements)
    assert counted.commits == 1
    balance_updates = [sql for sql in counted.statements if sql.startswith("UPDATE balances")]
    assert len(balance_updates) == 2
    after_first = counted.statements[counted.statements.index(balance_updates[0]) :]
    assert [sql.split()[0:3] for sql in after_first] == [
        ["UPDATE", "balances", "SET"],
        ["UPDATE", "balances", "SET"],
        ["SELECT", "balances.merchant_id,", "balances.available,"],
        ["INSERT", "INTO", "ledger_lines"],
    ]


async def test_a_batch_builds_no_statement_of_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """As one command (above), whatever the batch's size: its IN lists expand when it runs."""
    merchants = [await make_merchant(), await make_merchant()]
    first, second = [
        [await new_payout_command(api_client, sessions, merchants[n % 2]) for n in range(size)]
        for size in (2, 5)
    ]
    context = Context(None, retry_delay_ms=1000)
    async with transaction(sessions) as session:
        await process_payouts(session, [(command, context) for command in first])

    with statements_built() as built:
        async with transaction(sessions) as session:
            await process_payouts(session, [(command, context) for command in second])

    assert built == []
