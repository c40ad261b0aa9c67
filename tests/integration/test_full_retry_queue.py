"""A webhook retry queue an operator held at a length limit (a `max-length` policy; the waiting
queues overflow by refusing publishes), against the real RabbitMQ, MariaDB and receiver."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiormq.exceptions import DeliveryError

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from contracts.topology import DEFAULT_EXCHANGE, LAST_ERROR_HEADER, RETRY_COUNT_HEADER
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.infrastructure import TEST_VHOST, Infrastructure, management_client
from tests.support.webhook_flow import (
    QUEUE,
    created_event,
    event_id_of,
    messages_of,
    purge_webhook_queues,
    quick_webhook_settings,
    reaches,
    relay,
    running_webhook_service,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver

FIRST_TIER = QUEUE.retry_queue(1)
FILLER_SECONDS = 60.0  # the fillers wait longer than the test: purged, they never come back


@asynccontextmanager
async def first_tier_held_at_its_limit(
    infrastructure: Infrastructure, rabbit: RabbitClient
) -> AsyncIterator[None]:
    """The first retry tier under a policy of one message, filled until it refuses; emptied and
    the policy lifted on the way out."""
    vhost = quote(TEST_VHOST, safe="")
    policy = f"/api/policies/{vhost}/{FIRST_TIER}"
    async with management_client(infrastructure.management_url) as management:

        async def applied(name: str | None) -> None:
            answer = await management.get(f"/api/queues/{vhost}/{FIRST_TIER}")
            assert answer.json().get("policy") == name

        limit = {"pattern": f"^{FIRST_TIER}$", "definition": {"max-length": 1}, "priority": 9}
        (await management.put(policy, json={**limit, "apply-to": "queues"})).raise_for_status()
        try:
            await eventually(lambda: applied(FIRST_TIER))
            for _ in range(10):  # a quorum queue's limit is loose
                try:
                    await rabbit.publish(
                        b"{}",
                        exchange=DEFAULT_EXCHANGE,
                        routing_key=FIRST_TIER,
                        expiration=FILLER_SECONDS,
                    )
                except DeliveryError:
                    break
            else:
                raise AssertionError("the first tier took every filler")
            yield
        finally:
            (await management.delete(policy)).raise_for_status()
            await eventually(lambda: applied(None))
            await rabbit.purge(FIRST_TIER)


async def test_a_retry_tier_once_full_takes_the_services_retries_when_its_limit_is_lifted(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
    infrastructure: Infrastructure,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry the full tier refuses is dead-lettered with the refusal as its reason: sent back
    to its queue, it was refused again at once, ten times in 50 ms, until the broker
    dead-lettered it with no reason (diff review). And a quorum queue that refused a channel's
    publish while full kept refusing that channel once the operator lifted the limit (RabbitMQ
    3.10): every later retry of that tier failed with an unnamed traceback, its webhook waited
    for the stalled-retry sweep (300 s), until the webhook service restarted."""
    await purge_webhook_queues(rabbit, settings)
    caplog.set_level(logging.WARNING, logger="redelivery")
    _, while_full = await created_event(api_client, make_merchant, sessions, receiver.url)
    _, once_lifted = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(500), Reply(500))  # each event's first attempt; then 200

    async with running_webhook_service(quick_webhook_settings(settings)):
        async with first_tier_held_at_its_limit(infrastructure, rabbit):
            await relay(rabbit, while_full)
            dead = await eventually(lambda: _dead_letters_of(rabbit, event_id_of(while_full)))
        await relay(rabbit, once_lifted)

        await reaches(sessions, event_id_of(once_lifted), DeliveryStatus.DELIVERED, attempts=2)

    refusal = f"RabbitMQ refused a copy for {FIRST_TIER}: the queue is at its length limit"
    assert [headers[LAST_ERROR_HEADER][: len(refusal)] for headers in dead] == [refusal]
    assert [headers[RETRY_COUNT_HEADER] for headers in dead] == [1]  # once, not ten times
    said = [r.getMessage() for r in caplog.records if r.name == "redelivery"]
    assert said[0].startswith(f"RabbitMQ refused a copy for {FIRST_TIER} on the service's channel")
    assert said[1].startswith(refusal) and said[1].endswith("dead-lettered")


async def _dead_letters_of(rabbit: RabbitClient, event_id: str) -> list[dict[str, Any]]:
    """The event's dead letters (their headers), taken; at least one."""
    letters = await messages_of(rabbit, QUEUE.dead_letter_queue, event_id)
    assert letters, "no dead letter yet"
    return [dict(letter.headers or {}) for letter in letters]
