"""The AsyncAPI document of every message that crosses RabbitMQ, built from the contracts alone
(no service is imported, so the API can serve it): one documented subscriber per work queue with
the message model it accepts. tests/unit/test_asyncapi.py keeps it equal to what the services
really consume."""

import json
from functools import cache
from typing import Any

import yaml
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts.broker import consumed_queue
from contracts.domain.statuses import EventType
from contracts.messages import ApplyPspOutcome, PayoutStatusChanged, ProcessPayout
from contracts.topology import (
    BULK_PAYOUT_COMMANDS,
    PAYOUT_COMMANDS,
    PSP_OUTCOMES,
    webhook_events_queue,
)

TITLE = "Payout sandbox messages"
VERSION = "1.0.0"
DESCRIPTION = (
    "Every message is published from the transactional outbox: persistent, confirmed, "
    "`message_id` = outbox row id, `correlation_id` = the originating request id "
    "(`scheduled-action-<id>` for a step the sandbox clock applied), headers "
    "`x-payout-id`, `x-merchant-id`, `x-schema`. Bodies are camelCase JSON with `schemaVersion`; "
    "money is a string with 2 decimals."
)
MESSAGE_MODELS: tuple[type[BaseModel], ...] = (ProcessPayout, ApplyPspOutcome, PayoutStatusChanged)
# The vhost of a deployment: docker-compose.yml and deploy/rabbitmq/definitions.json (what
# `payouts topology export` writes) put every queue in it.
DEPLOYED_VHOST = "payouts"
SERVER_NAME = "compose"
SERVER_URL = f"amqp://rabbitmq:5672/{DEPLOYED_VHOST}"
SERVER_DESCRIPTION = (
    f"The broker of docker-compose.yml: vhost `{DEPLOYED_VHOST}`. The services use the vhost "
    "that PAYOUTS_AMQP_URL names; `make run` leaves it at the local broker's default vhost "
    "`/` (amqp://guest:guest@127.0.0.1:5672/), with the same queues."
)


def documentation_broker(webhook_retry_tiers: int) -> RabbitBroker:
    """A broker that is never started: it only carries the subscribers' declarations."""
    broker = RabbitBroker(SERVER_URL, description=SERVER_DESCRIPTION)

    @broker.subscriber(
        consumed_queue(PAYOUT_COMMANDS),
        title="processor.payout-commands",
        description="Run the scenario rules on a payout (PENDING or RETRY). Published with "
        "routing key payout.process to payouts.commands; delayed retries come back through "
        "processor.payout-commands.retry, and commands that met a database outage through "
        "processor.payout-commands.outage-wait.",
    )
    async def process_payout(command: ProcessPayout) -> None: ...

    @broker.subscriber(
        consumed_queue(BULK_PAYOUT_COMMANDS),
        title="processor.payout-commands.bulk",
        description="The same command for payouts created several at once (a payroll's chunk "
        "of more than one), for the payout's whole life: routing key payout.process.bulk on "
        "payouts.commands. The processor consumes this queue beside processor.payout-commands, "
        "so one merchant's payroll does not hold other merchants' single payouts behind it.",
    )
    async def process_payouts_in_bulk(command: ProcessPayout) -> None: ...

    @broker.subscriber(
        consumed_queue(PSP_OUTCOMES),
        title="processor.psp-outcomes",
        description="Settle a payout as an IPN or a sandbox simulation said (routing key "
        "payout.apply-psp-outcome on payouts.commands).",
    )
    async def apply_psp_outcome(command: ApplyPspOutcome) -> None: ...

    @broker.subscriber(
        consumed_queue(webhook_events_queue(webhook_retry_tiers)),
        title="webhooks.payout-events",
        description="One event per payout status change (payouts.events, routing key = the "
        "event type, e.g. payout.succeeded). The webhook service delivers it to the merchant's "
        "webhook URL without its `merchantId` and `schemaVersion`: the webhook body is "
        "`{id, type, createdAt, event, payout}` and `sandboxTime` when the sandbox clock caused "
        "the change (the REST API's OpenAPI documents it as `PayoutEventView`). A payout "
        "created with queueIfLowBalance while the available balance is short emits "
        "payout.queued (status QUEUED, nothing held) instead of payout.created, then "
        "payout.dequeued when funds arrive (status PENDING, held) or payout.failed "
        "(failureCode QUEUE_EXPIRED) when it waited too long.",
    )
    async def payout_status_changed(event: PayoutStatusChanged) -> None: ...

    @broker.subscriber(
        consumed_queue(webhook_events_queue(webhook_retry_tiers, in_bulk=True)),
        title="webhooks.payout-events.bulk",
        description="The same events, of payouts created several at once (a payroll's chunk of "
        "more than one), for the payout's whole life, copies and resends too: published to "
        "payouts.events.bulk (topic, routing key = the event type, e.g. payout.succeeded) "
        "after the events of payouts started alone, and delivered by the webhook service from "
        "this queue, beside webhooks.payout-events: one merchant's payroll does not hold other "
        "merchants' webhooks behind it. To see every event, bind to both exchanges. Its retry "
        "and slot-wait queues are its own (webhooks.payout-events.bulk.retry.N, .slot-wait).",
    )
    async def payout_status_changed_in_bulk(event: PayoutStatusChanged) -> None: ...

    return broker


@cache
def asyncapi_yaml(webhook_retry_tiers: int = 7) -> str:
    broker = documentation_broker(webhook_retry_tiers)
    specification = AsyncAPI(broker, title=TITLE, version=VERSION, description=DESCRIPTION)
    document = json.loads(specification.to_specification().to_json())
    document["components"]["schemas"] = published_schemas()
    _name_the_vhost(document)
    _name_the_routing_keys(document)
    # Sorted keys: the generator's channel order varies from run to run; the file must not.
    return str(yaml.safe_dump(document, sort_keys=True, allow_unicode=True))


# The routing keys each queue's messages arrive with: those they are published with (the events
# exchange is a topic one: its queue binds `payout.*`, and each event travels under its type),
# then the queue's own name, which a message coming back from a retry queue carries, and so does
# a webhook resend or a parked replay (sent through the default exchange).
_PUBLISHED_KEYS = {
    PAYOUT_COMMANDS.name: list(PAYOUT_COMMANDS.routing_keys),
    BULK_PAYOUT_COMMANDS.name: list(BULK_PAYOUT_COMMANDS.routing_keys),
    PSP_OUTCOMES.name: list(PSP_OUTCOMES.routing_keys),
    webhook_events_queue(1).name: [event_type.value for event_type in EventType],
    webhook_events_queue(1, in_bulk=True).name: [event_type.value for event_type in EventType],
}


def _name_the_routing_keys(document: dict[str, Any]) -> None:
    """FastStream writes each operation's `cc` as the queue's name alone, which no message is
    first published with."""
    for name, operation in document["operations"].items():
        operation["bindings"]["amqp"]["cc"] = [*_PUBLISHED_KEYS[name], name]


def published_schemas() -> dict[str, Any]:
    """The bodies as published (serialization schemas): FastStream documents what a subscriber
    accepts, where `amount` may be a number; every publisher sends a string."""
    _, schema = models_json_schema(
        [(model, "serialization") for model in MESSAGE_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    definitions: dict[str, Any] = schema["$defs"]
    return definitions


def _name_the_vhost(document: dict[str, Any]) -> None:
    """FastStream takes the URL's path (`/payouts`) for the vhost and names every server
    `development`; the vhost is `payouts` and the server is compose's."""
    document["servers"] = {SERVER_NAME: document["servers"].pop("development")}
    for channel in document["channels"].values():
        channel["bindings"]["amqp"]["queue"]["vhost"] = DEPLOYED_VHOST
        channel["servers"] = [{"$ref": f"#/servers/{SERVER_NAME}"}]
