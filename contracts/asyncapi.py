"""The AsyncAPI document of every message that crosses RabbitMQ, built from the contracts alone
(no service is imported, so the API can serve it): one documented subscriber per work queue with
the message model it accepts, and, from contracts.topology, a channel for each of its waiting and
dead-letter queues, the webhook parking lot and each exchange; each message with its headers.
tests/unit/test_asyncapi.py keeps it equal to what the services really consume."""

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
from contracts.redelivery import MAX_ERROR_LENGTH
from contracts.topology import (
    BULK_PAYOUT_COMMANDS,
    BUSY_WAITS_HEADER,
    DEAD_LETTER_EXCHANGE,
    EXCHANGES,
    LAST_ERROR_HEADER,
    MERCHANT_ID_HEADER,
    OUTAGE_COUNT_HEADER,
    OUTAGE_WAIT_TIER,
    OWN_EVENT_HEADER,
    PARKED_HEADER,
    PAYOUT_COMMANDS,
    PAYOUT_ID_HEADER,
    PSP_OUTCOMES,
    RETRY_CLOCK_OFFSET_HEADER,
    RETRY_COUNT_HEADER,
    RETRY_DUE_HEADER,
    RETRY_RETURN_EXCHANGE,
    SCHEMA_HEADER,
    SLOT_WAIT_TIER,
    WorkQueue,
    all_work_queues,
    webhook_events_queue,
)
from contracts.webhooks import RESEND_GENERATION_HEADER

TITLE = "Payout sandbox messages"
VERSION = "1.0.0"
DESCRIPTION = (
    "Every message is published from the transactional outbox: persistent, confirmed, "
    "`message_id` = outbox row id, `correlation_id` = the originating request id "
    "(`scheduled-action-<id>` for a step the sandbox clock applied, `sweep-stalled-payouts`, "
    "`sweep-stalled-retries` or `sweep-stalled-deliveries` for a copy the processor's sweeps "
    "sent again), headers "
    "`x-payout-id`, `x-merchant-id`, `x-schema`; a consumer sending it on to wait, to a "
    "dead-letter queue or to the parking lot keeps them and adds its own (each message's "
    "`headers` says which). Bodies are camelCase JSON with `schemaVersion`; money is a string "
    "with 2 decimals. Channels: the work queues the services consume (each with its "
    "operation), their waiting and dead-letter queues and the webhook parking lot (published "
    "to through the default exchange, routing key = the queue's name), and the exchanges."
)
# No AsyncAPI runtime expression addresses an AMQP property (`location` is `$message.header#...`
# or `$message.payload#...`, and required), so the messages have no `correlationId` object: the
# default FastStream wrote pointed to a `correlation_id` header that no message carries.
CORRELATION = (
    "Its `correlation_id` is the AMQP basic property (not a header): the originating request "
    "id, `scheduled-action-<id>` for a step the sandbox clock applied, `sweep-stalled-<what>` "
    "for a copy the processor's sweeps sent again; kept when a consumer "
    "sends the message on to wait, to a dead-letter queue or to the parking lot."
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
    queues = all_work_queues(webhook_retry_tiers)
    _describe_the_messages(document, queues)
    document["channels"] |= _side_queue_channels(document, queues)
    document["channels"] |= _exchange_channels(document, queues)
    # Sorted keys: the generator's channel order varies from run to run; the file must not.
    return str(yaml.dump(document, Dumper=_Dumper, sort_keys=True, allow_unicode=True))


class _Dumper(yaml.SafeDumper):
    """Writes an object shared by several channels (their messages, servers) in full each
    time, not as a YAML anchor and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


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


SERVERS = [{"$ref": f"#/servers/{SERVER_NAME}"}]
AMQP_BINDING_VERSION = "0.3.0"
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_MARK: dict[str, Any] = {"type": "integer", "const": 1}

# Each header a publisher sets (contracts.topology, contracts.webhooks): (its schema, meaning).
# Every message's: the outbox writes the first three; a consumer that sends a message on to wait,
# to its dead-letter queue or to the parking lot (contracts.redelivery) adds the retry count and
# the last error; RabbitMQ adds x-delivery-count when it redelivers one, x-death when it
# dead-letters one.
_HEADERS: dict[str, tuple[dict[str, Any], str]] = {
    PAYOUT_ID_HEADER: (
        {"type": "string"},
        "The payout the message is about: the body's `payoutId` (`payout.id` of an event).",
    ),
    MERCHANT_ID_HEADER: ({"type": "string"}, "The payout's merchant: the body's `merchantId`."),
    SCHEMA_HEADER: ({"type": "string"}, "The body's model: the name of its payload schema."),
    RETRY_COUNT_HEADER: (
        _COUNT,
        "How many attempts at the message failed so far (absent: none); set when a consumer "
        "sends it on to wait, to its dead-letter queue or to the parking lot.",
    ),
    LAST_ERROR_HEADER: (
        {"type": "string", "maxLength": MAX_ERROR_LENGTH},
        "Why its last attempt failed (or why it was sent on), set with the retry count.",
    ),
    "x-delivery-count": (
        _COUNT,
        "RabbitMQ's own (a quorum queue's): how many times the message was returned to its "
        "queue unacknowledged (from RabbitMQ 4.3, only the returns counted as failed: a "
        "basic.reject, a consumer gone); a consumer's copy keeps it.",
    ),
    "x-death": (
        {"type": "array", "items": {"type": "object"}},
        "RabbitMQ's own, set when the broker dead-letters the message (a waiting queue's "
        "expiration, a work queue's delivery limit), with `x-first-death-*` and "
        "`x-last-death-*`.",
    ),
}
# The processor's messages' (queues with an outage-wait queue).
_OUTAGE_HEADERS: dict[str, tuple[dict[str, Any], str]] = {
    OUTAGE_COUNT_HEADER: (
        _COUNT,
        "How many database outages in a row the message waited out (in its outage-wait queue) "
        "since its last real failure.",
    ),
}
# The webhook service's messages' (queues with a parking lot).
_WEBHOOK_HEADERS: dict[str, tuple[dict[str, Any], str]] = {
    RESEND_GENERATION_HEADER: (
        {"type": "integer", "minimum": 1},
        "On a resend (and its copies): the delivery's generation the resend carries out; a "
        "delivery already delivered at that generation or later drops the message. Absent on "
        "a first delivery (generation 0).",
    ),
    RETRY_DUE_HEADER: (
        {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$"},
        "On a waiting retry (and its copies): when it is due on the merchant's sandbox clock, "
        "naive UTC with microseconds, as its delivery records it; a copy whose due time the "
        "delivery no longer records is dropped as superseded.",
    ),
    RETRY_CLOCK_OFFSET_HEADER: (
        _COUNT,
        "With the due time: the merchant's sandbox clock offset (seconds) its wait was "
        "measured under; a copy finding the offset grown knows the clock made it due.",
    ),
    OWN_EVENT_HEADER: (
        _MARK,
        "1: still the event's own message (sent back to wait with no attempt made, or the "
        "relay's copy of a delivery never attempted), not a retry, resend or replay: its first "
        "attempt is timed when the event happened on the sandbox clock.",
    ),
    BUSY_WAITS_HEADER: (
        {"type": "integer", "minimum": 1},
        "On a message sent back to wait for a slot of its merchant's slow endpoint: how many "
        "times in a row.",
    ),
    PARKED_HEADER: (
        _MARK,
        "1: once parked in the parking lot, kept through its waits (a replay's fresh copy drops "
        "it); moved out of the lot by hand, the message goes back to it.",
    ),
}


def _message_of(document: dict[str, Any], reference: dict[str, str]) -> dict[str, Any]:
    message: dict[str, Any] = document["components"]["messages"][reference["$ref"].split("/")[-1]]
    return message


def _payload_name(message: dict[str, Any]) -> str:
    return str(message["payload"]["$ref"].split("/")[-1])


def _describe_the_messages(document: dict[str, Any], queues: tuple[WorkQueue, ...]) -> None:
    """Each work queue's message gets the schema of the headers it may carry, and loses the
    `correlationId` FastStream gives it (see CORRELATION)."""
    for queue in queues:
        headers = {
            **_HEADERS,
            **(_OUTAGE_HEADERS if queue.outage_wait else {}),
            **(_WEBHOOK_HEADERS if queue.parking_lot else {}),
        }
        for reference in document["channels"][queue.name]["messages"].values():
            message = _message_of(document, reference)
            properties = {
                name: {**schema, "description": text} for name, (schema, text) in headers.items()
            }
            properties[SCHEMA_HEADER]["const"] = _payload_name(message)
            message.pop("correlationId")
            message["description"] = CORRELATION
            message["headers"] = {
                "type": "object",
                "properties": properties,
                "required": [PAYOUT_ID_HEADER, MERCHANT_ID_HEADER, SCHEMA_HEADER],
            }


def _queue_channel(name: str, description: str, messages: dict[str, Any]) -> dict[str, Any]:
    queue = {"autoDelete": False, "durable": True, "exclusive": False, "name": name}
    return {
        "address": name,
        "bindings": {
            "amqp": {
                "bindingVersion": AMQP_BINDING_VERSION,
                "is": "queue",
                "queue": {**queue, "vhost": DEPLOYED_VHOST},
            }
        },
        "description": description,
        "messages": messages,
        "servers": SERVERS,
    }


def _why_it_waits(queue: WorkQueue, name: str) -> str:
    if queue.slot_wait and name == queue.retry_queue(SLOT_WAIT_TIER):
        return "wait for a slot of its merchant's slow endpoint"
    if queue.outage_wait and name == queue.retry_queue(OUTAGE_WAIT_TIER):
        return "wait out a database outage (each wait longer while it lasts)"
    return "wait for its delayed retry"


def _side_queues(queue: WorkQueue) -> dict[str, str]:
    """The queues beside a work queue that hold its messages, each with its description."""
    side = {
        name: f"A waiting queue of {queue.name}, never consumed: a message sent here to "
        f"{_why_it_waits(queue, name)} carries a per-message `expiration` and is then "
        f"dead-lettered back to {queue.name} through {RETRY_RETURN_EXCHANGE} (routing key "
        f"`{queue.name}`). Published to through the default exchange, routing key = this "
        "queue's name."
        for name in queue.waiting_queues()
    }
    side[queue.dead_letter_queue] = (
        f"The dead letters of {queue.name}, never consumed: a message its consumer cannot use, "
        f"republished here through the default exchange with `{LAST_ERROR_HEADER}` and "
        f"`{RETRY_COUNT_HEADER}`, or one RabbitMQ dead-lettered at the work queue's delivery "
        f"limit (through {DEAD_LETTER_EXCHANGE}, with `x-death`). `payouts dlq list` shows "
        "them, `payouts dlq redrive` moves them back."
    )
    if queue.parking_lot:
        side[queue.parking_lot] = (
            "The webhook messages given up, of both lanes, never consumed: after the last step "
            "of the retry ladder, republished here through the default exchange with "
            f"`{PARKED_HEADER}`, `{LAST_ERROR_HEADER}` and `{RETRY_COUNT_HEADER}`. "
            "`payouts webhooks replay-parked` moves them back to their lane's queue."
        )
    return side


def _side_queue_channels(document: dict[str, Any], queues: tuple[WorkQueue, ...]) -> dict[str, Any]:
    """A channel for each waiting and dead-letter queue and the parking lot: the messages of
    their work queue, unchanged but for the headers."""
    channels: dict[str, Any] = {}
    for queue in queues:
        messages = document["channels"][queue.name]["messages"]
        for name, description in _side_queues(queue).items():
            channels.setdefault(name, _queue_channel(name, description, messages))
    return channels


def _routes(queues: tuple[WorkQueue, ...]) -> list[tuple[str, list[str], str, WorkQueue]]:
    """(exchange, routing keys, the queue it routes them to, whose messages), as
    contracts.topology.declare_work_queue binds them."""
    routes = []
    for queue in queues:
        routes += [
            (queue.exchange, _PUBLISHED_KEYS[queue.name], queue.name, queue),
            (RETRY_RETURN_EXCHANGE, [queue.name], queue.name, queue),
            (DEAD_LETTER_EXCHANGE, [queue.dead_letter_queue], queue.dead_letter_queue, queue),
        ]
    return routes


def _exchange_channels(document: dict[str, Any], queues: tuple[WorkQueue, ...]) -> dict[str, Any]:
    """A channel for each exchange (AMQP binding `is: routingKey`), its address the routing key
    (a parameter: the keys it routes), its messages those of the queues it routes to."""
    channels: dict[str, Any] = {}
    for exchange, kind in EXCHANGES.items():
        routes = [route for route in _routes(queues) if route[0] == exchange]
        messages: dict[str, Any] = {}
        for *_, queue in routes:
            for reference in document["channels"][queue.name]["messages"].values():
                messages.setdefault(_payload_name(_message_of(document, reference)), reference)
        described = "; ".join(f"{', '.join(keys)} to {to}" for _, keys, to, _ in routes)
        channels[exchange] = {
            "address": "{routingKey}",
            "bindings": {
                "amqp": {
                    "bindingVersion": AMQP_BINDING_VERSION,
                    "exchange": {
                        "autoDelete": False,
                        "durable": True,
                        "name": exchange,
                        "type": kind.value,
                        "vhost": DEPLOYED_VHOST,
                    },
                    "is": "routingKey",
                }
            },
            "description": f"The {exchange} exchange ({kind.value}, durable). Routes {described}.",
            "messages": messages,
            "parameters": {
                "routingKey": {
                    "description": "The routing key a message is published with.",
                    "enum": [key for _, keys, _, _ in routes for key in keys],
                }
            },
            "servers": SERVERS,
        }
    return channels
