"""Copies of one request sent at once under one key whose answer is a refusal (a 4xx): each
copy's work is rolled back, and each stores the refusal under the key at the same moment."""

import asyncio
from collections import Counter

import httpx

from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, new_key, payout_body

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
