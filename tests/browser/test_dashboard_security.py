"""The dashboard's security promises, in a real browser: text a merchant controls renders as text,
a form post without the session's CSRF token is refused, one merchant never sees another's data,
a signed-out cookie stops working, and the API key never shows up in a URL, a page or a log."""

import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Dialog, Page, expect

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.browser.dashboard import CHROMIUM, NO_CHROMIUM, ContextOpener, new_merchant, sign_in
from tests.support.api_helpers import auth, create_payout
from tests.support.polling import eventually
from tests.support.system import RunningSystem
from tests.support.webhook_receiver import Reply, WebhookReceiver

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
SCRIPT = "<script>alert(1)</script>"
IMAGE = '<img src=x onerror="alert(2)">'


def dialogs_of(page: Page) -> list[str]:
    """Every alert() the page tries (an injected script would)."""
    seen: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        seen.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return seen


async def csrf_token_of(page: Page) -> str:
    return await page.locator("input[name=csrf_token]").first.get_attribute("value") or ""


async def test_text_a_merchant_controls_renders_as_text(
    open_context: ContextOpener, sessions: SessionFactory, api: httpx.AsyncClient
) -> None:
    async with WebhookReceiver() as hostile_endpoint:
        hostile_endpoint.always(Reply(status=500, body=SCRIPT.encode()))
        merchant = await new_merchant(sessions, f"Shop {IMAGE}", f"{hostile_endpoint.url}?{SCRIPT}")
        payout = await create_payout(
            api, merchant, accountTitle=SCRIPT, purpose=SCRIPT, accountNumber="03001230001"
        )
        await hostile_endpoint.wait_for_requests(1)
        page = await sign_in(await open_context(), merchant.api_key)
        alerts = dialogs_of(page)
        await expect(page.locator("tbody")).to_contain_text(SCRIPT)  # the list: account title

        await page.goto(f"/dashboard/payouts/{payout['id']}")
        await expect(page.locator("tr.attempt").first).to_be_visible(timeout=20_000)
        await page.locator("details.request summary").first.click()
        await expect(page.locator("h1")).to_contain_text(SCRIPT)
        await expect(page.locator(".facts")).to_contain_text(SCRIPT)  # the purpose
        await expect(page.locator("details.request").first).to_contain_text(SCRIPT)  # response
        await expect(page.locator(".merchant-name")).to_have_text(f"Shop {IMAGE}")
        await page.goto("/dashboard/webhooks")
        await expect(page.get_by_label("Endpoint URL")).to_have_value(
            f"{hostile_endpoint.url}?{SCRIPT}"
        )
        for path in ("/dashboard/payouts", f"/dashboard/payouts/{payout['id']}"):
            await page.goto(path)
            assert await page.locator("script").count() == 1  # dashboard.js, nothing injected
            assert await page.locator("img").count() == 1  # the logo
        assert alerts == []


async def test_a_form_post_without_the_csrf_token_is_refused(
    open_context: ContextOpener, merchant: NewMerchant, system: RunningSystem
) -> None:
    context = await open_context()
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/balance")
    before = await page.locator("[data-balance=available]").inner_text()
    form = {"amount": "100.00", "idempotency_key": str(uuid.uuid4())}

    missing = await context.request.post("/dashboard/balance/top-up", form=form)
    assert missing.status == 403
    assert "CSRF" in await missing.text()
    wrong = await context.request.post(
        "/dashboard/balance/top-up", form={**form, "csrf_token": "forged"}
    )
    assert wrong.status == 403
    foreign = await context.request.post(
        "/dashboard/balance/top-up",
        form={**form, "csrf_token": await csrf_token_of(page)},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status == 403

    # A page on another site posting a form here: SameSite=Strict keeps the cookie home.
    attacker = await context.new_page()
    await attacker.set_content(
        f'<form method="post" action="{system.base_url}/dashboard/balance/top-up">'
        '<input name="amount" value="100.00"></form>'
    )
    async with attacker.expect_navigation():
        await attacker.evaluate("document.forms[0].submit()")
    assert urlsplit(attacker.url).path == "/dashboard/sign-in"

    await page.reload()
    await expect(page.locator("[data-balance=available]")).to_have_text(before)


async def first_delivery(
    api: httpx.AsyncClient, merchant: NewMerchant, payout_id: str
) -> str | None:
    listed = await api.get(
        "/api/v1/webhooks/deliveries", params={"payoutId": payout_id}, headers=auth(merchant)
    )
    deliveries = listed.json()["data"]["deliveries"]
    return str(deliveries[0]["id"]) if deliveries else None


async def test_another_merchants_payout_is_not_found(
    open_context: ContextOpener,
    merchant: NewMerchant,
    other_merchant: NewMerchant,
    api: httpx.AsyncClient,
) -> None:
    theirs = await create_payout(api, merchant, accountNumber="03001230001")
    page = await sign_in(await open_context(), other_merchant.api_key)
    token = await csrf_token_of(page)
    for path in (
        f"/dashboard/payouts/{theirs['id']}",
        f"/dashboard/payouts/{theirs['id']}/timeline",
    ):
        response = await page.goto(path)
        assert response is not None and response.status == 404, path
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()

    their_delivery = await eventually(
        lambda: first_delivery(api, merchant, theirs["id"]), what="a delivery of their payout"
    )
    for action in (
        f"/dashboard/payouts/{theirs['id']}/reinitiate",
        f"/dashboard/payouts/{theirs['id']}/simulate",
        f"/dashboard/deliveries/{their_delivery}/resend",
    ):
        form = {"csrf_token": token, "idempotency_key": str(uuid.uuid4()), "outcome": "SUCCESS"}
        response = await page.request.post(action, form=form)
        assert response.status == 404, action
    await page.goto(f"/dashboard/payouts?reference={theirs['merchantReference']}")
    await expect(page.locator("tbody tr[data-payout-id]")).to_have_count(0)


async def test_after_sign_out_the_cookie_no_longer_works(
    open_context: ContextOpener, merchant: NewMerchant
) -> None:
    context = await open_context()
    page = await sign_in(context, merchant.api_key)
    [cookie] = [c for c in await context.cookies() if c["name"] == "payouts_dashboard"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert "payouts_dashboard" not in await page.evaluate("document.cookie")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/dashboard/sign-in")

    replayed = await open_context()
    await replayed.add_cookies([cookie])  # a copy taken before signing out
    stale = await replayed.new_page()
    await stale.goto("/dashboard/payouts")
    assert urlsplit(stale.url).path == "/dashboard/sign-in"


async def test_the_api_key_never_appears_in_a_url_a_page_or_a_log(
    open_context: ContextOpener, merchant: NewMerchant, system: RunningSystem
) -> None:
    context = await open_context()
    urls: list[str] = []
    context.on("request", lambda request: urls.append(request.url))
    page = await context.new_page()
    await page.goto("/dashboard/sign-in")
    await page.get_by_label("API key").fill(merchant.api_key + "x")  # a wrong key first
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    assert merchant.api_key not in await page.content()
    await expect(page.get_by_label("API key")).to_have_value("")

    page = await sign_in(context, merchant.api_key)
    pages = []
    for path in ("/dashboard/payouts", "/dashboard/balance", "/dashboard/webhooks"):
        await page.goto(path)
        pages.append(await page.content())
    assert not [url for url in urls if merchant.api_key in url]
    assert not [html for html in pages if merchant.api_key in html]
    logs = "".join(path.read_text() for path in system.log_dir.glob("*.log"))
    assert "dashboard sign-in of merchant" in logs
    assert merchant.api_key not in logs
