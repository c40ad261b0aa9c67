"""What operators and newcomers see besides the API itself: metrics and offline docs."""

import re

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import MerchantFactory
from tests.support.api_helpers import auth

CDN = re.compile(r"https?://(?!127\.0\.0\.1|localhost)[^\s\"']+\.(js|css)")


async def test_metrics_count_requests_by_route_template_and_status(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    missing = "00000000-0000-4000-8000-000000000000"
    series = {"method": "GET", "route": "/api/v1/payouts/{payout_id}", "status": "404"}
    before = REGISTRY.get_sample_value("payouts_api_requests_total", series) or 0.0

    await api_client.get(f"/api/v1/payouts/{missing}", headers={"X-API-KEY": merchant.api_key})

    # Counted once, under the route's template (the registry is shared by every test of this
    # process: the count before is not necessarily 0).
    assert REGISTRY.get_sample_value("payouts_api_requests_total", series) == before + 1
    metrics = (await api_client.get("/metrics")).text
    assert "payouts_api_request_duration_seconds_bucket" in metrics
    assert missing not in metrics  # label by template, not by id: bounded cardinality


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"X-Sandbox-Fault": "status=500"}, "500"), ({"X-Request-ID": "two words"}, "400")],
)
async def test_an_answer_a_middleware_gave_is_counted_under_the_route_it_hit(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    headers: dict[str, str],
    status: str,
) -> None:
    """Answered before the routing (an injected fault, a refused request id): counted under
    `<unmatched>`, which an alarm on the payouts route missed."""
    merchant = await make_merchant()
    series = {"method": "POST", "route": "/api/v1/payouts", "status": status}
    before = REGISTRY.get_sample_value("payouts_api_requests_total", series) or 0.0

    answer = await api_client.post(
        "/api/v1/payouts", json={}, headers={**auth(merchant), **headers}
    )

    assert str(answer.status_code) == status
    assert REGISTRY.get_sample_value("payouts_api_requests_total", series) == before + 1


async def test_swagger_and_redoc_pages_load_their_assets_from_this_server(
    api_client: httpx.AsyncClient,
) -> None:
    for page in ("/docs", "/redoc"):
        html = (await api_client.get(page)).text
        assert CDN.search(html) is None, f"{page} loads assets from a CDN"
        assets = re.findall(r"(/static-offline-docs/[\w.-]+\.(?:js|css))", html)
        assert assets, html
        for asset in assets:
            response = await api_client.get(asset)
            assert response.status_code == 200
            assert len(response.content) > 10_000


async def test_the_asyncapi_document_of_every_message_is_served(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get("/asyncapi")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    for name in (
        "ProcessPayout",
        "ApplyPspOutcome",
        "PayoutStatusChanged",
        "webhooks.payout-events",
    ):
        assert name in response.text
