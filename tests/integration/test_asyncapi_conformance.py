"""docs/asyncapi.yaml against the system: equal to what the generator writes and the API serves;
complete about the queues, exchanges and headers messages really travel through; and the messages
the pipeline really publishes (captured by probe queues bound beside the work queues) valid
against it: routing key documented, body and headers valid against their documented schemas, and
the properties its info promises. From a review of the document against the wire."""

from typing import Any

import httpx
import orjson
import pytest
import yaml
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import select

from api_service.app import create_app
from contracts.asyncapi import asyncapi_yaml
from contracts.db.engine import SessionFactory
from contracts.db.models import OutboxMessage
from contracts.domain.statuses import LEGACY_EVENT_NAMES
from contracts.settings import Settings
from contracts.topology import (
    BULK_EVENTS_EXCHANGE,
    BUSY_WAITS_HEADER,
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    EXCHANGES,
    OUTAGE_COUNT_HEADER,
    OWN_EVENT_HEADER,
    PARKED_HEADER,
    PAYOUT_COMMANDS,
    RETRY_CLOCK_OFFSET_HEADER,
    RETRY_DUE_HEADER,
    RETRY_RETURN_EXCHANGE,
    WEBHOOK_PARKING_LOT,
    all_work_queues,
)
from contracts.webhooks import RESEND_GENERATION_HEADER
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, dead_letters, publish_command
from tests.support.api_helpers import API, auth, payout_body, send_ipn
from tests.support.asyncapi import (
    COMMITTED,
    committed_document,
    messages_of_key,
    payload_name,
    schema_errors,
)
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay

Captured = list[tuple[str, AbstractIncomingMessage]]  # (probe's exchange, message)


def _message(doc: dict[str, Any], reference: dict[str, str]) -> dict[str, Any]:
    message: dict[str, Any] = doc["components"]["messages"][reference["$ref"].rsplit("/", 1)[-1]]
    return message


def test_the_committed_file_is_what_the_generator_writes_now() -> None:
    assert COMMITTED.read_text() == asyncapi_yaml()


async def test_the_api_serves_the_committed_document(api_client: httpx.AsyncClient) -> None:
    served = await api_client.get("/asyncapi")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/yaml")
    assert served.text == COMMITTED.read_text()
    assert yaml.safe_load(served.text)["asyncapi"] == "3.0.0"


async def test_a_real_dead_letter_lands_in_a_documented_channel_with_documented_headers(
    rabbit: RabbitClient, settings: Settings
) -> None:
    """A command the processor cannot read is republished (contracts/redelivery.py:dead_letter)
    to processor.payout-commands.dead with x-payouts-last-error / x-payouts-retry-count: neither
    that channel nor those headers were in the document, nor webhooks.parking-lot, though its
    info says it documents every message that crosses RabbitMQ."""
    async with running_processor_and_relay(settings):
        message_id = await publish_command(rabbit, orjson.dumps({"schemaVersion": 1}))
        letters = await dead_letters(rabbit, {message_id})
    doc = committed_document()
    channels = doc["channels"]
    assert WEBHOOK_PARKING_LOT in channels
    channel = channels[PAYOUT_COMMANDS.dead_letter_queue]
    assert channel["bindings"]["amqp"]["queue"]["name"] == PAYOUT_COMMANDS.dead_letter_queue
    [reference] = channel["messages"].values()
    documented = _message(doc, reference)["headers"]["properties"]
    published = [name for name in letters[message_id].headers or {} if name.startswith("x-")]
    assert published and set(published) <= set(documented), (published, sorted(documented))


def test_every_header_the_publishers_set_is_documented_with_its_type() -> None:
    """Headers besides x-payout-id/x-merchant-id/x-schema that change what a consumer does with
    the message: a resend's generation (api_service/webhooks/service.py), a waiting retry's due
    time and clock offset (contracts/waiting_retries.py), the relay's own-event mark
    (processor_service/stalled_deliveries.py), the parked and busy-wait marks
    (webhook_service/app.py), the outage count (processor_service/consumer.py). The message
    objects had no `headers` schema at all, and the info text named only the three."""
    doc = committed_document()
    messages = doc["components"]["messages"]
    without_headers = [name for name, message in messages.items() if "headers" not in message]
    assert not without_headers
    webhook = {RESEND_GENERATION_HEADER, RETRY_DUE_HEADER, RETRY_CLOCK_OFFSET_HEADER}
    webhook |= {OWN_EVENT_HEADER, BUSY_WAITS_HEADER, PARKED_HEADER}
    for name, message in messages.items():
        headers = message["headers"]["properties"]
        expected = (
            webhook if payload_name(message) == "PayoutStatusChanged" else {OUTAGE_COUNT_HEADER}
        )
        assert expected <= set(headers), (name, expected - set(headers))
        untyped = [
            key for key, schema in headers.items() if not {"type", "description"} <= set(schema)
        ]
        assert not untyped, (name, untyped)


def test_the_exchanges_messages_are_published_to_are_documented_as_such() -> None:
    """Publishers send to payouts.commands (direct), payouts.events and payouts.events.bulk
    (topic); a third party binds its own queue to them. Every channel was `is: queue`: no channel
    binding named an exchange or its type, and the type of payouts.events was stated nowhere."""
    doc = committed_document()
    exchanges = {
        binding["exchange"]["name"]: binding
        for binding in (channel["bindings"]["amqp"] for channel in doc["channels"].values())
        if binding["is"] == "routingKey"
    }
    assert set(exchanges) == set(EXCHANGES)
    for name, kind in EXCHANGES.items():
        binding = exchanges[name]
        assert "queue" not in binding
        assert binding["exchange"]["type"] == kind.value and binding["exchange"]["durable"]
    keys = doc["channels"][COMMANDS_EXCHANGE]["parameters"]["routingKey"]["enum"]
    queues = all_work_queues(1)
    bound = [
        key for queue in queues if queue.exchange == COMMANDS_EXCHANGE for key in queue.routing_keys
    ]
    assert keys == bound


def test_the_legacy_event_field_is_documented_as_the_openapi_documents_it() -> None:
    """CONTRACT.md: `event` is PAYOUT_CREATED|PAYOUT_UPDATED|PAYOUT_REINITIATED. The OpenAPI's
    PayoutEventView (which the AsyncAPI text points to) has that enum; the AsyncAPI's
    PayoutStatusChanged.event was a bare string (contracts/messages.py)."""
    openapi = create_app(Settings()).openapi()["components"]["schemas"]["PayoutEventView"]
    asyncapi = committed_document()["components"]["schemas"]["PayoutStatusChanged"]
    documented = asyncapi["properties"]["event"]
    assert documented["enum"] == openapi["properties"]["event"]["enum"] == list(LEGACY_EVENT_NAMES)


async def _bind_probes(rabbit: RabbitClient, settings: Settings) -> dict[str, str]:
    probes = {
        EVENTS_EXCHANGE: await rabbit.bind_probe(EVENTS_EXCHANGE, "#"),
        BULK_EVENTS_EXCHANGE: await rabbit.bind_probe(BULK_EVENTS_EXCHANGE, "#"),
    }
    commands = await rabbit.bind_probe(COMMANDS_EXCHANGE, "payout.process")
    probe = await rabbit.channel.get_queue(commands, ensure=False)
    for key in ("payout.process.bulk", "payout.apply-psp-outcome"):
        await probe.bind(COMMANDS_EXCHANGE, routing_key=key)
    probes[COMMANDS_EXCHANGE] = commands
    returning = await rabbit.probe_queue()
    probe = await rabbit.channel.get_queue(returning, ensure=False)
    for queue in all_work_queues(len(settings.webhook_retry_ladder)):
        await probe.bind(RETRY_RETURN_EXCHANGE, routing_key=queue.name)
    probes[RETRY_RETURN_EXCHANGE] = returning
    return probes


async def _post(client: httpx.AsyncClient, merchant: Any, path: str, body: Any) -> dict[str, Any]:
    answer = await client.post(f"{API}{path}", json=body, headers=auth(merchant))
    assert answer.status_code in (200, 201, 202), answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


async def _status(client: httpx.AsyncClient, merchant: Any, payout_id: str) -> dict[str, Any]:
    answer = await client.get(f"{API}/payouts/{payout_id}", headers=auth(merchant, ""))
    data: dict[str, Any] = answer.json()["data"]
    return data


@pytest.fixture
async def captured(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    rabbit: RabbitClient,
    settings: Settings,
) -> Captured:
    """Every scenario of the contract driven once; every message they published, captured."""
    rich = await make_merchant()
    poor = await make_merchant(balance="50.00")
    taken: Captured = []
    async with running_processor_and_relay(settings):
        probes = await _bind_probes(rabbit, settings)
        ids = {}
        for suffix in ("0001", "0002", "0003", "0004", "0005"):
            made = await _post(
                api_client, rich, "/payouts", payout_body(accountNumber=f"0300123{suffix}")
            )
            ids[suffix] = made["id"]
        review = await _post(api_client, rich, "/payouts", payout_body(amount="150000.00"))
        queued = await _post(
            api_client, poor, "/payouts", payout_body(amount="100.00", queueIfLowBalance=True)
        )
        assert queued["status"] == "QUEUED"
        await _post(
            api_client,
            rich,
            "/payouts/batch",
            {"payouts": [payout_body(accountNumber="03001230001") for _ in range(2)]},
        )

        async def settled(suffix: str, statuses: set[str]) -> bool:
            return (await _status(api_client, rich, ids[suffix]))["status"] in statuses

        await eventually(lambda: settled("0003", {"FAILED"}), within=20, what="0003 failed")
        await _post(api_client, rich, f"/payouts/{ids['0003']}/reinitiate", {})

        async def at_psp() -> bool:
            return (await _status(api_client, rich, ids["0004"]))["pspReference"] is not None

        await eventually(at_psp, within=20, what="0004 pending at the PSP")
        assert (await send_ipn(api_client, settings.psp_secret, ids["0004"], "SUCCESS")).is_success
        await eventually(lambda: settled("0004", {"SUCCESS"}), within=20, what="0004 success")
        assert (await send_ipn(api_client, settings.psp_secret, ids["0004"], "REVERSED")).is_success
        await eventually(lambda: settled("0004", {"REVERSED"}), within=20, what="0004 reversed")
        await eventually(lambda: settled("0002", {"SUCCESS"}), within=30, what="0002 success")
        await eventually(lambda: settled("0005", {"ON_HOLD"}), within=20, what="0005 on hold")
        in_review = await _status(api_client, rich, review["id"])
        await _post(api_client, poor, "/sandbox/top-up", {"amount": "1000.00"})

        seen_types: set[str] = set()
        wanted = {
            "payout.created", "payout.queued", "payout.dequeued", "payout.processing",
            "payout.retrying", "payout.succeeded", "payout.failed", "payout.pending",
            "payout.on_hold", "payout.in_review", "payout.reinitiated", "payout.reversed",
        }  # fmt: skip

        async def everything() -> bool:
            for exchange, probe in probes.items():
                for message in await rabbit.take(probe):
                    taken.append((exchange, message))
                    if exchange in (EVENTS_EXCHANGE, BULK_EVENTS_EXCHANGE):
                        seen_types.add(str(message.routing_key))
            return wanted <= seen_types and any(e == RETRY_RETURN_EXCHANGE for e, _ in taken)

        await eventually(everything, within=30, what=f"every event type ({in_review['status']})")
    return taken


async def test_every_published_body_and_headers_are_valid_against_their_documented_schemas(
    captured: Captured,
) -> None:
    """The bodies, and the headers (the document had no headers schema), each message carries."""
    doc = committed_document()
    keys = messages_of_key(doc)
    problems = []
    for exchange, message in captured:
        key = str(message.routing_key)
        if key not in keys:
            problems.append(f"{exchange} {key}: routing key not documented")
            continue
        body = orjson.loads(message.body)
        # x-death: RabbitMQ's (documented as an array of tables), with times aio-pika decodes
        headers = {k: v for k, v in (message.headers or {}).items() if k != "x-death"}
        for documented in keys[key]:
            where = f"{exchange} {key} {payload_name(documented)}"
            problems += [
                f"{where} body {e}" for e in schema_errors(doc, documented["payload"], body)
            ]
            problems += [
                f"{where} headers {e}" for e in schema_errors(doc, documented["headers"], headers)
            ]
    assert not problems, "\n".join(problems[:20])


async def test_every_published_message_has_the_documented_properties_and_headers(
    captured: Captured,
) -> None:
    doc = committed_document()
    keys = messages_of_key(doc)
    problems = []
    for exchange, message in captured:
        key = str(message.routing_key)
        body = orjson.loads(message.body)
        headers = message.headers or {}
        where = f"{exchange} {key} {message.message_id}"
        if message.content_type != doc["defaultContentType"]:
            problems.append(f"{where}: content_type {message.content_type}")
        if message.delivery_mode != 2:  # persistent
            problems.append(f"{where}: delivery_mode {message.delivery_mode}")
        if not message.message_id:
            problems.append(f"{where}: no message_id")
        if message.timestamp is None:
            problems.append(f"{where}: no timestamp")
        payout_id = body.get("payoutId") or body.get("payout", {}).get("id")
        if headers.get("x-payout-id") != payout_id:
            problems.append(f"{where}: x-payout-id {headers.get('x-payout-id')} != {payout_id}")
        if headers.get("x-merchant-id") != body.get("merchantId"):
            problems.append(f"{where}: x-merchant-id {headers.get('x-merchant-id')}")
        documented = {payload_name(documented) for documented in keys.get(key, [])}
        if {headers.get("x-schema")} != documented:
            problems.append(f"{where}: x-schema {headers.get('x-schema')} vs {documented}")
        if not message.correlation_id:
            problems.append(f"{where}: no correlation_id")
    assert not problems, "\n".join(problems[:20])


async def test_the_document_says_where_the_correlation_id_really_is(captured: Captured) -> None:
    """Each message said `correlationId.location: $message.header#/correlation_id` (FastStream's
    default): a tool following the document read the AMQP headers table, but the relay sets the
    `correlation_id` *property* (processor_service/outbox_relay.py). No AsyncAPI 3 runtime
    expression addresses a property, so no message claims a location; each says so instead."""
    doc = committed_document()
    exchange, message = next((e, m) for e, m in captured if m.correlation_id)
    assert "correlation_id" not in (message.headers or {}), (exchange, message.routing_key)
    for name, documented in doc["components"]["messages"].items():
        assert "correlationId" not in documented, name
        assert "`correlation_id` is the AMQP basic property" in documented["description"], name


async def test_the_legacy_event_field_on_the_wire_is_one_of_the_contracts_names(
    captured: Captured,
) -> None:
    events = [
        orjson.loads(m.body) for e, m in captured if e in (EVENTS_EXCHANGE, BULK_EVENTS_EXCHANGE)
    ]
    assert {event["event"] for event in events} == set(LEGACY_EVENT_NAMES)


async def test_every_destination_the_relay_published_to_is_documented(
    captured: Captured, sessions: SessionFactory
) -> None:
    """The outbox rows the scenarios wrote (and the relay sent): each goes either to an exchange
    under a documented routing key, or through the default exchange straight to a queue, which
    must then be a documented channel. A 0002 payout's delayed retry is published
    (contracts/payout_events.py: process) to `processor.payout-commands.retry`, a queue the
    document named only in prose: no channel."""
    doc = committed_document()
    keys = messages_of_key(doc)
    assert captured
    async with sessions() as session:
        rows = (
            await session.execute(
                select(OutboxMessage.exchange, OutboxMessage.routing_key)
                .where(OutboxMessage.sent_at.is_not(None))
                .distinct()
            )
        ).all()
    assert (
        "",
        PAYOUT_COMMANDS.retry_queue(1),
    ) in {(exchange, key) for exchange, key in rows}
    undocumented = sorted(
        f"{exchange or '(default)'} -> {key}"
        for exchange, key in rows
        if (exchange == "" and key not in doc["channels"]) or (exchange != "" and key not in keys)
    )
    assert not undocumented, undocumented
