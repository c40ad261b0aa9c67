"""What a merchant does in the dashboard, in a real browser against the running system: create a
0002 payout from the form and watch its timeline reach SUCCESS with every webhook attempt (the
exact signed request shown matches what the receiver got), resend a delivery, upload a payroll
CSV, settle an IN_REVIEW payout, top up, manage webhooks. The main pages are photographed."""

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from api_service.dashboard.csv_payroll import COLUMNS
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.browser.dashboard import (
    CHROMIUM,
    NO_CHROMIUM,
    PAYOUT_PAGE,
    PHONE,
    announcer,
    assert_fits_the_phone,
    background_behind,
    contrast,
    new_merchant,
    notice,
    screenshot,
    scroll_regions_out_of_keyboard_reach,
)
from tests.browser.dashboard import sign_in as browser_sign_in
from tests.support.api_helpers import auth, create_payout
from tests.support.polling import eventually
from tests.support.webhook_receiver import Reply, WebhookReceiver

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
SETTLES_WITHIN_MS = 30_000
# How often a settled payout page with an action open to someone else looks again (dashboard.js
# SLOW_POLL_MS).
SLOW_LOOK_MS = 10_000


def status_badge(page: Page) -> Locator:
    return page.locator("[data-payout-status] [data-status]")


def event(page: Page, event_type: str) -> Locator:
    return page.locator("li.event").filter(has=page.get_by_text(event_type, exact=True))


async def waiting_at_the_psp(api: httpx.AsyncClient, merchant: NewMerchant) -> dict[str, Any]:
    """A 0004 payout PENDING at the PSP (again, after PROCESSING): it waits for a decision."""
    payout = await create_payout(api, merchant, accountNumber="03001230004")

    async def has_psp_reference() -> bool:
        answer = await api.get(f"/api/v1/payouts/{payout['id']}", headers=auth(merchant, ""))
        return bool(answer.json()["data"]["pspReference"])

    await eventually(has_psp_reference, within=30, interval=0.5, what="a PSP reference")
    return payout


async def settle_elsewhere(api: httpx.AsyncClient, merchant: NewMerchant, payout_id: str) -> None:
    """The sandbox's PSP decides SUCCESS: what another tab or an integration would do."""
    settled = await api.post(
        f"/api/v1/sandbox/payouts/{payout_id}/simulate",
        json={"outcome": "SUCCESS"},
        headers=auth(merchant),
    )
    assert settled.status_code == 202, settled.text


async def test_a_0002_payout_from_the_form_reaches_success_with_its_webhooks(
    context: BrowserContext,
    merchant: NewMerchant,
    receiver: WebhookReceiver,
    screenshots: Path,
) -> None:
    page = await browser_sign_in(context, merchant.api_key)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="New payout").click()
    await page.get_by_role("button", name=re.compile(r"account ends 0002")).click()
    await expect(page.get_by_label("Account number")).to_have_value("03001230002")
    await page.get_by_label("Amount (PKR)").fill("2500.00")
    await page.get_by_label("Account title").fill("Ayesha Khan")
    await screenshot(page, "new-payout", screenshots)
    await page.get_by_role("button", name="Create payout").click()
    await page.wait_for_url(PAYOUT_PAGE)

    # No reload from here: the page refreshes itself.
    await expect(status_badge(page)).to_have_text("SUCCESS", timeout=SETTLES_WITHIN_MS)
    await expect(event(page, "payout.retrying")).to_have_count(1)
    succeeded = event(page, "payout.succeeded")
    await expect(succeeded.locator("tr.attempt")).to_have_count(1, timeout=SETTLES_WITHIN_MS)
    await expect(succeeded.locator("tr.attempt .code")).to_have_text("200")
    # created, processing, retrying, processing (attempt 2), succeeded: one attempt each.
    await expect(page.locator("li.event")).to_have_count(5)
    await expect(page.locator("li.event tr.attempt")).to_have_count(5)
    await expect(page.locator(".ledger-card")).to_contain_text("PAYOUT")
    await expect(page.locator("[data-live]")).to_have_attribute("data-live", "off")

    # What the page says was sent is what the receiver got, byte for byte.
    event_id = (await succeeded.get_attribute("id") or "").removeprefix("event-")
    [received] = [r for r in receiver.requests if r.headers.get("webhook-id") == event_id]
    request = succeeded.locator("details.request")
    await request.locator("summary").click()
    headers = await request.locator("pre.headers").inner_text()
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "x-mypay-signature"):
        assert f"{received.headers[name]}" in headers, name
    assert await request.locator("pre.body").inner_text() == received.body.decode()
    await screenshot(page, "payout-timeline", screenshots)

    # Resend: a second attempt, same webhook-id, listed once the receiver has answered it.
    await succeeded.get_by_role("button", name="Resend").click()
    await expect(notice(page)).to_have_text("Webhook resend queued.")
    await expect(succeeded.locator("tr.attempt")).to_have_count(2, timeout=SETTLES_WITHIN_MS)
    sent = [r for r in receiver.requests if r.headers.get("webhook-id") == event_id]
    assert len(sent) == 2


async def test_a_payroll_csv_is_previewed_confirmed_and_idempotent(
    context: BrowserContext, merchant: NewMerchant, screenshots: Path, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    suffixes = ("1234", "0001", "0002", "0003", "0004", "0005")  # every scenario, in turn
    rows = [
        f"salary-{run}-{n:02d},{1000 + n}.00,WALLET,,JAZZCASH,0300{n:03d}{suffixes[n % 6]},"
        f"Employee {n},Salary"
        for n in range(1, 49)
    ]
    rows.insert(10, f"salary-{run}-bad-account,1500.00,WALLET,,EASYPAISA,12,Bad Account,Salary")
    rows.insert(30, f"salary-{run}-bad-type,1500.00,CASH,HBL,,12345678901,Bad Type,Salary")
    payroll = tmp_path / "payroll.csv"
    payroll.write_text("\n".join([",".join(COLUMNS), *rows]) + "\n")

    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/bulk")
    await page.get_by_label(re.compile("Payroll file")).set_input_files(payroll)
    await page.get_by_role("button", name="Upload and preview").click()
    await expect(page.locator("[data-count=ready] strong")).to_have_text("48")
    await expect(page.locator("[data-count=invalid] strong")).to_have_text("2")
    await expect(page.locator("tr.row-invalid")).to_have_count(2)
    await expect(page.locator("tr[data-line='12']")).to_contain_text("accountNumber")
    await expect(page.locator("tr[data-line='32']")).to_contain_text("destType")
    await screenshot(page, "bulk-preview", screenshots)

    await page.get_by_role("button", name="Confirm: create 48 payouts").click()
    await expect(page.get_by_role("heading", name="Bulk results")).to_be_visible()
    await expect(page.locator("[data-count=created] strong")).to_have_text("48")
    # The rows the preview refused are not sent again (their verdict is the preview's).
    await expect(page.locator("[data-count=not_sent] strong")).to_have_text("2")

    # The same file again creates nothing: each reference names the payout of the first time.
    await page.goto("/dashboard/payouts/bulk")
    await page.get_by_label(re.compile("Payroll file")).set_input_files(payroll)
    await page.get_by_role("button", name="Upload and preview").click()
    await expect(page.locator("[data-count=duplicate] strong")).to_have_text("48")
    await expect(page.locator("[data-count=ready] strong")).to_have_text("0")
    await expect(page.get_by_text("Nothing to create.")).to_be_visible()

    await page.goto(f"/dashboard/payouts?reference=salary-{run}-07")
    await expect(page.locator("tbody tr[data-payout-id]")).to_have_count(1)


async def test_an_in_review_payout_is_simulated_to_success(
    context: BrowserContext, merchant: NewMerchant, screenshots: Path
) -> None:
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    await page.get_by_role("button", name=re.compile(r"amount ≥")).click()
    await expect(page.get_by_label("Amount (PKR)")).to_have_value("100000.00")
    # "Use" fills a whole payout (it left the account number empty: the create was refused).
    await expect(page.get_by_label("Account number")).to_have_value("03001231234")
    await page.get_by_role("button", name="Create payout").click()
    await page.wait_for_url(PAYOUT_PAGE)
    await expect(status_badge(page)).to_have_text("IN_REVIEW", timeout=SETTLES_WITHIN_MS)

    await page.get_by_role("button", name="Simulate SUCCESS").click()
    await expect(notice(page)).to_contain_text("Outcome accepted")
    await expect(status_badge(page)).to_have_text("SUCCESS", timeout=SETTLES_WITHIN_MS)
    await expect(page.get_by_role("button", name="Simulate REVERSED")).to_be_visible()


# Filtered by the status it leaves, the row kept showing PENDING: the refresh asked for the
# list's filter, which no longer held the payout.
@pytest.mark.parametrize("status_filter", ["", "status=PENDING&"])
async def test_the_list_shows_status_changes_without_a_reload(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient, status_filter: str
) -> None:
    waiting = await waiting_at_the_psp(api, merchant)  # PENDING again: in the filter
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto(f"/dashboard/payouts?{status_filter}reference={waiting['merchantReference']}")
    row = page.locator(f"tr[data-payout-id='{waiting['id']}'] [data-status]")
    await expect(row).to_have_text("PENDING", timeout=SETTLES_WITHIN_MS)
    await page.evaluate("window.notReloaded = true")

    await settle_elsewhere(api, merchant, waiting["id"])
    await expect(row).to_have_text("SUCCESS", timeout=SETTLES_WITHIN_MS)
    assert await page.evaluate("window.notReloaded === true")


async def test_the_keyboard_focus_stays_where_it_was_when_a_payout_page_refreshes(
    context: BrowserContext, sessions: SessionFactory, api: httpx.AsyncClient
) -> None:
    merchant = await new_merchant(sessions, "Gujranwala Fans", None)  # its webhooks are parked
    payout = await create_payout(api, merchant, accountNumber="03001230001")

    async def paid() -> bool:
        answer = await api.get(f"/api/v1/payouts/{payout['id']}", headers=auth(merchant, ""))
        return bool(answer.json()["data"]["status"] == "SUCCESS")

    await eventually(paid, within=30, interval=0.5, what="the 0001 payout paid")
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto(f"/dashboard/payouts/{payout['id']}")
    live = page.locator("[data-live]")
    await live.evaluate("live => { live.dataset.beforeRefresh = '' }")
    button = page.get_by_role("button", name="Simulate REVERSED")
    await button.focus()
    # The first poll replaces the part with the server's (a new element: no mark).
    await expect(page.locator("[data-live][data-before-refresh]")).to_have_count(0)
    await expect(button).to_be_focused()


async def test_a_status_changed_elsewhere_is_announced_and_the_focus_stays_in_the_page(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The list and the payout page say it in their live region; the payout page's refresh
    removes the focused "Simulate FAILED" and puts the focus on its heading, not on <body>."""
    payout = await waiting_at_the_psp(api, merchant)
    listing = await browser_sign_in(context, merchant.api_key)
    await listing.goto(f"/dashboard/payouts?reference={payout['merchantReference']}")
    row = listing.locator(f"tr[data-payout-id='{payout['id']}'] [data-status]")
    await expect(row).to_have_text("PENDING", timeout=SETTLES_WITHIN_MS)
    page = await context.new_page()
    await page.goto(f"/dashboard/payouts/{payout['id']}")
    await expect(status_badge(page)).to_have_text("PENDING", timeout=SETTLES_WITHIN_MS)
    await page.get_by_role("button", name="Simulate FAILED").focus()

    await settle_elsewhere(api, merchant, payout["id"])
    said = f"Payout {payout['merchantReference']} is now SUCCESS."
    await expect(announcer(listing)).to_have_text(said, timeout=SETTLES_WITHIN_MS)
    await expect(announcer(page)).to_have_text(said, timeout=SETTLES_WITHIN_MS)
    await expect(page.get_by_role("heading", level=1)).to_be_focused()


async def test_a_refresh_keeps_the_ledger_focused_and_scrolled_where_the_reader_left_it(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """On a phone the Ledger lines card scrolls sideways, a keyboard stop of its own: a refresh
    that added lines threw it back to its left edge, and its focus to the page's heading (the
    card was found again by its whole text, which the new lines changed)."""
    payout = await waiting_at_the_psp(api, merchant)
    page = await browser_sign_in(context, merchant.api_key)
    await page.set_viewport_size(PHONE)
    await page.goto(f"/dashboard/payouts/{payout['id']}")
    ledger = page.get_by_role("region", name="Ledger lines")
    await ledger.focus()
    await ledger.evaluate("card => { card.scrollLeft = card.scrollWidth; }")
    assert await ledger.evaluate("card => card.scrollLeft") > 0, "nothing to scroll at 390px"

    await settle_elsewhere(api, merchant, payout["id"])  # the payout's lines are added
    said = f"Payout {payout['merchantReference']} is now SUCCESS."
    await expect(announcer(page)).to_have_text(said, timeout=SETTLES_WITHIN_MS)
    await expect(ledger).to_be_focused()
    assert await ledger.evaluate("card => card.scrollLeft") > 0


async def test_a_delivery_that_leaves_its_status_tab_is_said(
    context: BrowserContext,
    sessions: SessionFactory,
    api: httpx.AsyncClient,
    receiver: WebhookReceiver,
) -> None:
    """On the Retrying tab, a retry that succeeded dropped its row without a word."""
    merchant = await new_merchant(sessions, "Sialkot Sports", receiver.url)
    receiver.always(Reply(status=500))
    await create_payout(api, merchant, accountNumber="03001230001")
    page = await browser_sign_in(context, merchant.api_key)
    rows = page.locator("table.deliveries tbody tr[data-delivery-id]")

    async def retrying_rows() -> int:
        await page.goto("/dashboard/webhooks?status=RETRYING")
        return await rows.count()

    await eventually(retrying_rows, within=30, interval=0.5, what="a RETRYING delivery shown")
    receiver.always(Reply())
    await expect(announcer(page)).to_have_text(
        re.compile(r"^Webhook payout\.\w+ of payout \w{8} is no longer RETRYING\."), timeout=60_000
    )


async def test_links_in_text_are_underlined_and_navigation_and_buttons_are_not(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """A link in text must not be told apart by its colour alone (WCAG 1.4.1)."""
    payout = await create_payout(api, merchant, accountNumber="03001230001")
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto(f"/dashboard/payouts/{payout['id']}")
    links = {
        "footer": page.get_by_role("contentinfo").get_by_role("link"),
        "breadcrumb": page.locator(".crumbs").get_by_role("link", name="Payouts"),
        "navigation": page.get_by_role("navigation", name="Main").get_by_role("link").first,
        "brand": page.locator("a.brand"),
    }
    underlined = {
        name: "underline" in await link.evaluate("a => getComputedStyle(a).textDecorationLine")
        for name, link in links.items()
    }
    await page.goto("/dashboard/payouts")
    button = page.get_by_role("link", name="New payout", exact=True).and_(page.locator(".button"))
    underlined["button"] = "underline" in await button.evaluate(
        "a => getComputedStyle(a).textDecorationLine"
    )
    assert underlined == {
        "footer": True,
        "breadcrumb": True,
        "navigation": False,
        "brand": False,
        "button": False,
    }


async def test_the_focus_ring_and_the_chart_lines_stand_out_at_3_to_1(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """WCAG 1.4.11: the keyboard focus ring on a card and on the dark top bar, and both lines
    of the balance chart with their legend, against what is behind them."""
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/balance")
    await page.keyboard.press("Tab")  # the skip link, then the brand link of the top bar
    await page.keyboard.press("Tab")
    await expect(page.locator("a.brand")).to_be_focused()
    ring_on_the_bar = await page.locator("a.brand").evaluate(
        "a => getComputedStyle(a).outlineColor"
    )
    field = page.get_by_label("Amount (PKR)")
    await field.focus()
    ring_on_the_card = await field.evaluate("f => getComputedStyle(f).outlineColor")
    bar = await page.locator("header").evaluate("h => getComputedStyle(h).backgroundColor")
    card = await background_behind(field)
    chart = page.locator("svg.chart")
    await expect(chart.locator("polyline.available")).to_have_css("stroke-dasharray", "5px, 4px")
    ratios = {
        "ring on the top bar": contrast(ring_on_the_bar, bar),
        "ring on a card": contrast(ring_on_the_card, card),
    }
    for series in ("total", "available"):
        line = chart.locator(f"polyline.{series}")
        stroke = await line.evaluate("line => getComputedStyle(line).stroke")
        swatch = await page.locator(f".swatch.{series}").evaluate(
            "s => getComputedStyle(s).backgroundColor"
        )
        ratios[f"{series} line"] = contrast(stroke, await background_behind(line))
        ratios[f"{series} swatch"] = contrast(swatch, card)
    assert all(ratio >= 3 for ratio in ratios.values()), ratios


async def test_a_failed_payout_is_reinitiated(
    context: BrowserContext, merchant: NewMerchant, screenshots: Path
) -> None:
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    await page.get_by_role("button", name=re.compile(r"account ends 0003")).click()
    await page.get_by_role("button", name="Create payout").click()
    await page.wait_for_url(PAYOUT_PAGE)
    await expect(status_badge(page)).to_have_text("FAILED", timeout=SETTLES_WITHIN_MS)
    await page.get_by_role("button", name="Reinitiate").click()
    await expect(notice(page)).to_contain_text("Payout reinitiated")
    await expect(event(page, "payout.reinitiated")).to_have_count(1, timeout=SETTLES_WITHIN_MS)

    await page.goto("/dashboard/payouts")  # by now: every scenario's status, side by side
    await screenshot(page, "payouts", screenshots)


async def test_a_settled_payout_page_shows_what_another_tab_or_the_clock_did_to_it(
    context: BrowserContext, sessions: SessionFactory, api: httpx.AsyncClient
) -> None:
    """Nothing in flight, but an action open to someone else: a FAILED payout reinitiated
    elsewhere, a 0006 payout whose reversal falls due when its sandbox clock is advanced. Such a
    page looks again every 10 s: the page's clock is fast-forwarded to that look."""
    merchant = await new_merchant(sessions, "Sialkot Sports", None)  # a sandbox clock of its own
    await context.clock.install()  # time flows as usual until fast-forwarded
    page = await browser_sign_in(context, merchant.api_key)

    async def settled_page(account_number: str, status: str) -> str:
        payout = await create_payout(api, merchant, accountNumber=account_number)
        await page.goto(f"/dashboard/payouts/{payout['id']}")
        await expect(status_badge(page)).to_have_text(status, timeout=SETTLES_WITHIN_MS)
        await expect(page.locator("[data-live]")).to_have_attribute(
            "data-live", "off", timeout=SETTLES_WITHIN_MS
        )
        return str(payout["id"])

    failed = await settled_page("03001230003", "FAILED")
    answer = await api.post(f"/api/v1/payouts/{failed}/reinitiate", headers=auth(merchant))
    assert answer.is_success, answer.text
    await page.clock.fast_forward(SLOW_LOOK_MS)
    await expect(event(page, "payout.reinitiated")).to_have_count(1, timeout=5_000)

    await settled_page("03001230006", "SUCCESS")
    answer = await api.post(
        "/api/v1/sandbox/clock/advance", json={"seconds": 49 * 3600}, headers=auth(merchant)
    )
    assert answer.is_success, answer.text
    await page.clock.fast_forward(SLOW_LOOK_MS)
    await expect(status_badge(page)).to_have_text("REVERSED", timeout=5_000)


async def test_validation_errors_are_shown_on_the_fields_they_name(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    await page.get_by_label("Amount (PKR)").fill("0")
    await page.get_by_label("Account number").fill("12")
    await page.get_by_role("button", name="Create payout").click()
    await expect(page.locator("#amount-error")).to_have_text("must be greater than 0")
    await expect(page.get_by_label("Amount (PKR)")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Account number")).to_have_value("12")  # what was typed stays

    await page.get_by_label("Amount (PKR)").fill("1500.00")
    await page.get_by_role("button", name="Create payout").click()
    await expect(page.locator("#accountNumber-error")).to_contain_text("must be 10-16 digits")
    await expect(page.locator("#amount-error")).to_have_count(0)


async def test_a_payout_the_balance_does_not_cover_is_queued_from_the_form(
    context: BrowserContext, sessions: SessionFactory
) -> None:
    """The API takes queueIfLowBalance; the form offered no way to ask for it, so a short
    balance could only be refused (the journeys review). Ticked, the payout is created QUEUED,
    and the box stays ticked when the form is refused for another field."""
    merchant = await new_merchant(sessions, "Short Balance", None, balance="100.00")
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    await page.get_by_label("Amount (PKR)").fill("500.00")
    await page.get_by_label("Account number").fill("12")
    queue = page.get_by_label("Queue it if my available balance is short")
    await queue.check()
    await page.get_by_role("button", name="Create payout").click()
    await expect(page.locator("#accountNumber-error")).to_contain_text("must be 10-16 digits")
    await expect(queue).to_be_checked()

    await page.get_by_label("Account number").fill("03001231234")
    await page.get_by_role("button", name="Create payout").click()

    await expect(page).to_have_url(PAYOUT_PAGE)
    await expect(status_badge(page)).to_have_text("QUEUED")


async def test_the_form_takes_every_title_and_purpose_the_api_takes(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """Their `maxlength` counted UTF-16 code units, the API counts characters: a title of 60
    emoji and an Urdu name, which the API takes, lost the name when pasted (unicode review)."""
    text = "\U0001f600" * 60 + " \u0645\u062d\u0645\u062f \u0639\u0644\u06cc"
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    for label in ("Account title", "Purpose"):
        field = page.get_by_label(label, exact=True)
        await field.focus()
        await page.keyboard.insert_text(text)  # as a paste or an input method does
        await expect(field).to_have_value(text)


async def test_a_filter_refused_is_shown_on_the_filter_form(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    page = await browser_sign_in(context, merchant.api_key)
    await page.get_by_label("Created from").fill("2026-12-05")
    await page.get_by_label("Created to").fill("2026-12-01")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#from-error")).to_have_text("must be on or before Created to")
    await expect(page.get_by_label("Created from")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Created from")).to_have_value("2026-12-05")
    await expect(page.get_by_label("Created to")).to_have_value("2026-12-01")
    await expect(page.locator("main")).not_to_contain_text("createdFrom")

    await page.get_by_label("Created to").fill("2026-12-31")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#from-error")).to_have_count(0)
    await expect(page.get_by_role("heading", name="Payouts")).to_be_visible()
    await expect(page.locator("table[data-live-statuses]")).to_have_count(1)


async def test_the_balance_page_charts_and_tops_up(
    context: BrowserContext, merchant: NewMerchant, screenshots: Path
) -> None:
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/balance")
    before = await page.locator("[data-balance=available]").inner_text()
    await page.get_by_label("Amount (PKR)").fill("250000.00")
    await page.get_by_role("button", name="Top up").click()
    await expect(notice(page)).to_have_text("Balance topped up.")
    await expect(page.locator("[data-balance=available]")).not_to_have_text(before)
    await expect(page.locator("table tbody tr").first).to_contain_text("TOPUP")
    await expect(page.locator("svg.chart polyline.total")).to_have_count(1)
    await screenshot(page, "balance", screenshots)

    await page.get_by_label("Amount (PKR)").fill("-5")
    await page.get_by_role("button", name="Top up").click()
    await expect(page.locator("#amount-error")).to_be_visible()
    await expect(page.get_by_label("Amount (PKR)")).to_have_value("-5")  # what was sent stays

    await page.get_by_label("Amount (PKR)").fill("")
    await page.get_by_role("button", name="Top up").click()
    await expect(page.locator("#amount-error")).to_be_visible()
    await expect(page.get_by_label("Amount (PKR)")).to_have_value("")


async def test_webhooks_parked_first_then_recovered_once_the_endpoint_is_set(
    context: BrowserContext,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    api: httpx.AsyncClient,
    screenshots: Path,
) -> None:
    # No endpoint yet: every delivery is parked at once.
    unreachable = await new_merchant(sessions, "Multan Mart", None)
    payout = await create_payout(api, unreachable, accountNumber="03001230001")
    page = await browser_sign_in(context, unreachable.api_key)
    await page.goto("/dashboard/webhooks")
    parked = page.locator("section.attention tr[data-delivery-id]")
    for _ in range(30):  # the three events are parked within a second or two
        if await parked.count() >= 3:
            break
        await page.wait_for_timeout(500)
        await page.reload()
    await expect(parked).to_have_count(3)

    await page.get_by_role("button", name="Reveal secret").click()
    await expect(page.locator("[data-secret]")).to_have_text(unreachable.webhook_secret)

    await page.get_by_label("Endpoint URL").fill("ftp://nowhere.example")
    await page.get_by_role("button", name="Save endpoint").click()
    await expect(page.locator("#url-error")).to_contain_text("http")
    await page.get_by_label("Endpoint URL").fill(receiver.url)
    await page.get_by_role("button", name="Save endpoint").click()
    await expect(notice(page)).to_have_text("Webhook endpoint saved.")
    await screenshot(page, "webhooks", screenshots)
    # At once: the webhook service never caches a merchant without a URL (webhook_service/
    # endpoints.py), so the recovered deliveries find the URL just saved.
    await page.get_by_role("button", name="Recover").click()
    await expect(notice(page)).to_have_text("3 failed or parked deliveries queued again.")
    await page.goto(f"/dashboard/payouts/{payout['id']}")
    await expect(page.locator(".delivery-head .status-delivered")).to_have_count(
        3, timeout=SETTLES_WITHIN_MS
    )

    await page.goto("/dashboard/webhooks")
    await page.get_by_role("button", name="Rotate secret").click()
    secret = await page.locator("[data-secret]").inner_text()
    assert secret.startswith("whsec_") and secret != unreachable.webhook_secret
    await page.get_by_role("button", name="Send a test event").click()
    await page.wait_for_url(PAYOUT_PAGE)
    await expect(notice(page)).to_contain_text("Test payout created")
    await expect(status_badge(page)).to_have_text("SUCCESS", timeout=SETTLES_WITHIN_MS)


async def test_on_a_phone_every_page_fits_the_screen_and_sign_out_is_on_it(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """A table that scrolls inside its card can be scrolled by keyboard too: the card holds a
    focusable element or is one (a named region)."""
    payout = await create_payout(api, merchant, accountNumber="03001230001")
    page = await browser_sign_in(context, merchant.api_key)
    await page.set_viewport_size(PHONE)
    links = await page.get_by_role("navigation", name="Main").get_by_role("link").all()
    hrefs = [await link.get_attribute("href") or "" for link in links]
    for href in [*hrefs, f"/dashboard/payouts/{payout['id']}"]:
        await page.goto(href)
        await assert_fits_the_phone(page)
        await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport(ratio=1)
        assert await scroll_regions_out_of_keyboard_reach(page) == [], href


async def merchant_with_delivered_webhooks(
    sessions: SessionFactory, api: httpx.AsyncClient, receiver: WebhookReceiver, payouts: int
) -> NewMerchant:
    """A merchant whose `payouts` 0001 payouts had their 3 webhooks each delivered."""
    merchant = await new_merchant(sessions, "Quetta Goods", receiver.url)
    for _ in range(payouts):
        await create_payout(api, merchant, accountNumber="03001230001")

    async def all_delivered() -> bool:
        listed = await api.get(
            "/api/v1/webhooks/deliveries",
            params={"status": "DELIVERED", "limit": 100},
            headers=auth(merchant, ""),
        )
        return len(listed.json()["data"]["deliveries"]) == 3 * payouts

    await eventually(all_delivered, within=60, interval=0.5, what="every webhook delivered")
    return merchant


async def test_a_resend_returns_to_the_deliveries_filter_and_page_it_was_made_on(
    context: BrowserContext,
    sessions: SessionFactory,
    api: httpx.AsyncClient,
    receiver: WebhookReceiver,
) -> None:
    merchant = await merchant_with_delivered_webhooks(sessions, api, receiver, payouts=9)
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/webhooks?status=DELIVERED")
    await page.get_by_role("link", name="Older →").click()
    older = page.url
    await page.locator("table.deliveries").get_by_role("button", name="Resend").first.click()
    await expect(notice(page)).to_have_text("Webhook resend queued.")
    await expect(page.get_by_role("link", name="← Newest")).to_be_visible()
    tabs = page.get_by_role("navigation", name="Delivery status")
    await expect(tabs.locator("[aria-current=page]")).to_have_text("Delivered")
    assert re.search(r"/dashboard/webhooks\?status=DELIVERED&startingAfter=[0-9a-f-]{36}$", older)
    assert page.url.startswith(f"{older}#delivery-"), page.url


async def test_the_deliveries_table_shows_the_attempt_a_resend_made_without_a_reload(
    context: BrowserContext,
    sessions: SessionFactory,
    api: httpx.AsyncClient,
    receiver: WebhookReceiver,
) -> None:
    """The receiver holds the resent request until the page is shown: the delivery then goes
    from in flight to DELIVERED in the live part, which says so in the live region."""
    merchant = await merchant_with_delivered_webhooks(sessions, api, receiver, payouts=1)
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/webhooks")
    row = page.locator("table.deliveries tbody tr[data-delivery-id]").first
    delivery_id = await row.get_attribute("data-delivery-id")
    event_type = await row.locator("td.mono").inner_text()
    answered = asyncio.Event()
    receiver.reply_with(Reply(held_until=answered))
    await row.get_by_role("button", name="Resend").click()
    await expect(notice(page)).to_have_text("Webhook resend queued.")
    await page.evaluate("window.notReloaded = true")
    answered.set()
    resent = page.locator(f"tr#delivery-{delivery_id}")
    await expect(resent.locator("td.num")).to_have_text("2", timeout=SETTLES_WITHIN_MS)
    await expect(resent).to_contain_text("DELIVERED")
    await expect(announcer(page)).to_have_text(
        re.compile(rf"^Webhook {re.escape(event_type)} of payout [0-9a-f]{{8}} is now DELIVERED\.$")
    )
    await expect(page.locator("[data-live]")).to_have_attribute("data-live", "off")
    assert await page.evaluate("window.notReloaded === true")


async def test_a_notice_is_said_once_not_again_on_reload(
    context: BrowserContext, sessions: SessionFactory
) -> None:
    """The redirect after a top-up asks for its notice with ?done=topped-up, which stayed in the
    address: each reload (or the bookmarked page) said "Balance topped up." again."""
    merchant = await new_merchant(sessions, "Sialkot Sports", None)
    page = await browser_sign_in(context, merchant.api_key)
    await page.goto("/dashboard/balance")
    await page.get_by_label("Amount (PKR)").fill("10.00")
    await page.get_by_role("button", name="Top up").click()
    await expect(notice(page)).to_have_text("Balance topped up.")
    await expect(page).to_have_url(re.compile(r"/dashboard/balance$"))

    await page.reload()

    await expect(page.get_by_role("heading", name="Balance and ledger")).to_be_visible()
    await expect(notice(page)).to_have_count(0)
