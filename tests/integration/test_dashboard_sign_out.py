"""Signing out of the dashboard ends the session whatever else the merchant's requests meet:
it was refused while the merchant was inactive (a live merchant was asked for) and while it was
over its request rate (the rate was counted first), and in both cases the session the user had
signed out of worked again afterwards."""

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import update

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Merchant
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.dashboard_client import signed_in
from tests.support.polling import eventually


async def set_active(sessions: SessionFactory, merchant_id: str, *, active: bool) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == merchant_id).values(is_active=active)
        )


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings.model_copy(update={"rate_limit_per_second": 2})) as client:
        yield client


async def test_a_sign_out_while_the_merchant_is_inactive_ends_the_session(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    csrf = await signed_in(dashboard, merchant)
    cookies = dict(dashboard.cookies)
    await set_active(sessions, merchant.merchant_id, active=False)

    signed_out = await dashboard.post("/dashboard/sign-out", data={"csrf_token": csrf})

    assert signed_out.status_code == 303
    assert signed_out.headers["location"].endswith("/dashboard/sign-in")
    await set_active(sessions, merchant.merchant_id, active=True)
    again = await dashboard.get("/dashboard/payouts", cookies=cookies)
    assert again.status_code == 303, "the session signed out of works again"


async def test_a_sign_out_over_the_request_rate_ends_the_session(
    dashboard: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    csrf = await signed_in(dashboard, merchant)
    cookies = dict(dashboard.cookies)
    for _ in range(5):
        await dashboard.get("/dashboard/payouts")

    signed_out = await dashboard.post("/dashboard/sign-out", data={"csrf_token": csrf})

    assert signed_out.status_code == 303

    async def answer_once_the_rate_allows() -> int | None:
        again = await dashboard.get("/dashboard/payouts", cookies=cookies)
        return None if again.status_code == 429 else again.status_code

    status = await eventually(answer_once_the_rate_allows, what="an answer within the rate")
    assert status == 303, "the session signed out of works again"


async def test_a_sign_out_without_its_csrf_token_is_refused_and_ends_nothing(
    settings: Settings, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    async with in_process_api(settings) as dashboard:
        await signed_in(dashboard, merchant)

        refused = await dashboard.post("/dashboard/sign-out", data={"csrf_token": "forged"})

        assert refused.status_code == 403
        assert (await dashboard.get("/dashboard/payouts")).status_code == 200
