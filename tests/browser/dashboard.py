"""Driving the dashboard in a real browser: Playwright for Python on Debian's Chromium (it cannot
download browsers here), offline, one fresh context (cookie jar) per user."""

import os
import re
import shutil
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from cli.merchants import NewMerchant, create_merchant
from contracts.db.engine import SessionFactory, transaction

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # /usr/bin/chromium
NO_CHROMIUM = "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
VIEWPORT = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}
# The screenshots in docs/screenshots are refreshed only when asked (committed files would
# otherwise change on every test run); without it they go to the test's temporary folder.
UPDATE_SCREENSHOTS = os.environ.get("PAYOUTS_UPDATE_SCREENSHOTS") == "1"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PAYOUT_PAGE = re.compile(r"/dashboard/payouts/[0-9a-f-]{36}(\?.*)?$")
OPERATOR_TOKEN = "operator-token-for-the-browser-tests"
ContextOpener = Callable[[], Awaitable[BrowserContext]]  # a fresh browser profile per call


async def new_merchant(
    sessions: SessionFactory, name: str, webhook_url: str | None, balance: str = "5000000.00"
) -> NewMerchant:
    async with transaction(sessions) as session:
        return await create_merchant(
            session, name=name, balance=Decimal(balance), webhook_url=webhook_url
        )


async def new_context(browser: Browser, base_url: str) -> BrowserContext:
    return await browser.new_context(base_url=base_url, viewport=VIEWPORT, locale="en-GB")


async def sign_in(context: BrowserContext, api_key: str) -> Page:
    page = await context.new_page()
    await page.goto("/dashboard/sign-in")
    await page.get_by_label("API key").fill(api_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/payouts")
    await expect(page.get_by_role("heading", name="Payouts")).to_be_visible()
    return page


async def assert_fits_the_phone(page: Page) -> None:
    """No sideways scroll of the whole page on a PHONE (a wide table scrolls inside its card)."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width}px wide on a {PHONE['width']}px phone"


def notice(page: Page) -> Locator:
    """The page's notice of what a form did (the page's other status region is #announcer)."""
    return page.locator(".notice[role=status]")


def announcer(page: Page) -> Locator:
    """The page's polite live region: what a live refresh changed, said to a screen reader."""
    return page.locator("#announcer[role=status]")


def contrast(one: str, two: str) -> float:
    """The WCAG contrast ratio of two computed CSS colours ("rgb(r, g, b)")."""

    def luminance(color: str) -> float:
        channels = [float(c) / 255 for c in re.findall(r"[\d.]+", color)[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(one), luminance(two)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def background_behind(element: Locator) -> str:
    """The computed colour of the nearest opaque background behind `element`."""
    return str(
        await element.evaluate(
            """element => {
              for (let node = element.parentElement; node; node = node.parentElement) {
                const color = getComputedStyle(node).backgroundColor;
                if (color !== "rgba(0, 0, 0, 0)") return color;
              }
              return "rgb(255, 255, 255)";
            }"""
        )
    )


async def scroll_regions_out_of_keyboard_reach(page: Page) -> list[str]:
    """Elements that scroll sideways yet neither hold a focusable element nor are one (a named
    region): a keyboard user cannot scroll them."""
    found: list[str] = await page.evaluate(
        """() => Array.from(document.querySelectorAll("body *"))
          .filter(e => ["auto", "scroll"].includes(getComputedStyle(e).overflowX)
                       && e.scrollWidth > e.clientWidth)
          .filter(e => !e.querySelector("a[href], button, input, select, textarea, summary")
                       && !(e.tabIndex === 0 && e.getAttribute("role") === "region"
                            && e.getAttribute("aria-labelledby")
                            && document.getElementById(e.getAttribute("aria-labelledby"))))
          .map(e => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className)"""
    )
    return found


async def screenshot(page: Page, name: str, folder: Path) -> Path:
    """A full-page PNG of what the reader of the README sees."""
    target = (DOCS_SCREENSHOTS if UPDATE_SCREENSHOTS else folder) / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar lands mid-page
    await page.screenshot(path=str(target), full_page=True)
    return target
