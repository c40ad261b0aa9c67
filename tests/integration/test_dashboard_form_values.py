"""The dashboard's forms judge a value as the API does. They trimmed with `str.strip()`, which
takes U+001C-U+001F (control characters) for spaces: a top-up of `10.00` + U+001F credited
10.00, and a webhook URL or a fault ending in one was saved without it, where the API refuses
each such value naming its field."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import auth, get_balance
from tests.support.dashboard_client import signed_in

SEPARATOR = "\x1f"  # unit separator: `"x\x1f".strip() == "x"`


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings) as client:
        yield client


@pytest.mark.parametrize(
    ("amount", "status", "balance"),
    [
        (f"10.00{SEPARATOR}", 400, "500.00"),  # credited 10.00
        ("\u300010.00\xa0", 303, "510.00"),  # Unicode spaces: trimmed, as the API trims them
    ],
)
async def test_a_top_up_is_judged_as_the_api_judges_its_amount(
    dashboard: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    amount: str,
    status: int,
    balance: str,
) -> None:
    merchant = await make_merchant(balance="500.00")
    csrf = await signed_in(dashboard, merchant)

    answer = await dashboard.post(
        "/dashboard/balance/top-up",
        data={"csrf_token": csrf, "amount": amount, "idempotency_key": str(uuid.uuid4())},
    )

    assert answer.status_code == status, answer.text
    assert (await get_balance(dashboard, merchant))["balance"] == balance


async def test_a_webhook_url_ending_in_a_control_character_is_not_saved(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(webhook_url="http://127.0.0.1:9/before")
    csrf = await signed_in(dashboard, merchant)

    answer = await dashboard.post(
        "/dashboard/webhooks/endpoint",
        data={"csrf_token": csrf, "url": f"http://127.0.0.1:9/after{SEPARATOR}"},
    )

    assert answer.status_code == 400, answer.text
    endpoint = await dashboard.get("/api/v1/webhook-endpoint", headers=auth(merchant))
    assert endpoint.json()["data"]["url"] == "http://127.0.0.1:9/before"


async def test_a_fault_ending_in_a_control_character_is_not_saved(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    csrf = await signed_in(dashboard, merchant)

    answer = await dashboard.post(
        "/dashboard/sandbox/faults",
        data={"csrf_token": csrf, "fault": f"status=503{SEPARATOR}", "percent": "100"},
    )

    assert answer.status_code == 400, answer.text
    faults = await dashboard.get("/api/v1/sandbox/faults", headers=auth(merchant))
    assert faults.status_code == 200, faults.text
    assert faults.json()["data"]["fault"] is None
