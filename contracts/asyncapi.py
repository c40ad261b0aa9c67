"""The AsyncAPI document of every message that crosses RabbitMQ, built from the contracts alone
(no service is imported, so the API can serve it): one documented subscriber per work queue with
the message model it accepts. tests/unit/test_asyncapi.py keeps it equal to what the services
really consume."""

import json
from functools import cache

import yaml
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from contracts.broker import consumed_queue
from contracts.messages import ApplyPspOutcome, PayoutStatusChanged, ProcessPayout
from contracts.topology import PAYOUT_COMMANDS, PSP_OUTCOMES, webhook_events_queue

TITLE = "Payout sandbox messages"
VERSION = "1.0.0"
DESCRIPTION = (
    "Every message is published from the transactional outbox: persistent, confirmed, "
    "`message_id` = outbox row id, `correlation_id` = the originating request id, headers "
    "`x-payout-id`, `x-merchant-id`, `x-schema`. Bodies are camelCase JSON with `schemaVersion`."
)


def documentation_broker(webhook_retry_tiers: int) -> RabbitBroker:
    """A broker that is never started: it only carries the subscribers' declarations."""
    broker = RabbitBroker("amqp://localhost/")

    @broker.subscriber(
        consumed_queue(PAYOUT_COMMANDS),
        title="processor.payout-commands",
        description="Run the scenario rules on a payout (PENDING or RETRY). Published with "
        "routing key payout.process to payouts.commands; delayed retries come back through "
        "processor.payout-commands.retry.",
    )
    async def process_payout(command: ProcessPayout) -> None: ...

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
        "event type, e.g. payout.succeeded), delivered to the merchant's webhook URL. A payout "
        "created with queueIfLowBalance while the available balance is short emits "
        "payout.queued (status QUEUED, nothing held) instead of payout.created, then "
        "payout.dequeued when funds arrive (status PENDING, held) or payout.failed "
        "(failureCode QUEUE_EXPIRED) when it waited too long.",
    )
    async def payout_status_changed(event: PayoutStatusChanged) -> None: ...

    return broker


@cache
def asyncapi_yaml(webhook_retry_tiers: int = 7) -> str:
    broker = documentation_broker(webhook_retry_tiers)
    specification = AsyncAPI(broker, title=TITLE, version=VERSION, description=DESCRIPTION)
    document = json.loads(specification.to_specification().to_json())
    # Sorted keys: the generator's channel order varies from run to run; the file must not.
    return str(yaml.safe_dump(document, sort_keys=True, allow_unicode=True))
