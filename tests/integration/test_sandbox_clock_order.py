"""An advance made while the processor is behind (down, restarting, or with a backlog) still
applies what it makes due in due-time order: a payout the processor has yet to take started
before the scheduled actions the advance made due, so its first step comes first
(processor_service.scheduler.no_earlier_start_waits)."""

from typing import Any

import httpx

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, payout_body
from tests.support.payout_records import journal_kinds
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay

AMOUNT = "1500.00"
HOUR = 3600


async def create(
    client: httpx.AsyncClient, merchant: NewMerchant, suffix: str, *, queue: bool
) -> str:
    body = payout_body(amount=AMOUNT, accountNumber=f"123456{suffix}", queueIfLowBalance=queue)
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def final(client: httpx.AsyncClient, merchant: NewMerchant, payout_id: str) -> Any:
    async def probe() -> Any:
        response = await client.get(f"{API}/payouts/{payout_id}", headers=auth(merchant, ""))
        data = response.json()["data"]
        return data if data["status"] in ("SUCCESS", "FAILED", "REVERSED") else None

    return await eventually(probe, within=20, what=f"{payout_id} final")


async def test_a_payout_the_processor_takes_after_an_advance_comes_before_the_queues_expiry(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """0003 fails at once, at sandbox time 0, and its released hold starts the queued payout; the
    queue's expiry is due at 72 h. The expiry, a row already, was applied first: the queued
    payout failed QUEUE_EXPIRED, and the release found an empty queue."""
    client = client_that_does_not_wait
    merchant = await make_merchant(balance=AMOUNT)
    failing = await create(client, merchant, "0003", queue=False)
    queued = await create(client, merchant, "0001", queue=True)
    advanced = await client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 73 * HOUR}, headers=auth(merchant)
    )
    assert advanced.status_code == 200, advanced.text

    quick = settings.model_copy(update={"scheduler_poll_interval_seconds": 0.1})
    async with running_processor_and_relay(quick):
        assert (await final(client, merchant, failing))["failureCode"] == "ACCOUNT_INVALID"
        started = await final(client, merchant, queued)

    assert (started["status"], started["failureCode"]) == ("SUCCESS", None), started
    assert await journal_kinds(sessions, queued) == ("HOLD", "PAYOUT")
