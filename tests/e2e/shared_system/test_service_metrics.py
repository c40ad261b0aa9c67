"""Every service answers /metrics with its business metrics after real work went through."""

import httpx

from tests.conftest import MerchantFactory
from tests.support.api_helpers import auth, payout_body
from tests.support.polling import eventually
from tests.support.system import PROCESSOR, RELAY, WEBHOOKS, RunningSystem
from tests.support.webhook_receiver import WebhookReceiver


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(url)).text


async def test_each_service_exports_its_business_metrics(
    system: RunningSystem, http: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    async with WebhookReceiver() as receiver:
        merchant = await make_merchant(webhook_url=receiver.url)
        response = await http.post("/payouts", json=payout_body(), headers=auth(merchant))
        assert response.status_code == 201
        await receiver.wait_for_requests(3, within=30)  # created, processing, succeeded

    ports = system.metrics_ports
    expected = {
        RELAY.name: ("payouts_outbox_published_total", "payouts_outbox_lag_seconds"),
        PROCESSOR.name: ('payouts_status_changes_total{status="SUCCESS"}', "faststream_"),
        WEBHOOKS.name: ('payouts_webhook_outcomes_total{outcome="delivered"}', "faststream_"),
    }

    async def all_exported() -> bool:
        for service, names in expected.items():
            exported = await scrape(f"http://127.0.0.1:{ports[service]}/metrics")
            if not all(name in exported for name in names):
                return False
        return True

    await eventually(all_exported, within=10, what="business metrics on every service")
    api_metrics = await scrape(f"{system.base_url}/metrics")
    assert 'route="/api/v1/payouts",status="201"' in api_metrics
