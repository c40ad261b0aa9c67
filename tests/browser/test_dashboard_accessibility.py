"""The dashboard for a keyboard and a screen reader, in Chromium (each found by the accessibility
review): a refused form is said, what the focus or a link reaches is not under the sticky top
bar, every wide table scrolls by keyboard, ids are unique, the request log's cells say their
column, and no state is told by a faint colour alone."""

import re
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.browser.dashboard import (
    CHROMIUM,
    NO_CHROMIUM,
    background_behind,
    contrast,
    new_merchant,
    scroll_regions_out_of_keyboard_reach,
    sign_in,
)
from tests.support.api_helpers import API, auth, create_payout
from tests.support.polling import eventually

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

PHONE = {"width": 375, "height": 812}
PAYROLL = (
    "merchantReference,amount,destType,bankCode,walletCode,accountNumber,accountTitle\n"
    "a11y-iban-1,100.00,BANK,SCB,,PK36SCBL0000001123456702,Ayesha Khan Enterprises\n"
    "a11y-bad-2,abc,WALLET,,EASYPAISA,12,Bad row\n"
)


async def _refused(page: Page, form: str) -> None:
    """Sends `form` refused: a top-up, a webhook URL or a payout filter."""
    if form == "top-up":
        await page.goto("/dashboard/balance")
        await page.get_by_label("Amount (PKR)").fill("-5")
        await page.get_by_role("button", name="Top up").click()
    elif form == "webhook URL":
        await page.goto("/dashboard/webhooks")
        await page.get_by_label("Endpoint URL").fill("ftp://nowhere.example")
        await page.get_by_role("button", name="Save endpoint").click()
    else:
        await page.goto("/dashboard/payouts")
        await page.get_by_label("Created from").fill("2026-12-05")
        await page.get_by_label("Created to").fill("2026-12-01")
        await page.get_by_role("button", name="Filter").click()


@pytest.mark.parametrize("form", ["top-up", "webhook URL", "payout filter"])
async def test_a_refused_form_puts_the_focus_on_its_field_which_names_its_error(
    context: BrowserContext, merchant: NewMerchant, form: str
) -> None:
    """The error sat next to its field, tied to it, but the focus stayed on the page and no
    live region held it: a screen reader said nothing of the refusal."""
    page = await sign_in(context, merchant.api_key)
    await _refused(page, form)

    field = page.locator("[aria-invalid=true]").first
    await expect(field).to_be_focused()
    error_id = await field.get_attribute("aria-describedby")
    assert error_id, "the refused field names no error"
    await expect(page.locator(f"#{error_id}")).to_be_visible()


async def _payout_with_its_deliveries(
    api: httpx.AsyncClient, merchant: NewMerchant
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    payout = await create_payout(api, merchant, accountNumber="03001230001")
    deliveries: list[dict[str, Any]] = []

    async def delivered() -> bool:
        listed = await api.get(
            f"{API}/webhooks/deliveries", params={"limit": 100}, headers=auth(merchant, "")
        )
        mine = [d for d in listed.json()["data"]["deliveries"] if d["payoutId"] == payout["id"]]
        deliveries[:] = mine
        return len(mine) == 3 and all(d["status"] == "DELIVERED" for d in mine)

    await eventually(delivered, within=30, interval=0.5, what="3 deliveries delivered")
    return payout, deliveries


async def test_what_a_link_or_the_focus_reaches_is_below_the_sticky_top_bar(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """A delivery's link (and a resend's return to it) scrolled it to the top of the window,
    under the bar; so did Shift+Tab back to the breadcrumb."""
    payout, deliveries = await _payout_with_its_deliveries(api, merchant)
    middle = next(d for d in deliveries if d["eventType"] == "payout.processing")
    page = await sign_in(context, merchant.api_key)
    await page.set_viewport_size({"width": 1360, "height": 600})
    await page.goto(f"/dashboard/payouts/{payout['id']}#delivery-{middle['id']}")
    bar = await page.locator("header.topbar").evaluate("h => h.getBoundingClientRect().bottom")

    target = await page.locator(f"#delivery-{middle['id']}").bounding_box()
    assert target is not None and target["y"] >= bar, (target, bar)

    await page.get_by_role("contentinfo").get_by_role("link").focus()  # the end of the page
    crumb = page.locator(".crumbs a")
    for _ in range(30):
        await page.keyboard.press("Shift+Tab")
        if await crumb.evaluate("a => a === document.activeElement"):
            break
    await expect(crumb).to_be_focused()
    focused = await crumb.bounding_box()
    assert focused is not None and focused["y"] >= bar, (focused, bar)


async def test_the_payroll_preview_scrolls_by_keyboard_on_a_phone(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """Its Account and Result columns were cut off at 375 px, in a card the keyboard could not
    reach when no row links to a payout (a preview)."""
    page = await sign_in(context, merchant.api_key)
    await page.set_viewport_size(PHONE)
    await page.goto("/dashboard/payouts/bulk")
    csv = {"name": "payroll.csv", "mimeType": "text/csv", "buffer": PAYROLL.encode()}
    await page.set_input_files("#file", files=[csv])
    await page.get_by_role("button", name="Upload and preview").click()
    await expect(page.get_by_role("heading", name="Preview")).to_be_visible()

    assert await scroll_regions_out_of_keyboard_reach(page) == []


async def test_a_delivery_shown_parked_and_in_the_list_has_one_id_per_row(
    context: BrowserContext, sessions: SessionFactory, api: httpx.AsyncClient
) -> None:
    """The Parked table and the list both gave a parked delivery's row `delivery-{id}`: a
    resend's live update was then said of the Parked table's stale row ("... is now PARKED")."""
    unreachable = await new_merchant(sessions, "Sukkur Parked", None)
    await create_payout(api, unreachable, accountNumber="03001230001")
    page = await sign_in(context, unreachable.api_key)

    async def parked() -> bool:
        await page.goto("/dashboard/webhooks")
        return await page.locator("section.attention tr[data-delivery-id]").count() >= 3

    await eventually(parked, within=30, interval=0.5, what="3 parked deliveries")
    repeated = await page.evaluate(
        """() => Object.entries(Array.from(document.querySelectorAll('[id]'))
             .reduce((m, e) => (m[e.id] = (m[e.id] || 0) + 1, m), {})).filter(([, n]) => n > 1)"""
    )
    assert repeated == []


async def test_each_request_log_cell_says_its_column(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The column heads are hidden from screen readers: a call was read as "… POST
    /api/v1/payouts 201 31 ms c593d8db-…", with no word of what each figure is."""
    await create_payout(api, merchant, accountNumber="03001230001")
    page = await sign_in(context, merchant.api_key)
    calls = page.locator("details.log-row > summary")

    async def logged() -> bool:
        await page.goto("/dashboard/sandbox")
        return await calls.count() > 0

    await eventually(logged, within=30, interval=0.5, what="a request logged")
    said = await calls.first.aria_snapshot()
    for column in ("Status", "Latency", "Idempotency key"):
        assert column in said, said


async def test_the_current_page_and_the_picked_scenario_are_told_by_more_than_a_tint(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """The current page's link was a shade lighter than the others (1.45:1); the picked test
    scenario's row a tint of 1.13:1, and none under the pointer."""
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    nav = page.get_by_role("navigation", name="Main")
    weight = "a => getComputedStyle(a).fontWeight + ' ' + getComputedStyle(a).boxShadow"
    current = await nav.locator("a[aria-current=page]").evaluate(weight)
    other = await nav.get_by_role("link", name="Payouts", exact=True).evaluate(weight)
    assert current != other, (current, other)

    use = page.get_by_role("button", name=re.compile(r"account ends 0003"))
    await use.focus()
    await page.keyboard.press("Enter")
    await expect(use).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("[data-scenario][aria-pressed=true]")).to_have_count(1)


async def test_the_first_tab_skips_the_top_bar_to_the_page(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """Every page began with the brand and eight links of the top bar: a keyboard user tabbed
    through nine stops on each page before its first field."""
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the page")
    await expect(skip).to_be_focused()
    await expect(skip).to_be_in_viewport()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("main")).to_be_focused()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.closest('main') !== null")


async def test_a_fields_edge_stands_out_three_to_one(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """Text fields, lists and scenario options were drawn with an edge of 1.48:1 on the card:
    where a field begins was hard to see (WCAG 1.4.11 asks 3:1)."""
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    controls = {
        "text field": page.get_by_label("Amount (PKR)"),
        "list": page.locator("select").first,
        "option": page.locator(".segmented label:not(:has(input:checked))").first,
    }
    ratios = {}
    for name, control in controls.items():
        edge = await control.evaluate("e => getComputedStyle(e).borderTopColor")
        ratios[name] = contrast(edge, await background_behind(control))
    assert all(ratio >= 3 for ratio in ratios.values()), ratios


async def test_a_refused_sandbox_form_is_told_in_words_not_in_api_field_names(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """The alert read "Invalid request: delaySeconds" above a form whose field is labelled
    "Delay (seconds)"."""
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/sandbox")
    await page.get_by_label("Delay (seconds)").fill("99999")
    await page.get_by_role("button", name="Save webhook chaos").click()

    await expect(page.get_by_role("alert")).to_have_text(
        "Not accepted: the field marked below says why."
    )
    await expect(page.get_by_label("Delay (seconds)")).to_be_focused()


async def test_a_refused_institution_is_marked_focused_and_names_its_error(
    context: BrowserContext, sessions: SessionFactory
) -> None:
    """A wallet the directory no longer takes (deactivated while the form was open): its error
    was shown under the select, which was neither marked invalid nor focused, unlike every other
    refused field (the journeys review)."""
    merchant = await new_merchant(sessions, "Stale Wallet", None)
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/new")
    await page.get_by_label("Account number").fill("03001231234")
    await page.evaluate("document.querySelector('#wallet_code option:checked').value = 'GONEPAY'")
    await page.get_by_role("button", name="Create payout").click()

    wallet = page.get_by_label("Wallet provider")
    await expect(wallet).to_have_attribute("aria-invalid", "true")
    await expect(wallet).to_have_attribute("aria-describedby", "walletCode-error")
    await expect(wallet).to_be_focused()
