"""Auth: X-API-KEY on every merchant route, 401 codes, inactive merchants, no existence leak."""

import httpx
import pytest
from sqlalchemy import update

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Merchant
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, assert_error, create_payout, new_key, payout_body
from tests.support.polling import eventually

PAYOUT_ID = "00000000-0000-4000-8000-000000000000"

MERCHANT_ROUTES = [
    ("GET", "/payouts"),
    ("POST", "/payouts"),
    ("GET", f"/payouts/{PAYOUT_ID}"),
    ("POST", f"/payouts/{PAYOUT_ID}/reinitiate"),
    ("GET", "/balance"),
    ("GET", "/balance/history"),
    ("GET", "/directory"),
    ("POST", "/verify-account"),
    ("POST", f"/sandbox/payouts/{PAYOUT_ID}/simulate"),
]


@pytest.mark.parametrize(("method", "path"), MERCHANT_ROUTES)
async def test_missing_api_key_is_401_missing_api_key(
    api_client: httpx.AsyncClient, method: str, path: str
) -> None:
    # No idempotency key and a malformed body either: auth is checked first.
    response = await api_client.request(
        method, f"{API}{path}", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 401, "MISSING_API_KEY")


@pytest.mark.parametrize(("method", "path"), MERCHANT_ROUTES)
async def test_unknown_api_key_is_401_invalid_api_key(
    api_client: httpx.AsyncClient, method: str, path: str
) -> None:
    headers = {"X-API-KEY": "mpk_test_" + "x" * 43, "X-IDEMPOTENCY-KEY": new_key()}
    response = await api_client.request(method, f"{API}{path}", headers=headers, json={})
    assert_error(response, 401, "INVALID_API_KEY")


async def test_empty_api_key_counts_as_missing(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get(f"{API}/balance", headers={"X-API-KEY": ""})
    assert_error(response, 401, "MISSING_API_KEY")


async def test_a_deactivated_key_is_401_within_the_key_cache_time(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    headers = {"X-API-KEY": merchant.api_key}
    assert (await api_client.get(f"{API}/balance", headers=headers)).status_code == 200
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == merchant.merchant_id).values(is_active=False)
        )

    async def refused() -> httpx.Response | None:
        response = await api_client.get(f"{API}/balance", headers=headers)
        return response if response.status_code == 401 else None

    assert_error(
        # The cache time, and room for a slow host: a key remembered for good never gets here.
        await eventually(refused, within=settings.api_key_cache_seconds + 10),
        401,
        "INVALID_API_KEY",
    )
    created = await api_client.post(
        f"{API}/payouts",
        json=payout_body(),
        headers={**headers, "X-IDEMPOTENCY-KEY": new_key()},
    )
    assert_error(created, 401, "INVALID_API_KEY")


async def test_another_merchants_payout_is_404_like_a_missing_one(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    owner, other = await make_merchant(), await make_merchant()
    payout = await create_payout(api_client, owner)
    other_headers = {"X-API-KEY": other.api_key}

    foreign = await api_client.get(f"{API}/payouts/{payout['id']}", headers=other_headers)
    missing = await api_client.get(f"{API}/payouts/{PAYOUT_ID}", headers=other_headers)
    foreign_error = assert_error(foreign, 404, "NOT_FOUND")
    missing_error = assert_error(missing, 404, "NOT_FOUND")
    assert foreign_error["message"] == missing_error["message"]

    for path in (
        f"/payouts/{payout['id']}/reinitiate",
        f"/sandbox/payouts/{payout['id']}/simulate",
    ):
        response = await api_client.post(
            f"{API}{path}",
            json={"outcome": "SUCCESS"},
            headers={**other_headers, "X-IDEMPOTENCY-KEY": new_key()},
        )
        assert_error(response, 404, "NOT_FOUND")

    listed = await api_client.get(f"{API}/payouts", headers=other_headers)
    assert listed.json()["data"]["payouts"] == []
    by_reference = await api_client.get(
        f"{API}/payouts",
        params={"merchantReference": payout["merchantReference"]},
        headers=other_headers,
    )
    assert by_reference.json()["data"]["payouts"] == []
    assert (
        await api_client.get(f"{API}/payouts/{payout['id']}", headers={"X-API-KEY": owner.api_key})
    ).status_code == 200


@pytest.mark.parametrize("path", [f"{API}/health", f"{API}/ready", "/docs", "/openapi.json"])
async def test_public_routes_need_no_key(api_client: httpx.AsyncClient, path: str) -> None:
    response = await api_client.get(path)
    assert response.status_code == 200, response.text


async def test_an_api_key_given_twice_is_401_whichever_comes_first(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    # Two keys in one request: the answer must not depend on which one a server reads first.
    first, second = await make_merchant(), await make_merchant()
    for keys in ((first.api_key, second.api_key), (first.api_key, first.api_key)):
        headers = [("X-API-KEY", key) for key in keys]
        response = await api_client.get(f"{API}/balance", headers=headers)
        error = assert_error(response, 401, "INVALID_API_KEY")
        assert "more than once" in error["message"]
