"""POST /payouts/batch: a payroll of up to 1,000 payouts, one result per item, one transaction,
idempotent as a whole under its key and per item by merchantReference."""

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from api_service.payouts import batch
from contracts.db.engine import SessionFactory
from contracts.reconcile import reconcile
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    footprint,
    get_balance,
    new_key,
    payout_body,
)
from tests.support.polling import eventually
from tests.support.statements import counting_statements, statement_running


def _payroll(count: int, amount: str = "10.00") -> list[dict[str, Any]]:
    return [payout_body(amount=amount) for _ in range(count)]


async def _send(
    client: httpx.AsyncClient, merchant: Any, items: list[Any], key: str | None = None
) -> httpx.Response:
    return await client.post(
        f"{API}/payouts/batch", json={"payouts": items}, headers=auth(merchant, key)
    )


async def test_a_payroll_is_created_in_one_transaction_with_its_ledger_in_order(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    items = [payout_body(amount=amount) for amount in ("100.00", "250.50", "49.50")]

    with counting_statements() as counted:
        response = await _send(api_client, merchant, items)

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["summary"] == {"created": 3, "duplicate": 0, "invalid": 0}
    assert [result["status"] for result in data["results"]] == ["created"] * 3
    assert [result["payout"]["amount"] for result in data["results"]] == [
        "100.00",
        "250.50",
        "49.50",
    ]
    assert counted.commits == 1
    after = await footprint(sessions, merchant.merchant_id)
    assert (after.payouts, after.events, after.outbox) == (3, 3, 6)
    assert (await get_balance(api_client, merchant))["availableBalance"] == "600.00"
    history = await api_client.get(f"{API}/balance/history", headers=auth(merchant, ""))
    holds = [e for e in history.json()["data"]["entries"] if e["type"] == "HOLD"]
    # Newest first, as if posted one by one in the order sent.
    assert [e["availableAfter"] for e in holds if Decimal(e["amount"]) < 0] == [
        "600.00",
        "649.50",
        "900.00",
    ]
    async with sessions() as session:
        assert await reconcile(session) == []


async def test_each_item_is_judged_on_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="300.00")
    existing = await create_payout(api_client, merchant, amount="50.00")
    repeated = payout_body(amount="10.00")
    items = [
        payout_body(amount="100.00"),  # created
        payout_body(accountNumber="12"),  # invalid: the account number
        {**payout_body(), "merchantReference": existing["merchantReference"]},  # duplicate
        repeated,  # created
        {**repeated, "amount": "20.00"},  # invalid: repeats item 3
        payout_body(amount="500.00"),  # invalid: more than what is left
        "not an object",  # invalid
        payout_body(amount="100.00"),  # created: still covered
    ]

    response = await _send(api_client, merchant, items)

    results = response.json()["data"]["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, "created"),
        (1, "invalid"),
        (2, "duplicate"),
        (3, "created"),
        (4, "invalid"),
        (5, "invalid"),
        (6, "invalid"),
        (7, "created"),
    ]
    assert results[1]["errors"][0]["field"] == "accountNumber"
    assert results[2]["payoutId"] == existing["id"]
    assert results[4]["errors"] == [{"field": "merchantReference", "message": "repeats item 3"}]
    assert results[5]["errors"][0]["field"] == "amount"
    assert response.json()["data"]["summary"] == {"created": 3, "duplicate": 1, "invalid": 4}
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 4
    assert (await get_balance(api_client, merchant))["availableBalance"] == "40.00"


async def test_an_invalid_item_echoes_its_reference_in_either_spelling(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A body may spell it `merchant_reference`: an invalid item so spelled came back with
    `merchantReference: null`, and the merchant could match it to its row by index only."""
    merchant = await make_merchant(balance="100.00")
    camel = {**payout_body(accountNumber="12"), "merchantReference": "camel-1"}
    snake = {**payout_body(accountNumber="12"), "merchant_reference": "snake-1"}
    del snake["merchantReference"]

    response = await _send(api_client, merchant, [camel, snake])

    results = response.json()["data"]["results"]
    assert [(r["status"], r["merchantReference"]) for r in results] == [
        ("invalid", "camel-1"),
        ("invalid", "snake-1"),
    ]


async def test_an_item_repeating_the_reference_of_an_item_not_created_is_judged_on_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    first, second = payout_body(amount="10.00"), payout_body(amount="500.00")
    items = [
        {**first, "accountNumber": "12"},  # invalid: the account number
        first,  # created: nothing else has its reference
        second,  # invalid: more than the balance
        {**second, "amount": "20.00"},  # created: covered
    ]

    results = (await _send(api_client, merchant, items)).json()["data"]["results"]

    assert [r["status"] for r in results] == ["invalid", "created", "invalid", "created"]
    assert results[2]["errors"] == [{"field": "amount", "message": "exceeds the available balance"}]


async def test_an_empty_payroll_is_400_naming_payouts(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    response = await _send(api_client, await make_merchant(), [])
    assert_error(response, 400, "VALIDATION_ERROR", "payouts")


async def test_one_payroll_sent_twice_at_once_under_two_keys_is_judged_item_by_item(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The later of the two finds the references taken while it wrote: judged again, it answers
    `duplicate` for each item instead of a 409 for the whole payroll (stored under its key)."""
    for _ in range(5):  # the race is won either way; the answers must not depend on it
        merchant, items = await make_merchant(), _payroll(20)
        answers = await asyncio.gather(*(_send(api_client, merchant, items) for _ in range(2)))

        assert [answer.status_code for answer in answers] == [200, 200], answers[0].text[:300]
        summaries = Counter[str]()
        for answer in answers:
            summaries.update(answer.json()["data"]["summary"])
        assert summaries == {"created": 20, "duplicate": 20, "invalid": 0}
        assert (await footprint(sessions, merchant.merchant_id)).payouts == 20


async def test_a_payroll_keeps_its_other_items_when_a_create_takes_one_of_its_references(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    for _ in range(5):
        merchant, key, items = await make_merchant(), new_key(), _payroll(20)
        payroll, single = await asyncio.gather(
            _send(api_client, merchant, items, key),
            api_client.post(f"{API}/payouts", json=items[-1], headers=auth(merchant)),
        )

        assert payroll.status_code == 200, payroll.text[:300]
        summary = payroll.json()["data"]["summary"]
        if single.status_code == 201:
            assert summary == {"created": 19, "duplicate": 1, "invalid": 0}
        else:
            assert_error(single, 409, "DUPLICATE_REFERENCE")
            assert summary == {"created": 20, "duplicate": 0, "invalid": 0}
        assert (await footprint(sessions, merchant.merchant_id)).payouts == 20
        replay = await _send(api_client, merchant, items, key)
        assert (replay.status_code, replay.content) == (200, payroll.content)


async def test_two_payrolls_spending_one_balance_at_once_are_judged_item_by_item(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """150.00 for two payrolls of 100.00 at once: the later one creates what is left and marks
    the rest invalid on amount, or QUEUED with queueIfLowBalance, never a 422 for the whole."""
    for _ in range(5):
        merchant = await make_merchant(balance="150.00")
        flagged = payout_body(amount="10.00", queueIfLowBalance=True)
        answers = await asyncio.gather(
            _send(api_client, merchant, _payroll(10)),
            _send(api_client, merchant, [*_payroll(9), flagged]),
        )

        assert [answer.status_code for answer in answers] == [200, 200], answers[1].text[:300]
        statuses = Counter(
            result["payout"]["status"] if result["status"] == "created" else result["status"]
            for answer in answers
            for result in answer.json()["data"]["results"]
        )
        assert statuses["PENDING"] == 15, statuses
        assert statuses["invalid"] + statuses["QUEUED"] == 5, statuses
        assert (await get_balance(api_client, merchant))["availableBalance"] == "0.00"
        async with sessions() as session:
            assert await reconcile(session) == []


async def test_a_payroll_whose_balance_is_spent_in_every_judgement_is_judged_under_its_lock(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live traffic spends the balance between each judgement of the payroll and its writes: four
    judgements went stale and the whole payroll was a 422 INSUFFICIENT_BALANCE, stored under its
    key. Judged again, it holds the balance row: the spend waits (here until its lock wait
    runs out: 503) and the payroll gets its answer item by item."""
    merchant = await make_merchant(balance="100.00")
    judge = batch.judge_batch
    spends: list[int] = []

    async def judged_then_spent(*args: Any, **kwargs: Any) -> batch.JudgedBatch:
        judged = await judge(*args, **kwargs)
        spend = payout_body(amount="1.00")
        answer = await api_client.post(f"{API}/payouts", json=spend, headers=auth(merchant))
        spends.append(answer.status_code)
        return judged

    monkeypatch.setattr(batch, "judge_batch", judged_then_spent)
    response = await _send(api_client, merchant, _payroll(150, amount="1.00"))

    assert response.status_code == 200, response.text[:300]
    assert spends == [201, 503]  # the first judgement went stale; the second held the balance
    statuses = Counter(result["status"] for result in response.json()["data"]["results"])
    assert statuses == {"created": 99, "invalid": 51}


async def test_a_payroll_judged_again_keeps_its_key_from_another_request(
    api_client: httpx.AsyncClient,
    other_api_process: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The judgement going stale rolled the key's claim back with the work: a request sent under
    the payroll's key meanwhile took the key and ran (201), and the payroll, the key's first
    use, was answered 422 IDEMPOTENCY_KEY_REUSED with nothing created."""
    merchant, key = await make_merchant(balance="100.00"), new_key()
    judge = batch.judge_batch
    other: list[asyncio.Task[httpx.Response]] = []

    async def judged_then_raced(*args: Any, **kwargs: Any) -> batch.JudgedBatch:
        judged = await judge(*args, **kwargs)
        if not other:  # live traffic spends the balance: this judgement goes stale
            spend = await api_client.post(
                f"{API}/payouts", json=payout_body(amount="1.00"), headers=auth(merchant)
            )
            assert spend.status_code == 201
            single = payout_body(amount="5.00")  # another request under the payroll's key
            other.append(
                asyncio.create_task(
                    other_api_process.post(
                        f"{API}/payouts", json=single, headers=auth(merchant, key)
                    )
                )
            )
            await eventually(
                lambda: statement_running(sessions, "INSERT INTO idempotency_keys"),
                what="the other request waiting on the payroll's key",
            )
        return judged

    monkeypatch.setattr(batch, "judge_batch", judged_then_raced)
    payroll = await _send(api_client, merchant, _payroll(100, amount="1.00"), key)
    second = await other[0]

    assert payroll.status_code == 200, payroll.text[:300]
    assert payroll.json()["data"]["summary"] == {"created": 99, "duplicate": 0, "invalid": 1}
    assert_error(second, 422, "IDEMPOTENCY_KEY_REUSED")
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 1 + 99


async def test_a_payroll_sent_twice_creates_nothing_twice(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key, items = await make_merchant(), new_key(), _payroll(5)
    first = await _send(api_client, merchant, items, key)
    replay = await _send(api_client, merchant, items, key)
    again = await _send(api_client, merchant, items)  # a new key: judged item by item

    assert (replay.status_code, replay.content) == (200, first.content)
    assert replay.headers["Idempotent-Replayed"] == "true"
    created = {
        r["payout"]["merchantReference"]: r["payout"]["id"] for r in first.json()["data"]["results"]
    }
    assert {
        r["merchantReference"]: r["payoutId"] for r in again.json()["data"]["results"]
    } == created
    assert again.json()["data"]["summary"] == {"created": 0, "duplicate": 5, "invalid": 0}
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 5


async def test_a_batch_costs_the_same_few_statements_whatever_its_size(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    await _send(api_client, merchant, _payroll(2))  # warm the directory cache
    with counting_statements() as small:
        await _send(api_client, merchant, _payroll(2))
    with counting_statements() as large:
        response = await _send(api_client, merchant, _payroll(200))
    assert response.json()["data"]["summary"]["created"] == 200
    batch_of_two, batch_of_200 = small.own_statements, large.own_statements
    assert len(batch_of_200) == len(batch_of_two) <= 14, batch_of_200


async def test_over_1000_items_is_400_naming_payouts(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    response = await _send(api_client, merchant, _payroll(1001, amount="1.00"))
    assert_error(response, 400, "VALIDATION_ERROR", "payouts")
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 0


@pytest.mark.parametrize(
    ("flawed", "field"),
    [
        ('{"merchantReference":"flawed-1","amount":"10.00","amount":"20.00"', "amount"),
        ('{"merchantReference":"flawed-1","amount":1e9999999999999999999', "amount"),
        # In a field the API ignores: a single create refuses both; the payroll created them.
        ('{"merchantReference":"flawed-1","amount":"10.00","meta":[{"a":1,"a":2}]', "meta.0.a"),
        (
            '{"merchantReference":"flawed-1","amount":"10.00","meta":{"n":1e9999999999999999999}',
            "meta.n",
        ),
    ],
    ids=[
        "a key given twice",
        "a number out of range",
        "a key given twice in a nested object",
        "a nested number out of range",
    ],
)
async def test_an_item_the_json_parser_refuses_is_invalid_on_its_own(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, flawed: str, field: str
) -> None:
    """The whole payroll was a 400 naming only `amount` (or `body`): which of 1,000 items?"""
    merchant = await make_merchant(balance="100.00")
    rest = ',"destType":"WALLET","walletCode":"JAZZCASH","accountNumber":"03001234567"}'
    good = orjson.dumps(payout_body(amount="10.00")).decode()
    body = f'{{"payouts":[{good},{flawed}{rest}]}}'.encode()
    response = await api_client.post(
        f"{API}/payouts/batch",
        content=body,
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    results = response.json()["data"]["results"]
    assert [result["status"] for result in results] == ["created", "invalid"]
    assert [error["field"] for error in results[1]["errors"]] == [field]
    assert results[1]["merchantReference"] == "flawed-1"


@pytest.mark.parametrize(
    ("outside", "field"),
    [('"note":{"a":1,"a":2}', "note.a"), ('"note":[1e9999999999999999999]', "note.0")],
    ids=["a key given twice", "a number out of range"],
)
async def test_a_flaw_of_the_payroll_outside_its_items_is_a_400_that_writes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    outside: str,
    field: str,
) -> None:
    """As a single create's: the payroll was created, the flaw dropped with the ignored field."""
    merchant = await make_merchant()
    item = orjson.dumps(payout_body()).decode()
    response = await api_client.post(
        f"{API}/payouts/batch",
        content=f'{{"payouts":[{item}],{outside}}}'.encode(),
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 0


async def test_a_key_the_payroll_itself_gives_twice_is_still_a_400_naming_it(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    item = orjson.dumps(payout_body()).decode()
    response = await api_client.post(
        f"{API}/payouts/batch",
        content=f'{{"payouts":[{item}],"payouts":[{item}]}}'.encode(),
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", "payouts")


@pytest.mark.parametrize(
    "body", [b"\x80", b'{"payouts": [', b"[" * 100_000], ids=["bad UTF-8", "cut", "deep"]
)
async def test_a_payroll_body_that_is_not_json_is_a_400_naming_the_body(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, body: bytes
) -> None:
    """Its lenient parse decoded the bytes outside its refusal: bad UTF-8 was a 500 (found by
    the schemathesis run)."""
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/payouts/batch",
        content=body,
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", "body")
