"""Requests under one key whose answer is a refusal (a 4xx): copies sent at once each roll their
work back and store the refusal; another body sent meanwhile never takes the key."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import func, select, text

from contracts.db.engine import SessionFactory
from contracts.db.models import Payout
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth, new_key, payout_body
from tests.support.polling import eventually
from tests.support.statements import statement_running

COPIES = 15


async def test_copies_of_a_refused_create_at_once_get_the_refusal_never_a_503(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """The refusals' claims deadlocked in InnoDB (a duplicate-key insert race), and a deadlock
    there was answered 503 SERVICE_UNAVAILABLE with the database up."""
    merchant = await make_merchant(balance="1.00")  # every create is 422 INSUFFICIENT_BALANCE
    answers: Counter[int] = Counter()
    for _ in range(5):
        key, body = new_key(), payout_body()
        sent = [
            api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
            for _ in range(COPIES)
        ]
        answers.update(response.status_code for response in await asyncio.gather(*sent))
    assert set(answers) <= {409, 422}, answers
    assert answers[422] >= 5, answers


async def _second_sent_while_the_first_runs(
    sessions: SessionFactory,
    row_lock: str,
    first: Callable[[], Awaitable[httpx.Response]],
    first_waits_with: str,
    second: Callable[[], Awaitable[httpx.Response]],
) -> tuple[tuple[int, str], tuple[int, str]]:
    """`first` runs until it waits on the row another transaction locked (`row_lock`), `second`
    (sent to another API process) waits on the key `first` claimed, then the row is let go:
    their answers."""
    async with sessions() as blocker:
        await blocker.execute(text(row_lock))
        first_sent = asyncio.create_task(first())
        await eventually(
            lambda: statement_running(sessions, first_waits_with), what="the first waiting"
        )
        second_sent = asyncio.create_task(second())
        await eventually(
            lambda: statement_running(sessions, "INSERT INTO idempotency_keys"),
            what="the second waiting on the first's key",
        )
        await blocker.rollback()
    return _code(await first_sent), _code(await second_sent)


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("error", {}).get("code", "")


async def _payouts_of(sessions: SessionFactory, merchant_id: str) -> int:
    async with sessions() as session:
        mine = Payout.merchant_id == merchant_id
        return await session.scalar(select(func.count()).select_from(Payout).where(mine)) or 0


async def test_another_body_sent_under_a_refused_creates_key_is_refused_not_run(
    api_client: httpx.AsyncClient,
    other_api_process: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """The refused create rolled back its claim with its work and stored its refusal after: the
    second body took the key in between and created a payout (201), and the first request's
    client was told that its own key had been reused."""
    merchant = await make_merchant(balance="100.00")
    key = new_key()

    def create(client: httpx.AsyncClient, amount: str) -> Callable[[], Awaitable[httpx.Response]]:
        body = payout_body(amount=amount)
        return lambda: client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))

    answers = await _second_sent_while_the_first_runs(
        sessions,
        f"SELECT * FROM balances WHERE merchant_id = '{merchant.merchant_id}' FOR UPDATE",
        create(api_client, "500.00"),  # more than the balance: refused at its last write
        "UPDATE balances",
        create(other_api_process, "50.00"),
    )

    assert answers == ((422, "INSUFFICIENT_BALANCE"), (422, "IDEMPOTENCY_KEY_REUSED"))
    assert await _payouts_of(sessions, merchant.merchant_id) == 0


async def test_a_create_sent_under_a_refused_reinitiates_key_is_refused_not_run(
    api_client: httpx.AsyncClient,
    other_api_process: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant()
    created = await api_client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant))
    payout_id = created.json()["data"]["id"]
    key = new_key()

    answers = await _second_sent_while_the_first_runs(
        sessions,
        f"SELECT * FROM payouts WHERE id = '{payout_id}' FOR UPDATE",
        lambda: api_client.post(
            f"{API}/payouts/{payout_id}/reinitiate", headers=auth(merchant, key)
        ),  # PENDING: 409 INVALID_STATUS
        "SELECT payouts.",
        lambda: other_api_process.post(
            f"{API}/payouts", json=payout_body(), headers=auth(merchant, key)
        ),
    )

    assert answers == ((409, "INVALID_STATUS"), (422, "IDEMPOTENCY_KEY_REUSED"))
    assert await _payouts_of(sessions, merchant.merchant_id) == 1


async def test_copies_waiting_for_a_slow_keyed_request_leave_the_pool_to_others(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Each copy waited for the key in MySQL, holding a pooled connection: a client retrying a
    slow create used up its API process's pool, and another merchant's request waited behind
    the copies (here past the 5 s they waited for the key)."""
    merchant, other = await make_merchant(), await make_merchant()
    key, body = new_key(), payout_body()
    two_connections = settings.model_copy(update={"db_pool_size": 1})  # and 1 of overflow
    async with in_process_api(two_connections) as client, sessions() as blocker:

        def create() -> Awaitable[httpx.Response]:
            return client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))

        mine = f"merchant_id = '{merchant.merchant_id}'"
        await blocker.execute(text(f"SELECT * FROM balances WHERE {mine} FOR UPDATE"))
        first = asyncio.create_task(create())
        await eventually(
            lambda: statement_running(sessions, "UPDATE balances"), what="the first waiting"
        )
        copies = [asyncio.create_task(create()) for _ in range(3)]
        done, _ = await asyncio.wait(copies, timeout=0.5)
        assert not done, "a copy was answered while the key was in use"

        balance = await asyncio.wait_for(
            client.get(f"{API}/balance", headers=auth(other, "")), timeout=2
        )
        await blocker.rollback()
        answers = await asyncio.gather(first, *copies)

    assert balance.status_code == 200
    assert [answer.status_code for answer in answers] == [201] * 4
    assert [answer.headers.get("Idempotent-Replayed") for answer in answers[1:]] == ["true"] * 3
    assert len({answer.json()["data"]["id"] for answer in answers}) == 1
