"""The AsyncAPI document: published as committed, and true to what the services consume."""

from pathlib import Path
from typing import Any

import yaml
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from contracts.asyncapi import asyncapi_yaml, documentation_broker
from contracts.settings import Settings
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
