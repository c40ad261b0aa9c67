"""The Readiness and Sandbox pages without a browser: the API app in-process (ASGI), the real
database. Every form goes through the REST endpoint itself, so what a form saved is what the API
answers, and the API's validation errors land on the fields they name."""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, expect

from api_service.app import create_app
from api_service.request_log.writer import RequestLogWriter
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.browser.dashboard import CHROMIUM, NO_CHROMIUM, new_merchant, notice, screenshot
from tests.browser.dashboard import sign_in as browser_sign_in
from tests.conftest import in_production
from tests.support.api_helpers import API, auth, new_key, payout_body

SANDBOX = "/dashboard/sandbox"
HIDDEN = re.compile(r'type="hidden" name="([a-z_]+)" value="([^"]*)"')


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def dashboard(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard and the API, in-process, over https (one cookie jar)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://dash") as client:
        yield client


@pytest.fixture
async def merchant(sessions: SessionFactory) -> NewMerchant:
    return await new_merchant(sessions, "Sandbox Traders", None)


async def flush_request_log(app: FastAPI) -> None:
    writer: RequestLogWriter = app.state.request_log
    await writer.flush()


def form_fields(html: str) -> dict[str, str]:
    """The hidden fields of the page's forms (one CSRF token; the one idempotent form's key)."""
    return dict(HIDDEN.findall(html))


async def signed_in(client: httpx.AsyncClient, merchant: NewMerchant) -> dict[str, str]:
    page = await client.get("/dashboard/sign-in")
    token = form_fields(page.text)["csrf_token"]
    answer = await client.post(
        "/dashboard/sign-in", data={"csrf_token": token, "api_key": merchant.api_key}
    )
    assert answer.status_code == 303
    sandbox = await client.get(SANDBOX)
    assert sandbox.status_code == 200, sandbox.text[:500]
    return form_fields(sandbox.text)


async def api_get(client: httpx.AsyncClient, merchant: NewMerchant, path: str) -> Any:
    answer = await client.get(f"{API}{path}", headers=auth(merchant, ""))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


async def test_the_readiness_page_shows_each_item_with_its_status_grouped(
    app: FastAPI, dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    body, key = payout_body(), new_key()
    lost = await dashboard.post(
        f"{API}/payouts",
        json=body,
        headers={**auth(merchant, key), "X-Sandbox-Fault": "timeout-after-commit"},
    )
    assert lost.status_code == 504
    retried = await dashboard.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert retried.headers["idempotent-replayed"] == "true"
    await flush_request_log(app)
    await signed_in(dashboard, merchant)

    page = await dashboard.get("/dashboard/readiness")

    assert page.status_code == 200
    report = await api_get(dashboard, merchant, "/sandbox/readiness")
    statuses = dict(re.findall(r'data-item="([a-z0-9_]+)" data-status="([a-z_]+)"', page.text))
    assert statuses == {item["id"]: item["status"] for item in report["items"]}
    assert statuses["timeout_retry_same_key"] == "passed"
    assert statuses["retry_after_honoured"] == "not_tried"
    passed = report["summary"]["passed"]
    assert passed >= 1 and not report["summary"]["ready"]
    assert f"{passed} of {len(report['items'])} passed" in page.text
    assert "Not ready yet" in page.text
    for group in ("Scenarios", "API behaviour", "Webhooks"):
        assert f'-title">{group} ' in page.text
    row = re.search(r'data-item="timeout_retry_same_key".*?</tr>', page.text, re.S)
    assert row is not None and "Passed" in row[0] and "retried alike" in row[0]
    assert 'aria-current="page">Readiness</a>' in page.text


async def test_the_fault_form_saves_shows_and_stops_the_setting(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    form = await signed_in(dashboard, merchant)

    saved = await dashboard.post(
        f"{SANDBOX}/faults", data={**form, "fault": "status=503", "percent": "25"}
    )
    assert saved.status_code == 303 and saved.headers["location"].endswith("done=faults-saved")
    assert await api_get(dashboard, merchant, "/sandbox/faults") == {
        "fault": "status=503",
        "percent": 25,
    }
    page = (await dashboard.get(SANDBOX)).text
    assert "<code>status=503</code> on <strong>25%</strong>" in page

    refused = await dashboard.post(
        f"{SANDBOX}/faults", data={**form, "fault": "explode<b>", "percent": "0"}
    )
    assert refused.status_code == 400
    assert 'aria-describedby="fault-error"' in refused.text
    assert 'aria-describedby="percent-error"' in refused.text
    assert 'value="explode&lt;b&gt;"' in refused.text and "explode<b>" not in refused.text

    stopped = await dashboard.post(f"{SANDBOX}/faults/stop", data=form)
    assert stopped.status_code == 303
    assert await api_get(dashboard, merchant, "/sandbox/faults") == {"fault": None, "percent": 0}
    assert "your calls are answered normally" in (await dashboard.get(SANDBOX)).text


async def test_the_chaos_form_saves_shows_refuses_on_the_field_and_turns_off(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    form = await signed_in(dashboard, merchant)
    chaos = {
        "duplicate_percent": "20",
        "out_of_order": "on",
        "delay_seconds": "0",
        "stale_timestamp_percent": "10",
        "fail_first_attempts": "2",
    }

    saved = await dashboard.post(f"{SANDBOX}/webhook-chaos", data={**form, **chaos})
    assert saved.status_code == 303
    assert await api_get(dashboard, merchant, "/sandbox/webhook-chaos") == {
        "duplicatePercent": 20,
        "outOfOrder": True,
        "delaySeconds": 0,
        "staleTimestampPercent": 10,
        "oldSecretOnly": False,
        "failFirstAttempts": 2,
    }
    page = (await dashboard.get(SANDBOX)).text
    assert "20% duplicated · out of order · 10% stale timestamps · 2 attempts failed" in page

    refused = await dashboard.post(
        f"{SANDBOX}/webhook-chaos", data={**form, **chaos, "duplicate_percent": "101"}
    )
    assert refused.status_code == 400
    error = re.search(
        r'<p class="field-error" id="duplicatePercent-error">([^<]+)</p>', refused.text
    )
    assert error is not None and "100" in error[1]
    assert 'name="duplicate_percent" inputmode="numeric" value="101"' in refused.text
    assert (await api_get(dashboard, merchant, "/sandbox/webhook-chaos"))["duplicatePercent"] == 20

    off = await dashboard.post(f"{SANDBOX}/webhook-chaos/off", data=form)
    assert off.status_code == 303
    assert not any((await api_get(dashboard, merchant, "/sandbox/webhook-chaos")).values())


async def test_advancing_the_clock_49_hours_changes_the_offset_shown(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    form = await signed_in(dashboard, merchant)
    assert 'data-clock="offset" data-seconds="0">0 s<' in (await dashboard.get(SANDBOX)).text

    advanced = await dashboard.post(f"{SANDBOX}/clock/advance", data={**form, "preset": "176400"})

    assert advanced.status_code == 303
    assert "done=clock-advanced&count=0" in advanced.headers["location"]
    assert (await api_get(dashboard, merchant, "/sandbox/clock"))["offsetSeconds"] == 176400
    page = (await dashboard.get(SANDBOX)).text
    assert 'data-clock="offset" data-seconds="176400">2 d 1 h<' in page

    form = form_fields(page)
    refused = await dashboard.post(f"{SANDBOX}/clock/advance", data={**form, "seconds": "0"})
    assert refused.status_code == 400 and 'id="seconds-error"' in refused.text


async def test_the_request_log_shows_the_merchants_own_calls_masked(
    app: FastAPI, dashboard: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> None:
    other = await new_merchant(sessions, "Other Sandbox Traders", None)
    mine = payout_body(accountNumber="03001234567")
    theirs = payout_body()
    key = new_key()
    created = await dashboard.post(f"{API}/payouts", json=mine, headers=auth(merchant, key))
    assert created.status_code == 201
    await dashboard.post(f"{API}/payouts", json=theirs, headers=auth(other))
    await dashboard.get(f"{API}/balance", headers=auth(other, ""))
    await flush_request_log(app)
    await signed_in(dashboard, merchant)

    page = (await dashboard.get(SANDBOX)).text

    assert page.count('<details class="log-row"') == 1
    assert mine["merchantReference"] in page and key in page
    assert "*******4567" in page and "03001234567" not in page
    assert theirs["merchantReference"] not in page and "/api/v1/balance" not in page
    assert '<span class="code ok">201</span>' in page


async def test_the_request_log_shows_what_a_lost_answer_was(
    app: FastAPI, dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    async def lost(body: dict[str, Any]) -> httpx.Response:
        fault = {"X-Sandbox-Fault": "timeout-after-commit"}
        return await dashboard.post(f"{API}/payouts", json=body, headers=auth(merchant) | fault)

    created, refused = await lost(payout_body()), await lost(payout_body(amount="-1.00"))
    assert (created.status_code, refused.status_code) == (504, 504)
    await flush_request_log(app)
    await signed_in(dashboard, merchant)

    page = (await dashboard.get(SANDBOX)).text

    assert '<span data-lost-status="201">the fault hid a 201: the work was done</span>' in page
    assert '<span data-lost-status="400">the fault hid a 400: nothing was written</span>' in page


async def test_a_sandbox_form_without_its_csrf_token_is_refused(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    form = await signed_in(dashboard, merchant)
    del form["csrf_token"]

    for path, data in (
        ("/faults", {"fault": "status=503", "percent": "100"}),
        ("/webhook-chaos", {"duplicate_percent": "50"}),
        ("/clock/advance", {"preset": "3600"}),
    ):
        refused = await dashboard.post(f"{SANDBOX}{path}", data={**form, **data})
        assert refused.status_code == 403, path

    assert (await api_get(dashboard, merchant, "/sandbox/faults"))["fault"] is None
    assert (await api_get(dashboard, merchant, "/sandbox/webhook-chaos"))["duplicatePercent"] == 0
    assert (await api_get(dashboard, merchant, "/sandbox/clock"))["offsetSeconds"] == 0


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
async def test_the_readiness_and_sandbox_pages_in_a_browser(
    context: BrowserContext, merchant: NewMerchant, screenshots: Path
) -> None:
    """Photographed for the README (PAYOUTS_UPDATE_SCREENSHOTS=1)."""
    page = await browser_sign_in(context, merchant.api_key)
    nav = page.get_by_role("navigation", name="Main")
    await nav.get_by_role("link", name="Sandbox").click()
    await page.get_by_label("Fault", exact=True).fill("status=503")
    await page.get_by_label("Share of your calls (%)").fill("10")
    await page.get_by_role("button", name="Save fault setting").click()
    await expect(notice(page)).to_contain_text("Fault setting saved")
    await page.get_by_role("button", name="49 h").click()
    await expect(page.locator('[data-clock="offset"]')).to_have_text("2 d 1 h")
    await screenshot(page, "sandbox", screenshots)
    await nav.get_by_role("link", name="Readiness").click()
    await expect(page.get_by_role("heading", name="Go-live readiness")).to_be_visible()
    await expect(page.locator("[data-since]")).to_contain_text("Counting everything you did")
    await screenshot(page, "readiness", screenshots)

    await page.get_by_role("button", name="Start over").click()
    await expect(notice(page)).to_have_text(
        "Readiness restarted: the report counts what you do from now on."
    )
    await expect(page.locator("[data-since]")).to_contain_text("Counting what you did since")
    await expect(page.locator('[data-count="not_tried"] strong')).to_have_text(
        str(await page.locator("tr[data-item]").count())
    )


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
async def test_enter_in_the_clock_field_advances_by_the_seconds_typed(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """Enter submits a form with its first submit button: it was the "1 h" preset, and the clock,
    which never goes back, moved an hour for the 60 seconds typed."""
    page = await browser_sign_in(context, merchant.api_key)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Sandbox").click()
    await page.locator("#advance-seconds").fill("60")
    await page.locator("#advance-seconds").press("Enter")
    await expect(notice(page)).to_contain_text("Clock advanced")
    await expect(page.locator('[data-clock="offset"]')).to_have_attribute("data-seconds", "60")


async def test_in_production_the_sandbox_pages_are_not_there(
    settings: Settings, merchant: NewMerchant
) -> None:
    production = in_production(settings, dashboard_session_secret="a-secret-of-our-own")
    app = create_app(production)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://dash") as client:
            page = await client.get("/dashboard/sign-in")
            token = form_fields(page.text)["csrf_token"]
            await client.post(
                "/dashboard/sign-in", data={"csrf_token": token, "api_key": merchant.api_key}
            )
            payouts = await client.get("/dashboard/payouts")
            assert payouts.status_code == 200 and 'href="/dashboard/sandbox"' not in payouts.text
            for path in (SANDBOX, "/dashboard/readiness"):
                assert (await client.get(path)).status_code == 404, path
            form = form_fields(payouts.text)
            clock = await client.post(f"{SANDBOX}/clock/advance", data={**form, "seconds": "60"})
            assert clock.status_code == 404
            # The payout form's table shows what runs in production: no scripts, no Simulate.
            new_payout = (await client.get("/dashboard/payouts/new")).text
            assert "account ends 0003" in new_payout
            assert "account ends 0006" not in new_payout and "Simulate" not in new_payout
            # A test event is a real payout: test mode only.
            webhooks = await client.get("/dashboard/webhooks")
            assert "Send a test event" not in webhooks.text
            test_event = await client.post("/dashboard/webhooks/test", data=form)
            assert test_event.status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/dashboard/balance?startingAfter=%C2%B2",  # '²': str.isdigit() is true, int() refuses
        "/dashboard/balance?startingAfter=" + "1" * 5000,  # int() refuses over 4,300 digits
        "/dashboard/webhooks?startingAfter=" + "1" * 5000,  # no delivery's id: the newest page
        "/dashboard/payouts?done=recovered&count=%C2%B2",
        f"{SANDBOX}?startingAfter=%C2%B2",
    ],
)
async def test_an_odd_number_in_the_query_string_is_ignored(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, url: str
) -> None:
    await signed_in(dashboard, merchant)
    assert (await dashboard.get(url)).status_code == 200
