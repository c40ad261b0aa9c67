"""Merchant text at its edges in a real browser: an Urdu name cut to fit a list keeps its
beginning, the longest strings the API accepts keep the payout page within the window, a payroll
confirmed creates exactly what its preview judged (a NUL byte included), and a page shown as the
answer to a refused form links where its links say."""

import re
import uuid

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, ViewportSize, expect

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.browser.dashboard import (
    CHROMIUM,
    NO_CHROMIUM,
    PHONE,
    VIEWPORT,
    assert_fits_the_phone,
    new_merchant,
    sign_in,
)
from tests.support.api_helpers import auth, create_payout

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

# 70 characters: within the API's 100, longer than the list's column.
URDU_NAME = "محمد عبدالرحمن ولد محمد عبدالستار خان صاحب، ضلع راولپنڈی، پنجاب پاکستان"
FIRST_WORD = "محمد"
# Where the first `length` characters of a cell's text are drawn, and the part of the cell that
# shows text.
FIRST_WORD_SHOWN = """(cell, length) => {
  const range = document.createRange();
  range.setStart(cell.firstChild, 0);
  range.setEnd(cell.firstChild, length);
  const word = range.getBoundingClientRect();
  const box = cell.getBoundingClientRect();
  const style = getComputedStyle(cell);
  const left = box.left + parseFloat(style.paddingLeft);
  const right = box.right - parseFloat(style.paddingRight);
  return {shown: word.left >= left - 1 && word.right <= right + 1,
          word: [word.left, word.right], cell: [left, right]};
}"""
# The longest of each the API accepts: an ERP-style reference, and one unbroken title.
LONGEST_REFERENCE = "INV_2026_01_31_000123_KARACHI_TRADERS_PAYROLL_BATCH07_EMPLOYEE42"
LONGEST_TITLE = "W" * 100
PAYROLL_HEADER = "merchantReference,amount,destType,walletCode,accountNumber,accountTitle"


async def payout_page(
    context: BrowserContext,
    api: httpx.AsyncClient,
    merchant: NewMerchant,
    viewport: ViewportSize,
    **fields: str,
) -> Page:
    """The dashboard page of a new payout with `fields`, in a window of `viewport`."""
    payout = await create_payout(api, merchant, accountNumber="03001230001", **fields)
    page = await sign_in(context, merchant.api_key)
    await page.set_viewport_size(viewport)
    await page.goto(f"/dashboard/payouts/{payout['id']}")
    await page.locator("#payout-heading").wait_for()
    return page


async def test_an_urdu_name_cut_to_fit_the_payouts_list_keeps_its_beginning(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The cell was left-to-right: an Urdu name that overflowed showed from "ولد" ("son of"),
    the beneficiary's own name cut off."""
    payout = await create_payout(api, merchant, accountNumber="03001230001", accountTitle=URDU_NAME)
    page = await sign_in(context, merchant.api_key)
    cell = page.locator(f"tr[data-payout-id='{payout['id']}'] td.truncate")
    await cell.wait_for()
    assert await cell.evaluate("cell => cell.scrollWidth > cell.clientWidth"), "it fits: no test"

    where = await cell.evaluate(FIRST_WORD_SHOWN, len(FIRST_WORD))

    assert where["shown"], f"first word drawn at x {where['word']}, the cell shows {where['cell']}"
    assert await cell.get_attribute("title") == URDU_NAME


async def test_the_longest_title_keeps_the_payout_page_within_the_window(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The heading had no wrap point: the page was 2,508px wide in a 1,360px window."""
    page = await payout_page(context, api, merchant, VIEWPORT, accountTitle=LONGEST_TITLE)

    width = await page.evaluate("document.documentElement.scrollWidth")

    assert width <= VIEWPORT["width"]


async def test_the_longest_reference_keeps_the_payout_page_on_the_phone(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The crumbs line had no wrap point: the page was 550px wide on a 390px phone."""
    page = await payout_page(context, api, merchant, PHONE, merchantReference=LONGEST_REFERENCE)

    await assert_fits_the_phone(page)


async def test_a_payroll_row_previewed_invalid_is_not_created_on_confirm(
    context: BrowserContext, merchant: NewMerchant, api: httpx.AsyncClient
) -> None:
    """The confirm posted the file back as a hidden textarea's text, where the browser's HTML
    parser made a NUL U+FFFD: the row the preview refused (a control character) was created."""
    run = uuid.uuid4().hex[:8]
    payroll = (
        f"{PAYROLL_HEADER}\n"
        f"good-{run},10.00,WALLET,JAZZCASH,03001230001,Ayesha Khan\n"
        f"nul-{run},10.00,WALLET,JAZZCASH,03001230001,Ali\x00Khan\n"
    ).encode()
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/payouts/bulk")
    await page.get_by_label(re.compile("Payroll file")).set_input_files(
        {"name": "payroll.csv", "mimeType": "text/csv", "buffer": payroll}
    )
    await page.get_by_role("button", name="Upload and preview").click()
    await expect(page.locator("[data-count=ready] strong")).to_have_text("1")
    await expect(page.locator("tr[data-line='3']")).to_contain_text("control characters")

    await page.get_by_role("button", name="Confirm: create 1 payout").click()

    await expect(page.locator("[data-count=created] strong")).to_have_text("1")
    await expect(page.locator("[data-count=not_sent] strong")).to_have_text("1")
    for reference, count in ((f"good-{run}", 1), (f"nul-{run}", 0)):
        listed = await api.get(
            "/api/v1/payouts", params={"merchantReference": reference}, headers=auth(merchant, "")
        )
        assert len(listed.json()["data"]["payouts"]) == count, reference


async def test_the_ledger_pager_works_on_the_page_a_refused_top_up_shows(
    context: BrowserContext, sessions: SessionFactory, api: httpx.AsyncClient
) -> None:
    """The refusal is the balance page rendered as the answer to the top-up's POST, and its
    pager's links were relative: "Older →" went to the POST-only top-up path (a JSON 405)."""
    merchant = await new_merchant(sessions, "Multan Mills", None)
    for _ in range(15):  # two ledger lines each: more than a page of 25
        await create_payout(api, merchant, accountNumber="03001230001")
    page = await sign_in(context, merchant.api_key)
    await page.goto("/dashboard/balance")
    await page.get_by_label("Amount (PKR)").fill("not a number")
    await page.get_by_role("button", name="Top up").click()
    await expect(page.locator("#amount-error")).to_be_visible()

    await page.get_by_role("link", name="Older →").click()

    await expect(page.get_by_role("heading", name="Balance and ledger")).to_be_visible()
    assert re.search(r"/dashboard/balance\?startingAfter=[0-9]+$", page.url), page.url
    await page.get_by_role("link", name="← Newest").click()
    await expect(page.get_by_role("link", name="Older →")).to_be_visible()
    assert page.url.endswith("/dashboard/balance")
