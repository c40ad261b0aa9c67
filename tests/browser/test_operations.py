"""The operators' page: a sign-in of its own (the operator token), pipeline health, and re-driving
a dead-letter queue, in a real browser against the running system."""

import uuid
from pathlib import Path

import aio_pika
import httpx
import pytest
from playwright.async_api import Page, expect

from cli.merchants import NewMerchant
from contracts.messages import ProcessPayout
from contracts.topology import LAST_ERROR_HEADER, PAYOUT_COMMANDS
from tests.browser.dashboard import (
    CHROMIUM,
    NO_CHROMIUM,
    OPERATOR_TOKEN,
    PHONE,
    ContextOpener,
    assert_fits_the_phone,
    notice,
    screenshot,
    sign_in,
)
from tests.support.api_helpers import create_payout
from tests.support.polling import eventually

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)


async def dead_letter_a_harmless_command(amqp_url: str, payout: dict[str, str]) -> None:
    """A processing command for a payout already settled: re-driven, the processor acks it. The
    only dead letter: tests run before this one on the same xdist worker leave poison messages
    in the queue, which a re-drive sends back there."""
    command = ProcessPayout(payout_id=payout["id"], merchant_id=payout["merchantId"])
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dead = await channel.declare_queue(PAYOUT_COMMANDS.dead_letter_queue, passive=True)
        await dead.purge()
        await channel.default_exchange.publish(
            aio_pika.Message(
                command.to_json(),
                message_id=f"browser-dlq-{uuid.uuid4()}",
                headers={LAST_ERROR_HEADER: "a test's dead letter"},
            ),
            routing_key=PAYOUT_COMMANDS.dead_letter_queue,
        )


async def test_an_operator_sees_pipeline_health_and_redrives_a_dead_letter_queue(
    open_context: ContextOpener,
    merchant: NewMerchant,
    api: httpx.AsyncClient,
    service_env: dict[str, str],
    screenshots: Path,
) -> None:
    payout = await create_payout(api, merchant, accountNumber="03001230001")
    await dead_letter_a_harmless_command(
        service_env["PAYOUTS_AMQP_URL"], {"id": payout["id"], "merchantId": merchant.merchant_id}
    )

    context = await open_context()
    page = await context.new_page()
    await page.goto("/dashboard/operations")
    await page.wait_for_url("**/dashboard/operations/sign-in?next=%2Fdashboard%2Foperations")
    await page.get_by_label("Operator token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That is not the operator token.")
    await page.get_by_label("Operator token").fill(OPERATOR_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/operations")

    await expect(page.get_by_role("heading", name="Pipeline health")).to_be_visible()

    async def audited() -> bool:
        """By the system's outbox relay, at its start (or by one within 10 minutes before)."""
        await page.reload()
        shown = page.locator("[data-ledger-audit]")
        return await shown.get_attribute("data-ledger-audit") != "none"

    await eventually(audited, within=30, interval=0.5, what="a ledger audit shown")
    await expect(page.get_by_text("Every journal balances")).to_be_visible()
    commands = page.locator(f"tr[data-queue='{PAYOUT_COMMANDS.name}']")
    await expect(commands.locator("[data-messages]")).not_to_have_text("0")
    link = commands.get_by_role("link", name="Open in management UI")
    href = await link.get_attribute("href") or ""
    assert "/#/queues/" in href and href.endswith(f"/{PAYOUT_COMMANDS.name}.dead")
    await screenshot(page, "operations", screenshots)

    await commands.get_by_role("button", name=f"Re-drive to {PAYOUT_COMMANDS.name}").click()
    # Each render asks the broker: slow on a loaded host.
    status = notice(page)
    await expect(status).to_contain_text("moved back to their queue", timeout=15_000)
    await eventually(
        lambda: _dead_letters_shown(page, PAYOUT_COMMANDS.name),
        within=60,
        what="the dead letters gone",
    )

    await page.set_viewport_size(PHONE)
    await assert_fits_the_phone(page)
    await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport(ratio=1)
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/dashboard/operations/sign-in")

    # A merchant's session is no operator's.
    merchant_page = await sign_in(await open_context(), merchant.api_key)
    await merchant_page.goto("/dashboard/operations")
    await merchant_page.wait_for_url("**/dashboard/operations/sign-in?next=*")


async def _dead_letters_shown(page: Page, queue: str) -> bool:
    await page.reload()
    return await page.locator(f"tr[data-queue='{queue}'] [data-messages]").inner_text() == "0"
