"""The dashboard's forms judge a value as the API does, a double submit shows the first post's
answer, and an address with no page answers a page. The forms trimmed with `str.strip()`,
which takes U+001C-U+001F (control characters) for spaces: a top-up of `10.00` + U+001F
credited 10.00, and a webhook URL or a fault ending in one was saved without it, where the API
refuses each such value naming its field."""

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


@pytest.mark.parametrize(
    ("fault", "percent"),
    [
        (f"status=503{SEPARATOR}", "100"),
        # Arabic-Indic digits (U+0661 U+0660): a 10 % fault was saved; the API refuses them.
        ("status=503", "\u0661\u0660"),
    ],
    ids=["a fault ending in a control character", "a percent in other digits"],
)
async def test_a_fault_the_api_would_refuse_is_not_saved(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory, fault: str, percent: str
) -> None:
    merchant = await make_merchant()
    csrf = await signed_in(dashboard, merchant)

    answer = await dashboard.post(
        "/dashboard/sandbox/faults", data={"csrf_token": csrf, "fault": fault, "percent": percent}
    )

    assert answer.status_code == 400, answer.text
    faults = await dashboard.get("/api/v1/sandbox/faults", headers=auth(merchant))
    assert faults.status_code == 200, faults.text
    assert faults.json()["data"]["fault"] is None


async def test_a_test_event_sent_twice_with_its_forms_key_shows_the_first_payout(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A double click on "Send a test event": each post made its own reference (the clock and a
    random suffix), so the second was the form's key with another body, and the merchant saw an
    IDEMPOTENCY_KEY_REUSED page for a test event that had been sent."""
    merchant = await make_merchant(webhook_url="http://127.0.0.1:9/hooks")
    csrf = await signed_in(dashboard, merchant)
    form = {"csrf_token": csrf, "idempotency_key": str(uuid.uuid4())}

    first = await dashboard.post("/dashboard/webhooks/test", data=form)
    again = await dashboard.post("/dashboard/webhooks/test", data=form)

    assert first.status_code == again.status_code == 303, again.text
    assert again.headers["location"] == first.headers["location"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        # Where a form's POST left the browser: Enter in the address bar, a bookmark or "open
        # in a new tab" sends a GET there.
        ("/dashboard/balance/top-up", 405),
        ("/dashboard/webhooks/secret", 405),
        ("/dashboard/payouts/bulk/confirm", 405),
        ("/dashboard/payout", 404),  # mistyped
    ],
)
async def test_a_dashboard_address_without_a_page_answers_a_page(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory, path: str, status: int
) -> None:
    """It answered the API's JSON envelope, which the browser shows raw."""
    await signed_in(dashboard, await make_merchant())

    answer = await dashboard.get(path)

    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html"), answer.text[:200]
    assert answer.headers["content-security-policy"]
    if status == 405:
        assert answer.headers["allow"] == "POST"


async def test_a_dashboard_request_refused_for_its_request_id_answers_a_page(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A proxy adding a request id of its own that the API refuses (over 100 characters) turned
    every dashboard page into the API's raw JSON, without the dashboard's security headers, as
    the other refusals before a route runs no longer do (found by the dashboard review)."""
    await signed_in(dashboard, await make_merchant())

    answer = await dashboard.get("/dashboard/payouts", headers={"X-Request-ID": "r" * 101})

    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html"), answer.text[:200]
    assert answer.headers["content-security-policy"]
    assert "X-Request-ID" in answer.text


async def test_an_api_address_without_a_route_still_answers_json(
    dashboard: httpx.AsyncClient,
) -> None:
    answer = await dashboard.get("/api/v1/payout")

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("referer", "back"),
    [
        (
            "http://api/dashboard/webhooks?status=PARKED&page=2",
            "/dashboard/webhooks?status=PARKED&amp;page=2",
        ),
        ("http://elsewhere.example/dashboard/webhooks", "/dashboard/payouts"),
        (None, "/dashboard/payouts"),
    ],
    ids=["from one of our pages", "from another site", "with no Referer"],
)
async def test_a_refused_forms_page_leads_back_to_the_page_of_the_form(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory, referer: str | None, back: str
) -> None:
    """The error page's one link went to the payouts list: a merchant refused on the webhooks
    page's second page of parked deliveries had to find that page again."""
    merchant = await make_merchant()
    csrf = await signed_in(dashboard, merchant)
    form = {"csrf_token": csrf, "since": "yesterday", "idempotency_key": str(uuid.uuid4())}

    answer = await dashboard.post(
        "/dashboard/webhooks/recover", data=form, headers={"Referer": referer} if referer else {}
    )

    assert answer.status_code == 400, answer.text
    assert "since must be a time such as 2026-01-31T10:00" in answer.text
    assert f'<a class="button" href="{back}">' in answer.text
