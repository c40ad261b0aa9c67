"""What a person sees, measured in Chromium (bounding boxes, computed styles, text) at a 1280x800
desktop or a 375x740 phone (the visual review): money, alignment, a long reference, an empty
list on a phone, a checkbox beside its words, the top bar, a QUEUED payout's colour."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.browser.dashboard import new_merchant, sign_in
from tests.support.api_helpers import create_payout
from tests.support.system import RunningSystem

DESK = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
# The API's longest reference, with no point to break it at; a title in Urdu.
LONG_REFERENCE = "INV_2026_01_31_000123_KARACHI_TRADERS_PAYROLL_BATCH07_EMPLOYEE42"
URDU_TITLE = "محمد عبدالرحمن ولد محمد عبدالستار خان"
PAYROLL = (
    "merchantReference,amount,destType,walletCode,accountNumber,accountTitle\n"
    "vis-{n}-1,1500,WALLET,JAZZCASH,03001230001,Ali Khan\n"
    "vis-{n}-2,250000.5,WALLET,EASYPAISA,03001230001,Sara Ahmed\n"
)


@dataclass(frozen=True)
class Merchants:
    busy: NewMerchant  # a long company name, a payout with a long reference, a QUEUED one
    empty: NewMerchant
    queued: dict[str, Any]


@pytest.fixture(scope="module")
async def merchants(system: RunningSystem, sessions: SessionFactory) -> AsyncIterator[Merchants]:
    busy = await new_merchant(sessions, "Karachi Traders (Private) Limited", None, "300000.00")
    empty = await new_merchant(sessions, "Empty Shop", None)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30) as api:
        await create_payout(
            api,
            busy,
            accountNumber="03001230001",
            amount="1234.50",
            merchantReference=LONG_REFERENCE,
            accountTitle=URDU_TITLE,
        )
        queued = await create_payout(
            api, busy, accountNumber="03001230001", amount="500000.00", queueIfLowBalance=True
        )
    yield Merchants(busy, empty, queued)


async def signed_in(
    context: BrowserContext, merchant: NewMerchant, viewport: dict[str, int]
) -> Page:
    page = await sign_in(context, merchant.api_key)
    await page.set_viewport_size(viewport)  # type: ignore[arg-type]
    return page


async def test_the_payroll_preview_shows_amounts_as_every_other_page_does(
    context: BrowserContext, merchants: Merchants
) -> None:
    """It showed the file's cells, "1500" and "250000.5", under the heading every other page
    shows 1,500.00 under."""
    page = await signed_in(context, merchants.busy, DESK)
    await page.goto("/dashboard/payouts/bulk")
    csv = PAYROLL.format(n=uuid.uuid4().hex[:6])
    await page.locator("input[type=file]").set_input_files(
        {"name": "payroll.csv", "mimeType": "text/csv", "buffer": csv.encode()}
    )
    await page.get_by_role("button", name="Preview").click()
    await page.locator("table.bulk-rows").wait_for()

    amounts = await page.locator("table.bulk-rows tbody td.num").all_inner_texts()

    assert amounts == ["1,500.00", "250,000.50"]


async def test_the_heading_of_a_numeric_column_is_aligned_with_its_numbers(
    context: BrowserContext, merchants: Merchants
) -> None:
    """`.table th {text-align: left}` outranked `.num`: AMOUNT sat left over right-aligned
    amounts."""
    page = await signed_in(context, merchants.busy, DESK)
    for path in ("/dashboard/payouts", "/dashboard/balance"):
        await page.goto(path)
        aligned = await page.locator("table th.num").first.evaluate(
            """th => [th, th.closest("table").querySelector("tbody td.num")]
                .map(cell => getComputedStyle(cell).textAlign)"""
        )
        assert aligned == ["right", "right"], path


async def test_a_long_reference_leaves_every_column_within_the_card_at_1280(
    context: BrowserContext, merchants: Merchants
) -> None:
    """A 64-character reference has no point to wrap at: the table grew past its card, and the
    Status column was scrolled out of sight on a 1280px desktop."""
    page = await signed_in(context, merchants.busy, DESK)
    await page.goto("/dashboard/payouts")
    await page.locator("tr[data-payout-id]").first.wait_for()

    beyond = await page.evaluate(
        """() => {
          const card = document.querySelector("table[data-live-statuses]").closest(".card");
          const edge = card.getBoundingClientRect().right;
          return Array.from(document.querySelectorAll("tr[data-payout-id] .status"))
            .filter(s => s.getBoundingClientRect().right > edge).length;
        }"""
    )

    assert beyond == 0


async def test_an_empty_payouts_list_says_so_within_a_phone_screen(
    context: BrowserContext, merchants: Merchants
) -> None:
    """It was a row of the wide table: on a phone its link was cut off at the card's edge."""
    page = await signed_in(context, merchants.empty, PHONE)
    await page.goto("/dashboard/payouts")
    empty = page.locator("p.empty")

    await empty.wait_for()
    where = await empty.evaluate(
        """p => [p.closest(".card").getBoundingClientRect().right,
                 p.querySelector("a").getBoundingClientRect().right]"""
    )

    assert await empty.inner_text() == "No payouts yet. Create one."
    card_right, link_right = where
    assert link_right <= card_right <= PHONE["width"]


async def test_the_queue_checkbox_sits_beside_its_label(
    context: BrowserContext, merchants: Merchants
) -> None:
    """It took `input {width: 100%}`: a box centred alone on a line, its words on the next."""
    page = await signed_in(context, merchants.busy, DESK)
    await page.goto("/dashboard/payouts/new")

    box, words = await page.locator("#queue_if_low_balance").evaluate(
        """input => {
          const words = Array.from(input.closest("label").childNodes)
            .find(n => n.nodeType === 3 && n.textContent.trim());
          const range = document.createRange(); range.selectNodeContents(words);
          const [own, text] = [input.getBoundingClientRect(), range.getBoundingClientRect()];
          return [{width: own.width, middle: own.top + own.height / 2},
                  {top: text.top, bottom: text.bottom}];
        }"""
    )

    assert box["width"] < 40
    assert words["top"] <= box["middle"] <= words["bottom"]


async def test_the_top_bar_keeps_its_brand_and_mode_on_one_line_beside_a_long_name(
    context: BrowserContext, merchants: Merchants
) -> None:
    """Beside "Karachi Traders (Private) Limited", "Payout Sandbox" and the TEST MODE pill broke
    in two lines each at 1280px, and Readiness went alone to a second row of navigation."""
    page = await signed_in(context, merchants.busy, DESK)

    lines = await page.evaluate(
        """() => [".brand span", ".mode-pill"].map(selector => {
          const range = document.createRange();
          range.selectNodeContents(document.querySelector(selector));
          return new Set(Array.from(range.getClientRects(), r => Math.round(r.top))).size;
        })"""
    )

    nav_rows = await page.evaluate(
        """() => new Set(Array.from(document.querySelectorAll(".nav a"),
                                    a => Math.round(a.getBoundingClientRect().top))).size"""
    )

    assert (lines, nav_rows) == ([1, 1], 1)


async def test_a_queued_payout_has_a_status_colour_as_every_other_status_has(
    context: BrowserContext, merchants: Merchants
) -> None:
    """QUEUED had no `.status-queued` rule: drawn in the grey of an unknown status."""
    page = await signed_in(context, merchants.busy, DESK)
    await page.goto(f"/dashboard/payouts/{merchants.queued['id']}")
    badge = page.locator(".payout-status .status")
    await badge.wait_for()

    label, colour, unknown = await badge.evaluate(
        """badge => {
          const probe = document.createElement("span"); probe.className = "status status-unknown";
          document.body.appendChild(probe);
          const unknown = getComputedStyle(probe).backgroundColor; probe.remove();
          return [badge.textContent.trim(), getComputedStyle(badge).backgroundColor, unknown];
        }"""
    )

    assert label == "QUEUED"
    assert colour != unknown
