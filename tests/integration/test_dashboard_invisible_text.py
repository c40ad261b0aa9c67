"""The dashboard shows bodies others wrote (a call in the request log) with their invisible
characters escaped: none changes how the page reads."""

import uuid

import httpx
from sqlalchemy import select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import ApiRequestRecord
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, payout_body
from tests.support.dashboard_client import signed_in
from tests.support.polling import eventually


async def test_a_refused_override_in_the_request_log_is_shown_escaped(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The API refuses U+202E RIGHT-TO-LEFT OVERRIDE for changing how text reads; the request log
    kept the refused body and the sandbox page showed it as is, in a one-line <pre>: the
    `"amount":"1500.00"` after it read `"00.0051":"tnuoma"` (text review)."""
    merchant = await make_merchant()
    answer = await api_client.post(
        f"{API}/payouts",
        json=payout_body(accountTitle="Ali\u202eKhan", amount="1500.00"),
        headers=auth(merchant),
    )
    assert answer.status_code == 400, answer.text

    page = await _request_log_page(api_client, sessions, merchant, answer)
    assert "\u202e" not in page
    assert "Ali\\u202eKhan" in page


async def test_an_override_in_a_request_path_is_shown_escaped_in_the_request_log(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The recorder keeps the path percent-decoded: a U+202E in it turned the rest of its line
    (the request id, the idempotency key) backwards (diff review)."""
    merchant = await make_merchant()
    answer = await api_client.get(
        f"{API}/payouts/%E2%80%AEabc-{uuid.uuid4().hex[:6]}", headers=auth(merchant, "")
    )

    page = await _request_log_page(api_client, sessions, merchant, answer)
    assert "\u202e" not in page
    assert "/payouts/\\u202eabc-" in page


async def _request_log_page(
    client: httpx.AsyncClient, sessions: SessionFactory, merchant: NewMerchant, call: httpx.Response
) -> str:
    """The sandbox page, once `call` is in its request log."""
    request_id = call.headers["x-request-id"]

    async def logged() -> bool:
        async with sessions() as session:
            found = await session.scalar(
                select(ApiRequestRecord.id).where(ApiRequestRecord.request_id == request_id)
            )
        return found is not None

    await eventually(logged, within=10, what="the call in the request log")
    client.cookies.clear()  # signed in as this merchant, not an earlier test's
    await signed_in(client, merchant)
    page = await client.get("/dashboard/sandbox")
    assert page.status_code == 200 and request_id in page.text
    return page.text
