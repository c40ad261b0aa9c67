"""Dashboard sessions and forms without a browser: the API app in-process (ASGI), the real
database. What a browser test cannot set up cheaply: https, an expired session, a tampered
cookie, production mode, no operator token, a form posted twice."""

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert

from api_service.app import create_app
from api_service.dashboard.csv_payroll import COLUMNS
from api_service.dashboard.sessions import (
    MERCHANT_COOKIE,
    SIGN_IN_NONCE_SECONDS,
    dashboard_sessions,
)
from api_service.dashboard.sessions import (
    SIGN_IN_COOKIE as SIGN_IN,
)
from cli.merchants import NewMerchant, ensure_demo_merchant
from contracts.api_keys import new_api_key
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import (
    Payout,
    PayoutEvent,
    PspCallback,
    WebhookAttempt,
    WebhookDelivery,
)
from contracts.settings import Settings
from tests.browser.dashboard import new_merchant
from tests.conftest import in_production
from tests.support.api_helpers import API, auth, create_payout, get_balance
from tests.support.payout_records import event_types
from tests.support.polling import eventually


@pytest.fixture
async def merchant(sessions: SessionFactory) -> NewMerchant:
    return await new_merchant(sessions, "In-process Traders", None)


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of these settings, served over https."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://dash") as client:
            yield client


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings) as client:
        yield client


# Where a signed-out browser asking for the payouts list is sent: it goes on there once signed in.
SIGN_IN_FOR_PAYOUTS = "/dashboard/sign-in?next=%2Fdashboard%2Fpayouts"


def form_fields(html: str) -> dict[str, str]:
    """The hidden fields of the first form on the page that carries them."""
    return dict(re.findall(r'type="hidden" name="([a-z_]+)" value="([^"]*)"', html))


async def sign_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    page = await client.get("/dashboard/sign-in")
    token = form_fields(page.text)["csrf_token"]
    return await client.post("/dashboard/sign-in", data={"csrf_token": token, "api_key": api_key})


async def test_over_https_the_session_cookie_is_secure_httponly_strict_and_expiring(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, settings: Settings
) -> None:
    signed_in = await sign_in(dashboard, merchant.api_key)
    assert signed_in.status_code == 303
    cookie = next(
        value
        for value in signed_in.headers.get_list("set-cookie")
        if value.startswith(MERCHANT_COOKIE)
    )
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/dashboard"} <= attributes
    assert f"max-age={int(settings.dashboard_session_hours * 3600)}" in attributes
    assert merchant.api_key not in cookie


async def test_each_sign_in_form_renews_the_nonce_cookie_it_is_bound_to(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    """A form shown near the end of the nonce cookie's hour must not be refused as CSRF when it
    is sent: showing it starts the cookie's hour again, with the same nonce (an older tab's form
    stays good)."""
    first = await dashboard.get("/dashboard/sign-in")
    again = await dashboard.get("/dashboard/sign-in")
    cookies = [
        next(value for value in page.headers.get_list("set-cookie") if value.startswith(SIGN_IN))
        for page in (first, again)
    ]
    assert cookies[0] == cookies[1]
    assert f"max-age={SIGN_IN_NONCE_SECONDS}" in cookies[1].lower()
    token = form_fields(first.text)["csrf_token"]
    signed_in = await dashboard.post(
        "/dashboard/sign-in", data={"csrf_token": token, "api_key": merchant.api_key}
    )
    assert signed_in.status_code == 303


async def test_an_expired_or_tampered_session_goes_back_to_sign_in(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> None:
    await sign_in(dashboard, merchant.api_key)
    assert (await dashboard.get("/dashboard/payouts")).status_code == 200

    token, signature = dashboard.cookies[MERCHANT_COOKIE].rsplit(".", 1)
    dashboard.cookies.set(MERCHANT_COOKIE, f"{token}.{signature[::-1]}", path="/dashboard")
    tampered = await dashboard.get("/dashboard/payouts")
    assert tampered.status_code == 303 and tampered.headers["location"] == SIGN_IN_FOR_PAYOUTS

    dashboard.cookies.set(MERCHANT_COOKIE, f"{token}.{signature}", path="/dashboard")
    async with transaction(sessions) as session:
        await session.execute(
            update(dashboard_sessions)
            .where(dashboard_sessions.c.merchant_id == merchant.merchant_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await dashboard.get("/dashboard/payouts")
    assert expired.status_code == 303 and expired.headers["location"] == SIGN_IN_FOR_PAYOUTS


async def test_signing_in_from_a_link_goes_on_to_the_page_it_named(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    """A page opened from a link while signed out (an alert, a colleague's message): once signed
    in, the merchant landed on the payouts list, the page asked for lost (the journeys review).
    A page that is not the dashboard's is never gone on to."""
    asked = "/dashboard/payouts?status=FAILED"
    away = await dashboard.get(asked)
    assert away.status_code == 303
    sign_in_page = await dashboard.get(away.headers["location"])
    fields = form_fields(sign_in_page.text)
    assert fields["next"] == asked

    signed = await dashboard.post("/dashboard/sign-in", data={**fields, "api_key": "mpk_test_x"})
    assert signed.status_code == 401 and form_fields(signed.text)["next"] == asked  # kept
    signed = await dashboard.post(
        "/dashboard/sign-in", data={**fields, "api_key": merchant.api_key}
    )
    assert (signed.status_code, signed.headers["location"]) == (303, asked)

    elsewhere = await dashboard.get("/dashboard/sign-in?next=https://example.com/dashboard/")
    assert elsewhere.headers["location"] == "/dashboard/payouts"  # signed in: gone on, home


async def test_signing_in_as_another_merchant_ends_the_browsers_first_session(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> None:
    """From a second tab's sign-in form, shown before the first sign-in. The first session
    stayed good until it expired, for whoever had copied its cookie."""
    other = await new_merchant(sessions, "Second Traders", None)
    form = {
        "csrf_token": form_fields((await dashboard.get("/dashboard/sign-in")).text)["csrf_token"]
    }
    await dashboard.post("/dashboard/sign-in", data=form | {"api_key": merchant.api_key})
    first_cookie = dashboard.cookies[MERCHANT_COOKIE]

    again = await dashboard.post("/dashboard/sign-in", data=form | {"api_key": other.api_key})
    assert again.status_code == 303

    async with sessions() as session:
        left = await session.scalar(
            select(func.count())
            .select_from(dashboard_sessions)
            .where(dashboard_sessions.c.merchant_id == merchant.merchant_id)
        )
    assert left == 0
    dashboard.cookies.set(MERCHANT_COOKIE, first_cookie, path="/dashboard")
    replayed = await dashboard.get("/dashboard/payouts")
    assert replayed.status_code == 303 and replayed.headers["location"] == SIGN_IN_FOR_PAYOUTS


async def test_a_seed_that_replaces_the_api_key_ends_the_sessions_opened_with_the_old_one(
    dashboard: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    name = f"Seeded {uuid.uuid4().hex[:8]}"
    merchant = await new_merchant(sessions, name, None)
    await sign_in(dashboard, merchant.api_key)
    assert (await dashboard.get("/dashboard/payouts")).status_code == 200

    async def seed(api_key: str) -> None:
        async with transaction(sessions) as session:
            await ensure_demo_merchant(
                session, balance=Decimal(0), webhook_url=None, api_key=api_key, name=name
            )

    await seed(merchant.api_key)  # the same key: nothing to end
    assert (await dashboard.get("/dashboard/payouts")).status_code == 200
    await seed(new_api_key())
    ended = await dashboard.get("/dashboard/payouts")
    assert ended.status_code == 303 and ended.headers["location"] == SIGN_IN_FOR_PAYOUTS


async def test_replacing_the_operator_token_ends_the_operator_sessions_opened_with_the_old_one(
    settings: Settings,
) -> None:
    """As after a leak: PAYOUTS_OPERATOR_TOKEN replaced, and the services restarted."""
    async with client_for(settings.model_copy(update={"operator_token": "the-old-token"})) as old:
        page = await old.get("/dashboard/operations/sign-in")
        signed_in = await old.post(
            "/dashboard/operations/sign-in",
            data={**form_fields(page.text), "operator_token": "the-old-token"},
        )
        assert signed_in.status_code == 303
        assert (await old.get("/dashboard/operations")).status_code == 200
        cookies = old.cookies

    for token, still_open in (("the-old-token", True), ("the-new-token", False)):
        async with client_for(settings.model_copy(update={"operator_token": token})) as client:
            client.cookies = cookies
            answer = await client.get("/dashboard/operations")
        assert (answer.status_code == 200) is still_open, (token, answer.status_code)
        if not still_open:
            assert (
                answer.headers["location"]
                == "/dashboard/operations/sign-in?next=%2Fdashboard%2Foperations"
            )


async def new_payout_form(
    client: httpx.AsyncClient, reference: str, amount: str, account_number: str = "03001230001"
) -> dict[str, Any]:
    """The new-payout form filled in for a JazzCash wallet (ending 0001 unless told)."""
    form: dict[str, Any] = form_fields((await client.get("/dashboard/payouts/new")).text)
    form.update(
        merchant_reference=reference,
        amount=amount,
        dest_type="WALLET",
        wallet_code="JAZZCASH",
        account_number=account_number,
    )
    return form


async def test_a_form_posted_twice_creates_one_payout(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> None:
    """The form's idempotency key is the API's: a double submit replays the first answer."""
    await sign_in(dashboard, merchant.api_key)
    form = await new_payout_form(dashboard, "double-submit-1", "1500.00")
    first, second = [await dashboard.post("/dashboard/payouts/new", data=form) for _ in range(2)]
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Payout)
            .where(Payout.merchant_id == merchant.merchant_id)
        )
    assert count == 1


@pytest.mark.usefixtures("system")  # its processor puts the payout on hold
async def test_a_waiting_payouts_live_page_is_the_same_at_each_poll_and_its_actions_once(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> None:
    """Each render had fresh idempotency keys: the fragment changed at every poll (replacing the
    buttons under the user's click every 2 s), and a click spanning a refresh was sent twice."""
    await sign_in(dashboard, merchant.api_key)
    reference = f"live-{uuid.uuid4().hex[:8]}"
    form = await new_payout_form(dashboard, reference, "1500.00", account_number="03001230005")
    created = await dashboard.post("/dashboard/payouts/new", data=form)
    payout_id = created.headers["location"].split("?")[0].rsplit("/", 1)[-1]

    async def on_hold() -> bool:
        async with sessions() as session:
            payout = await session.get(Payout, payout_id, populate_existing=True)
        return payout is not None and payout.status == "ON_HOLD"

    # Written by hand, ON_HOLD raced the running processor: a payout it had paid out meanwhile
    # was put back on hold, and the ledger no longer balanced for the tests after this one.
    await eventually(on_hold, within=60, what="the 0005 payout on hold")
    fragment = f"/dashboard/payouts/{payout_id}/timeline"

    async def two_polls_alike() -> str | None:
        """Once the pipeline has moved the payout's webhook on, nothing else changes."""
        first, second = [(await dashboard.get(fragment)).text for _ in range(2)]
        return first if first == second else None

    page = await eventually(two_polls_alike, within=10, what="two polls rendering alike")

    assert 'data-live="on"' in page
    simulate = re.search(r'action="[^"]*/simulate">(.*?)</form>', page, re.DOTALL)
    assert simulate is not None
    fields = form_fields(simulate.group(1))
    for _ in range(2):  # a double click
        answer = await dashboard.post(f"/dashboard/payouts/{payout_id}/simulate", data=fields)
        assert answer.status_code == 303, answer.text[:300]
    async with sessions() as session:
        callbacks = await session.scalar(
            select(func.count()).select_from(PspCallback).where(PspCallback.payout_id == payout_id)
        )
    assert callbacks == 1


@pytest.mark.usefixtures("system")  # its processor fails the 0003 payout and holds the 0005 one
async def test_a_refused_action_is_judged_anew_once_its_cause_is_fixed(
    dashboard: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    """Reinitiate's key is derived from the payout as shown (updatedAt), which a top-up does not
    change: the refusal stored under it (422, available balance short) was replayed at every
    click after the top-up, for the key's 24 hours. A refusal wrote nothing; it is judged again."""
    merchant = await new_merchant(sessions, "Refused Traders", None, balance="1000.00")
    failed = await create_payout(dashboard, merchant, amount="1000.00", accountNumber="03001230003")

    async def released() -> bool:
        return (await get_balance(dashboard, merchant))["availableBalance"] == "1000.00"

    await eventually(released, within=60, what="the 0003 payout failed, its hold released")
    await create_payout(dashboard, merchant, amount="1000.00", accountNumber="03001230005")
    await sign_in(dashboard, merchant.api_key)
    page = f"/dashboard/payouts/{failed['id']}"

    def reinitiate_form(html: str) -> dict[str, str]:
        found = re.search(r'action="[^"]*/reinitiate">(.*?)</form>', html, re.DOTALL)
        assert found is not None, html[:500]
        return form_fields(found.group(1))

    form = reinitiate_form((await dashboard.get(page)).text)
    refused = await dashboard.post(f"{page}/reinitiate", data=form)
    assert refused.status_code == 422, refused.status_code
    topped_up = await dashboard.post(
        f"{API}/sandbox/top-up", json={"amount": "1000.00"}, headers=auth(merchant)
    )
    assert topped_up.status_code == 200, topped_up.text

    assert reinitiate_form((await dashboard.get(page)).text) == form  # the same key
    for _ in range(2):  # a click, then a double submit of it: reinitiated once
        answer = await dashboard.post(f"{page}/reinitiate", data=form)
        assert answer.status_code == 303, answer.text[:300]
    assert (await event_types(sessions, failed["id"])).count("payout.reinitiated") == 1


async def test_production_serves_no_dashboard_until_its_secret_is_set(
    settings: Settings, merchant: NewMerchant
) -> None:
    production = in_production(settings)
    async with client_for(production) as client:
        assert (await client.get("/dashboard/sign-in")).status_code == 404
    own_secret = production.model_copy(update={"dashboard_session_secret": "a-secret-of-our-own"})
    async with client_for(own_secret) as client:
        page = await client.get("/dashboard/sign-in")
        assert page.status_code == 200 and "Test mode" not in page.text
        await sign_in(client, merchant.api_key)
        balance = await client.get("/dashboard/balance")
        assert balance.status_code == 200 and "Sandbox top-up" not in balance.text
        form = {**form_fields(balance.text), "amount": "1.00"}
        assert (await client.post("/dashboard/balance/top-up", data=form)).status_code == 404


async def test_the_operations_pages_do_not_exist_without_an_operator_token(
    dashboard: httpx.AsyncClient,
) -> None:
    assert (await dashboard.get("/dashboard/operations")).status_code == 404
    assert (await dashboard.get("/dashboard/operations/sign-in")).status_code == 404


async def test_a_payroll_file_of_1000_rows_over_64_kib_is_previewed(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    await sign_in(dashboard, merchant.api_key)
    form = form_fields((await dashboard.get("/dashboard/payouts/bulk")).text)
    rows = [
        f"big-payroll-{n:04d},{100 + n}.00,WALLET,,JAZZCASH,0300{n:07d},Employee number {n},"
        "Salary for the month of January 2026"
        for n in range(1000)
    ]
    payroll = "\n".join([",".join(COLUMNS), *rows]).encode()
    assert len(payroll) > 64 * 1024
    preview = await dashboard.post(
        "/dashboard/payouts/bulk", data=form, files={"file": ("payroll.csv", payroll, "text/csv")}
    )
    assert preview.status_code == 200, preview.text[:500]
    assert '<li class="tone-ok" data-count="ready"><strong>1000</strong>' in preview.text


async def test_a_payroll_row_repeating_a_reference_names_the_line_it_repeats(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    """The page names rows by their line in the file; the API's "repeats item 0" named a
    number the page never shows (the first row is line 2)."""
    await sign_in(dashboard, merchant.api_key)
    form = form_fields((await dashboard.get("/dashboard/payouts/bulk")).text)
    reference = f"twice-{uuid.uuid4().hex[:8]}"
    references = (reference, f"once-{uuid.uuid4().hex[:8]}", reference)
    rows = [f"{ref},10.00,WALLET,,JAZZCASH,03001234567,," for ref in references]
    payroll = "\n".join([",".join(COLUMNS), *rows]).encode()
    preview = await dashboard.post(
        "/dashboard/payouts/bulk", data=form, files={"file": ("payroll.csv", payroll, "text/csv")}
    )
    row = re.search(r'<tr class="row-invalid" data-line="4">(.*?)</tr>', preview.text, re.S)
    assert row is not None, preview.text[:2000]
    assert "merchantReference repeats line 2" in " ".join(re.sub(r"<[^>]+>", " ", row[1]).split())


async def test_a_payroll_file_over_the_limit_is_refused_with_a_page_not_json(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, settings: Settings
) -> None:
    await sign_in(dashboard, merchant.api_key)
    form = form_fields((await dashboard.get("/dashboard/payouts/bulk")).text)
    payroll = b"x" * (settings.max_batch_body_bytes + 1)
    refused = await dashboard.post(
        "/dashboard/payouts/bulk", data=form, files={"file": ("payroll.csv", payroll, "text/csv")}
    )
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("text/html")
    assert "PAYLOAD_TOO_LARGE" in refused.text and "exceeds 1024 KiB" in refused.text
    assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]
    assert refused.headers["x-request-id"]


async def test_an_attempt_changed_by_webhook_chaos_is_labelled_on_the_payout_page(
    dashboard: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> None:
    await sign_in(dashboard, merchant.api_key)
    form = await new_payout_form(dashboard, "chaos-label-1", "10.00")
    payout_page = (await dashboard.post("/dashboard/payouts/new", data=form)).headers["location"]
    payout_id = payout_page.split("?")[0].rsplit("/", 1)[-1]
    async with transaction(sessions) as session:
        event = await session.scalar(
            select(PayoutEvent)
            .where(PayoutEvent.payout_id == payout_id)
            .order_by(PayoutEvent.created_at)
            .limit(1)
        )
        assert event is not None
        now = utcnow()
        # The running webhook service may have made this event's delivery row already: the
        # row is made here only if it did not, and the attempt is added to whichever it is.
        await session.execute(
            mysql_insert(WebhookDelivery)
            .values(
                id=str(uuid.uuid4()),
                event_id=event.id,
                merchant_id=merchant.merchant_id,
                payout_id=event.payout_id,
                event_type=event.type,
                url="https://merchant.example/hooks",
                status="RETRYING",
                attempts=1,
                created_at=now,
                updated_at=now,
            )
            .on_duplicate_key_update(event_id=event.id)
        )
        delivery_id = await session.scalar(
            select(WebhookDelivery.id).where(WebhookDelivery.event_id == event.id)
        )
        assert delivery_id is not None
        session.add(
            WebhookAttempt(
                delivery_id=delivery_id,
                attempt_number=99,
                url="https://merchant.example/hooks",
                status_code=400,
                latency_ms=3,
                error="HTTP 400",
                chaos="stale_timestamp",
                created_at=now,
            )
        )

    page = (await dashboard.get(payout_page)).text

    assert "chaos: stale_timestamp" in page
    assert "a 10-minute-old timestamp" in page


async def test_the_dashboard_counts_against_the_merchants_request_rate(
    settings: Settings, merchant: NewMerchant
) -> None:
    """Its pages and actions call the API's services in-process, past the API's count: a
    script holding a session cookie had no limit where the API has one (production's default)."""
    async with client_for(settings.model_copy(update={"rate_limit_per_second": 2})) as client:
        assert (await sign_in(client, merchant.api_key)).status_code == 303
        answers = [(await client.get("/dashboard/payouts")).status_code for _ in range(8)]
    assert 200 in answers and 429 in answers, answers


async def test_the_reference_filter_is_judged_as_the_api_judges_it(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    """The API refuses a merchantReference over 64 characters; the page passed any length on."""
    await sign_in(dashboard, merchant.api_key)
    page = await dashboard.get("/dashboard/payouts", params={"reference": "r" * 65})
    assert page.status_code == 400
    assert "reference" in page.text and "at most 64 characters" in page.text
    assert (await dashboard.get("/dashboard/payouts", params={"reference": "r" * 64})).is_success


async def test_old_links_past_the_end_of_a_list_show_its_end_not_an_error(
    dashboard: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    """A balance page past the last one said "Page 99999 of 1" over an empty table, and a
    request-log cursor whose call had left the 7-day log was a 400 page (the journeys review)."""
    await sign_in(dashboard, merchant.api_key)

    balance = await dashboard.get("/dashboard/balance", params={"page": 99999})
    assert balance.status_code == 200
    assert "99999" not in balance.text and "TOPUP" in balance.text

    sandbox = await dashboard.get("/dashboard/sandbox", params={"startingAfter": 424242})
    assert sandbox.status_code == 200
