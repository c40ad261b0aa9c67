"""The browser tests: the whole system as processes (API with the dashboard, relay, processor,
webhook service), webhooks to a real local HTTP receiver, one Chromium for the package."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from tests.browser.dashboard import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    NO_CHROMIUM,
    OPERATOR_TOKEN,
    ContextOpener,
    new_context,
    new_merchant,
)
from tests.support.system import RunningSystem, running_system
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="package")
def system(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    env = {**service_env, "PAYOUTS_OPERATOR_TOKEN": OPERATOR_TOKEN}
    with running_system(env, tmp_path_factory.mktemp("dashboard-service-logs")) as running:
        yield running


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS)
        )
        yield launched
        await launched.close()


@pytest.fixture
async def open_context(browser: Browser, system: RunningSystem) -> AsyncIterator[ContextOpener]:
    """Fresh browser profiles (one cookie jar each, like separate people), closed afterwards."""
    opened: list[BrowserContext] = []

    async def open_one() -> BrowserContext:
        opened.append(await new_context(browser, system.base_url))
        return opened[-1]

    yield open_one
    for context in opened:
        await context.close()


@pytest.fixture
async def context(open_context: ContextOpener) -> BrowserContext:
    return await open_context()


@pytest.fixture(scope="package")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as running:
        yield running


@pytest.fixture(scope="package")
async def merchant(sessions: SessionFactory, receiver: WebhookReceiver) -> NewMerchant:
    """Merchant A: its webhooks go to the receiver."""
    return await new_merchant(sessions, "Karachi Traders", receiver.url)


@pytest.fixture(scope="package")
async def other_merchant(sessions: SessionFactory) -> NewMerchant:
    """Merchant B: must never see A's data."""
    return await new_merchant(sessions, "Lahore Retail", None)


@pytest.fixture
async def api(system: RunningSystem) -> AsyncIterator[httpx.AsyncClient]:
    """A merchant integration's HTTP client (paths from /api/v1)."""
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")
