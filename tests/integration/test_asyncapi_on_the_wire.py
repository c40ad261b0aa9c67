"""docs/asyncapi.yaml against the messages really published: each operation's AMQP binding `cc`
(the routing keys its messages are published with) holds every key the pipeline publishes them
under. It named the queue, which no message travels with."""

from pathlib import Path

import httpx
import yaml

from contracts.settings import Settings
from contracts.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.api_helpers import API, auth, payout_body, send_ipn
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay

ASYNCAPI = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


async def test_every_published_routing_key_is_a_documented_cc(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    rabbit: RabbitClient,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    async with running_processor_and_relay(settings):  # which declares the exchanges first
        probes = {
            "processor.payout-commands": await rabbit.bind_probe(
                COMMANDS_EXCHANGE, "payout.process"
            ),
            "processor.psp-outcomes": await rabbit.bind_probe(
                COMMANDS_EXCHANGE, "payout.apply-psp-outcome"
            ),
            "webhooks.payout-events": await rabbit.bind_probe(EVENTS_EXCHANGE, "payout.*"),
        }
        created = await api_client.post(  # 0004: pending at the PSP until an IPN settles it
            f"{API}/payouts", json=payout_body(accountNumber="03001230004"), headers=auth(merchant)
        )
        payout_id = created.json()["data"]["id"]

        async def pending_at_the_psp() -> bool:
            answer = await api_client.get(f"{API}/payouts/{payout_id}", headers=auth(merchant, ""))
            return answer.json()["data"]["pspReference"] is not None

        await eventually(pending_at_the_psp, within=15, what="0004 pending at the PSP")
        ipn = await send_ipn(api_client, settings.psp_secret, payout_id, "SUCCESS")
        assert ipn.status_code == 200, ipn.text

        operations = yaml.safe_load(ASYNCAPI.read_text())["operations"]
        for operation, probe in probes.items():

            async def published(probe: str = probe) -> list[str]:
                return [str(message.routing_key) for message in await rabbit.take(probe)]

            keys = set(await eventually(published, within=15, what=f"a message of {operation}"))
            assert keys <= set(operations[operation]["bindings"]["amqp"]["cc"]), operation
