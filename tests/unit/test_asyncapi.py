"""The AsyncAPI document: published as committed, true to what the services consume, and
complete about the topology and the headers."""

from pathlib import Path
from typing import Any

import yaml
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from contracts.asyncapi import DEPLOYED_VHOST, asyncapi_yaml, documentation_broker
from contracts.domain.statuses import LEGACY_EVENT_NAMES
from contracts.settings import Settings
from contracts.topology import EXCHANGES, WEBHOOK_PARKING_LOT, all_work_queues
from processor_service.app import create_processor
from webhook_service.app import create_webhook_app

COMMITTED = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"


def test_the_committed_document_is_what_make_docs_generates() -> None:
    assert COMMITTED.read_text() == asyncapi_yaml(), "run `make docs` and commit the result"


def test_every_documented_queue_and_message_is_what_a_service_consumes() -> None:
    settings = Settings()
    processor = create_processor(settings).broker
    webhooks = create_webhook_app(settings).broker
    assert isinstance(processor, RabbitBroker) and isinstance(webhooks, RabbitBroker)
    documented = _queues_and_payloads(documentation_broker(len(settings.webhook_retry_ladder)))

    assert documented == _queues_and_payloads(processor) | _queues_and_payloads(webhooks)


def _queues_and_payloads(broker: RabbitBroker) -> set[tuple[str, str]]:
    document: dict[str, Any] = yaml.safe_load(AsyncAPI(broker).to_specification().to_yaml())
    messages = document["components"]["messages"]
    pairs = set()
    for channel in document["channels"].values():
        for reference in channel["messages"].values():
            message = messages[reference["$ref"].rsplit("/", 1)[-1]]
            pairs.add((channel["address"], message["payload"]["$ref"].rsplit("/", 1)[-1]))
    return pairs


def test_every_queue_and_exchange_of_the_topology_is_a_channel_of_its_kind() -> None:
    """Only the consumed work queues were channels: their waiting and dead-letter queues, the
    parking lot and the exchanges were prose or nothing. An AMQP 0.3.0 channel binding is either
    a queue (`is: queue`, `queue`) or an exchange's routing key (`is: routingKey`, `exchange`)."""
    document = yaml.safe_load(asyncapi_yaml())
    queues = all_work_queues(len(Settings().webhook_retry_ladder))
    kinds = {}
    for name, channel in document["channels"].items():
        binding = channel["bindings"]["amqp"]
        [target] = {"queue", "exchange"} & set(binding)
        assert binding["is"] == {"queue": "queue", "exchange": "routingKey"}[target], name
        assert binding[target]["vhost"] == DEPLOYED_VHOST and binding[target]["durable"], name
        kinds[binding[target]["name"]] = binding[target].get("type", "queue")
    assert {name: kinds.pop(name) for name in EXCHANGES} == {
        name: kind.value for name, kind in EXCHANGES.items()
    }
    expected = {WEBHOOK_PARKING_LOT}
    for queue in queues:
        expected |= {queue.name, queue.dead_letter_queue, *queue.waiting_queues()}
    assert set(kinds) == expected


def test_every_message_documents_its_headers_and_no_correlation_header() -> None:
    """FastStream's `correlationId` pointed to a `correlation_id` header no message carries (it
    is an AMQP property, which no runtime expression addresses); and no message had headers."""
    document = yaml.safe_load(asyncapi_yaml())
    for message in document["components"]["messages"].values():
        assert "correlationId" not in message and "correlation_id" in message["description"]
        headers = message["headers"]
        assert headers["type"] == "object" and set(headers["required"]) <= set(
            headers["properties"]
        )
        assert (
            headers["properties"]["x-schema"]["const"] == message["payload"]["$ref"].split("/")[-1]
        )
    event = document["components"]["schemas"]["PayoutStatusChanged"]["properties"]["event"]
    assert event == {"enum": list(LEGACY_EVENT_NAMES), "title": "Event", "type": "string"}
