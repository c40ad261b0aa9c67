"""The dashboard for a keyboard and a screen reader, in Chromium (each found by the accessibility
review): a refused form is said, what the focus or a link reaches is not under the sticky top
bar, every wide table scrolls by keyboard, ids are unique, the request log's cells say their
column, what is cut short is shown whole somewhere, and no state is told by colour alone."""

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
from tests.support.api_helpers import API, auth, create_payout, new_key, payout_body
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


async def test_a_refused_payroll_file_is_said_on_its_field_and_the_preview_scrolls_on_a_phone(
    context: BrowserContext, merchant: NewMerchant
) -> None:
    """A file missing a column was refused in an alert atop the page: the file field was neither
    marked invalid, tied to the message, nor focused, unlike every other form. The preview's
    Account and Result columns were cut off at 375 px, in a card the keyboard could not reach
    when no row links to a payout (a preview)."""
    page = await sign_in(context, merchant.api_key)
    await page.set_viewport_size(PHONE)
    await page.goto("/dashboard/payouts/bulk")
    field = page.get_by_label(re.compile("Payroll file"))
    short = b"merchantReference,amount\na11y-short-1,10.00\n"
    await field.set_input_files({"name": "short.csv", "mimeType": "text/csv", "buffer": short})
    await page.get_by_role("button", name="Upload and preview").click()
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(field).to_have_accessible_description(re.compile("Missing column"))
    await expect(field).to_be_focused()

    csv = {"name": "payroll.csv", "mimeType": "text/csv", "buffer": PAYROLL.encode()}
    await field.set_input_files(csv)
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


async def test_each_request_log_cell_says_its_column_and_an_opened_call_all_of_it(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The column heads are hidden from screen readers: a call was read as "… POST
    /api/v1/payouts 201 31 ms c593d8db-…", with no word of what each figure is. The key column
    cut a UUID short ("…93a5f954ad") and a long path was cut too: the whole of either was only
    in a tooltip (mouse only), and the opened call did not show them."""
    key = new_key()
    created = await api.post(
        f"{API}/payouts",
        json=payout_body(accountNumber="03001230001"),
        headers=auth(merchant, key),
    )
    assert created.status_code == 201, created.text
    page = await sign_in(context, merchant.api_key)
    call = page.locator("details.log-row", has_text=key)

    async def logged() -> bool:
        await page.goto("/dashboard/sandbox")
        return await call.count() == 1

    await eventually(logged, within=30, interval=0.5, what="the call logged")
    said = await call.locator("summary").aria_snapshot()
    for column in ("Status", "Latency", "Idempotency key"):
        assert column in said, said

    await call.locator("summary").press("Enter")
    bodies = call.locator(".log-bodies")
    await expect(bodies).to_contain_text(key)
    await expect(bodies).to_contain_text(f"{API}/payouts")


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


async def test_a_refused_institution_or_destination_type_is_marked_and_focused(
    context: BrowserContext, sessions: SessionFactory
) -> None:
    """A wallet the directory no longer takes (deactivated while the form was open): its error
    was shown under the select, which was neither marked invalid nor focused, unlike every other
    refused field (the journeys review). A destination type the API refuses came back with no
    radio checked: dashboard.js threw at load (reading .value of null), so both institution
    lists showed and the test scenarios' buttons did nothing."""
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

    thrown: list[str] = []
    page.on("pageerror", lambda error: thrown.append(str(error)))
    await page.evaluate(
        "document.querySelectorAll('[name=dest_type]').forEach(r => r.value = 'CASH')"
    )
    await page.get_by_role("button", name="Create payout").click()
    await expect(page.locator("#destType-error")).to_be_visible()
    await expect(page.locator("[name=dest_type][aria-invalid=true]").first).to_be_focused()
    await expect(page.locator("[data-dest]:visible")).to_have_count(1)
    assert thrown == []


async def test_a_new_merchants_pages_read_whole_and_scroll_by_keyboard_on_a_phone(
    context: BrowserContext, sessions: SessionFactory
) -> None:
    """For a merchant with no payout and no API call yet: its long name was cut at 16rem in the
    top bar, its tooltip "Signed in merchant"; the operators' sign-in was titled "Sign in ·
    Payout Sandbox", as the merchants'; the Recover field (a datetime-local, no zone) said
    nothing of UTC, the "UTC" beside it tied to nothing; the chart's legend told its dashed
    Available line from the solid Balance by colour alone (two solid bars); and at 375 px the
    Balance history and the Request log scrolled sideways in cards no keyboard could reach."""
    name = "Karachi Traders and Exporters of Textiles (Private) Limited"
    page = await sign_in(context, (await new_merchant(sessions, name, None)).api_key)
    shown = page.locator(".merchant-name")
    cut = await shown.evaluate("e => e.scrollWidth > e.clientWidth")
    assert not cut or await shown.get_attribute("title") == name, "the name is cut, untold"

    await page.goto("/dashboard/operations/sign-in")
    await expect(page).to_have_title("Operator sign in · Payout Sandbox")
    await page.goto("/dashboard/webhooks")
    await expect(page.locator("#recover-since")).to_have_accessible_description("UTC")

    await page.set_viewport_size(PHONE)
    await page.goto("/dashboard/balance")
    assert await scroll_regions_out_of_keyboard_reach(page) == []
    look = """e => { const s = getComputedStyle(e);
        return [s.height, s.borderTopStyle, s.backgroundImage].join(" "); }"""
    total = await page.locator(".legend .swatch.total").evaluate(look)
    available = await page.locator(".legend .swatch.available").evaluate(look)
    assert total != available, f"both swatches are '{total}', told apart only by colour"
    await page.goto("/dashboard/sandbox")
    assert await scroll_regions_out_of_keyboard_reach(page) == []
