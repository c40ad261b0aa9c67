"""Webhooks: the endpoint URL (view, change), the signing secret (revealed on click, rotated),
a test event, the deliveries by status (parked first; refreshed live while one is being
attempted), resending one, and recovering every failed or parked delivery since a time."""

import hashlib
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from api_service.dashboard.api_bridge import ApiAnswer, ApiRefusal
from api_service.dashboard.context import FormDep, MerchantPage, PageDep, back_to, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.dashboard.timeline import UNSETTLED_DELIVERIES
from api_service.database_time import not_counted
from api_service.envelope import success_body
from api_service.errors import SandboxDisabled, ValidationFailed
from api_service.idempotency import Idempotency
from api_service.pagination import STARTING_AFTER
from api_service.schemas import DeliveryIdPath
from api_service.webhooks.service import RECOVERABLE_STATUSES, recover_deliveries
from contracts.db.engine import naive_utc, utcnow
from contracts.db.outages import is_outage
from contracts.domain.text import trimmed
from contracts.webhooks import DeliveryStatus

router = dashboard_router()
WEBHOOKS = "/dashboard/webhooks"
RECOVER_PATH = "/dashboard/webhooks/recover"
PAGE_SIZE = 25
PARKED_SHOWN = 10
TEST_ACCOUNT = "03001230001"  # a wallet ending 0001: SUCCESS at once


def _status(request: Request) -> DeliveryStatus | None:
    try:
        return DeliveryStatus(request.query_params.get("status", ""))
    except ValueError:
        return None


async def _deliveries(page: MerchantPage) -> dict[str, Any]:
    """The deliveries of the page's status tab, newest first or older than its cursor (a
    delivery id), as the page shows them and its live part refreshes them (while one of them is
    still being attempted). By cursor, as the payouts page: a page number skipped every delivery
    before its page with an OFFSET (scale review). A cursor that names no delivery of the
    merchant's (an odd link): the newest page."""
    status = _status(page.request)
    tab = {"status": status.value} if status else {}
    after = page.request.query_params.get(STARTING_AFTER) or None
    answer = await page.api.deliveries(status=status, starting_after=after, limit=PAGE_SIZE)
    if not answer.ok and after is not None:
        after = None
        answer = await page.api.deliveries(status=status, limit=PAGE_SIZE)
    listing = answer.data
    query = urlencode({**tab, STARTING_AFTER: after} if after else tab)
    older = listing["pagination"]["nextCursor"]
    return {
        "status": status.value if status else "",
        "deliveries": listing["deliveries"],
        "older_link": f"{WEBHOOKS}?{urlencode({**tab, STARTING_AFTER: older})}" if older else None,
        "newest_link": f"{WEBHOOKS}?{urlencode(tab)}" if after else None,
        "live": any(row["status"] in UNSETTLED_DELIVERIES for row in listing["deliveries"]),
        "live_url": f"{WEBHOOKS}/deliveries?{query}",
        "return_to": f"{WEBHOOKS}?{query}",
    }


async def _webhooks_page(
    page: MerchantPage,
    *,
    secret: str | None = None,
    rotated: dict[str, Any] | None = None,
    answer: ApiAnswer | None = None,
    url: str | None = None,
) -> Response:
    status = _status(page.request)
    parked = None
    if status is None:  # the unfiltered view leads with what needs a hand
        parked = (await page.api.deliveries(status=DeliveryStatus.PARKED, limit=PARKED_SHOWN)).data
    endpoint = (await page.api.webhook_endpoint()).data
    refused = answer if answer is not None and not answer.ok else None
    return page.render(
        "webhooks.html",
        active="webhooks",
        status_code=refused.status_code if refused else 200,
        endpoint=endpoint,
        url=endpoint["url"] if url is None else url,
        url_error=refused.field_errors.get("url", refused.error_message) if refused else None,
        secret=secret,
        rotated=rotated,
        statuses=[status.value for status in DeliveryStatus],
        parked=parked,
        recover_since=f"{utcnow() - timedelta(days=1):%Y-%m-%dT%H:%M}",
        recoverable=" or ".join(status.lower() for status in RECOVERABLE_STATUSES),
        **await _deliveries(page),
    )


@router.get(WEBHOOKS)
async def show_webhooks(page: PageDep) -> Response:
    return await _webhooks_page(page)


@router.get(f"{WEBHOOKS}/deliveries")
async def deliveries_fragment(page: PageDep) -> Response:
    """The page's deliveries table, polled while a delivery in it is still being attempted."""
    return page.render("deliveries_live.html", active="webhooks", **await _deliveries(page))


@router.post(f"{WEBHOOKS}/endpoint")
async def save_endpoint(form: FormDep) -> Response:
    url = trimmed(await form.text("url"))
    answer = await form.api.set_webhook_url(url or None)
    if answer.ok:
        return redirect(WEBHOOKS, done="url-saved")
    return await _webhooks_page(form, answer=answer, url=url)


@router.post(f"{WEBHOOKS}/secret")
async def reveal_secret(form: FormDep) -> Response:
    """Shown on request only (a POST: never in a URL, a cache or a prefetched page)."""
    merchant = await form.api.merchant_with_secrets()
    return await _webhooks_page(form, secret=merchant.webhook_secret)


@router.post(f"{WEBHOOKS}/secret/rotate")
async def rotate_secret(form: FormDep) -> Response:
    answer = await form.api.rotate_secret(await form.text("idempotency_key"))
    with not_counted():  # the rotation committed: its page, the new secret on it, stands
        try:
            return await _webhooks_page(form, rotated=answer.data)
        except Exception as error:
            if not is_outage(error):
                raise
            # The rest of the page could not be read: the new secret alone, shown once. An
            # error page lost it, and a second rotation retired the secret in use (dashboard
            # outages review).
            return form.render("secret_rotated.html", active="webhooks", rotated=answer.data)


@router.post(f"{WEBHOOKS}/test")
async def send_test_event(form: FormDep) -> Response:
    """The webhook pipeline carries payout events only, so a test event is a real one: a
    PKR 1.00 payout to a test wallet that succeeds at once (created, processing, succeeded): test
    mode only, where that wallet's payouts move no real money."""
    if not form.settings.sandbox_enabled:
        raise SandboxDisabled
    wallets = [w for w in (await form.api.directory()).data["wallets"] if w["isActive"]]
    if not wallets:
        raise ValidationFailed.on("walletCode", "no active wallet in the directory")
    key = await form.text("idempotency_key")
    body = {
        # Of the form's key: a double submit sends the same body, and is answered the first
        # post's payout (a reference of the clock was another body: IDEMPOTENCY_KEY_REUSED).
        "merchantReference": f"webhook-test-{hashlib.sha256(key.encode()).hexdigest()[:20]}",
        "amount": "1.00",
        "destType": "WALLET",
        "walletCode": wallets[0]["code"],
        "accountNumber": TEST_ACCOUNT,
        "accountTitle": "Webhook test",
        "purpose": "Test event sent from the dashboard",
    }
    answer = await form.api.create_payout(body, key)
    return redirect(f"/dashboard/payouts/{answer.data['id']}", done="test-sent")


@router.post("/dashboard/deliveries/{delivery_id}/resend")
async def resend(delivery_id: DeliveryIdPath, form: FormDep) -> Response:
    answer = await form.api.resend(delivery_id, await form.text("idempotency_key"))
    if not answer.ok:  # e.g. no endpoint configured: an error page with the API's message
        raise ApiRefusal(answer)
    target = back_to(await form.text("return_to"), WEBHOOKS)
    return redirect(target, done="resent", anchor=f"#delivery-{delivery_id}")


def _since(text: str) -> datetime:
    try:
        return naive_utc(datetime.fromisoformat(text))
    except ValueError as exc:  # not a time, or none UTC can hold
        raise ValidationFailed.on("since", "must be a time such as 2026-01-31T10:00") from exc


async def recover(page: MerchantPage, since_text: str, idempotency_key: str) -> ApiAnswer:
    """Resend every retrying or parked delivery since a time: webhooks.service's recover,
    idempotent under the form's key like an API POST."""

    async def call(request: Request, idempotency: Idempotency) -> Response:
        async def operation() -> tuple[int, bytes]:
            resent = await recover_deliveries(
                page.api.session,
                page.api.merchant,
                since=_since(since_text),
                request_id=page.api.request_id,
            )
            return 202, success_body({"resent": len(resent)})

        return await idempotency.run(request, page.api.session, operation)

    body = {"since": since_text}
    return await page.api.idempotent(RECOVER_PATH, body, idempotency_key, call)


@router.post(RECOVER_PATH)
async def recover_failed(form: FormDep) -> Response:
    answer = await recover(form, await form.text("since"), await form.text("idempotency_key"))
    return redirect(WEBHOOKS, done="recovered", count=int(answer.data["resent"]))
