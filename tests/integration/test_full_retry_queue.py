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
from prometheus_client import REGISTRY

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from contracts.topology import DEFAULT_EXCHANGE, LAST_ERROR_HEADER, RETRY_COUNT_HEADER
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.infrastructure import TEST_VHOST, Infrastructure, management_client
from tests.support.queue_policies import length_limit
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
FILLER = b"{}"
FILLER_SECONDS = 60.0  # the fillers wait longer than the test: purged, they never come back


@pytest.fixture(autouse=True)
async def webhook_queues_emptied(rabbit: RabbitClient, settings: Settings) -> AsyncIterator[None]:
    """The webhook queues purged before each test (earlier tests' retries) and after it (the
    fillers of a full tier, which would come back to the worker's later tests)."""
    await purge_webhook_queues(rabbit, settings)
    yield
    await purge_webhook_queues(rabbit, settings)


@asynccontextmanager
async def held_full(
    infrastructure: Infrastructure, rabbit: RabbitClient, queue: str
) -> AsyncIterator[None]:
    """`queue` under a policy of one message, filled until it refuses; the policy lifted on the
    way out (the fillers stay: the caller takes them)."""
    async with length_limit(infrastructure, queue, 1):
        for _ in range(10):  # a quorum queue's limit is loose
            try:
                await rabbit.publish(
                    FILLER, exchange=DEFAULT_EXCHANGE, routing_key=queue, expiration=FILLER_SECONDS
                )
            except DeliveryError:
                break
        else:
            raise AssertionError(f"{queue} took every filler")
        yield


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
    caplog.set_level(logging.WARNING, logger="redelivery")
    _, while_full = await created_event(api_client, make_merchant, sessions, receiver.url)
    _, once_lifted = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(500), Reply(500))  # each event's first attempt; then 200

    dead_letters_before = _dead_lettered()
    async with running_webhook_service(quick_webhook_settings(settings)):
        async with held_full(infrastructure, rabbit, FIRST_TIER):
            await relay(rabbit, while_full)
            dead = await eventually(lambda: _dead_letters_of(rabbit, event_id_of(while_full)))
        await rabbit.purge(FIRST_TIER)  # the fillers, ahead of the retry to come
        await relay(rabbit, once_lifted)

        await reaches(sessions, event_id_of(once_lifted), DeliveryStatus.DELIVERED, attempts=2)

    refusal = f"RabbitMQ refused a copy for {FIRST_TIER}: the queue is at its length limit"
    assert [headers[LAST_ERROR_HEADER][: len(refusal)] for headers in dead] == [refusal]
    assert [headers[RETRY_COUNT_HEADER] for headers in dead] == [1]  # once, not ten times
    assert _dead_lettered() == dead_letters_before + 1  # it was counted as a retry
    said = [r.getMessage() for r in caplog.records if r.name == "redelivery"]
    assert said[0].startswith(f"RabbitMQ refused a copy for {FIRST_TIER} on the service's channel")
    assert said[1].startswith(refusal) and said[1].endswith("dead-lettered")


async def test_a_retry_its_tier_and_the_dead_letter_queue_refuse_is_rejected_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
    infrastructure: Infrastructure,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sent back to its queue, it was refused again at once, ten times in 90 ms, and came back a
    copy its delivery no longer waited for, acked: in no queue at all (fixes review). Rejected,
    RabbitMQ's own dead-lettering holds it until the dead-letter queue takes it (it moves it
    there once it does, on its own schedule)."""
    caplog.set_level(logging.ERROR, logger="redelivery")
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    dead_queue = QUEUE.dead_letter_queue

    def rejections() -> list[str]:
        return [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]

    async with (
        running_webhook_service(quick_webhook_settings(settings)),
        held_full(infrastructure, rabbit, FIRST_TIER),
        held_full(infrastructure, rabbit, dead_queue),
    ):
        await relay(rabbit, row)
        await eventually(lambda: _said(rejections()))
        await eventually(lambda: _held_for_dead_lettering(infrastructure), timeout=30)

    assert len(rejections()) == 1, rejections()
    assert rejections()[0].endswith(f"for RabbitMQ to dead-letter once {dead_queue} takes it")
    assert len(receiver.requests) == 1


async def _held_for_dead_lettering(infrastructure: Infrastructure) -> None:
    """The work queue holds one message for its dead-lettering (at-least-once: until the
    dead-letter queue takes it), as the management API counts them (every 5 s)."""
    vhost = quote(TEST_VHOST, safe="")
    async with management_client(infrastructure.management_url) as management:
        queue = (await management.get(f"/api/queues/{vhost}/{QUEUE.name}")).json()
    assert queue.get("messages_dlx") == 1, queue.get("messages_dlx")


async def _said(lines: list[str]) -> None:
    assert lines, "not said yet"


def _dead_lettered() -> float:
    sample = REGISTRY.get_sample_value(
        "payouts_webhook_outcomes_total", {"outcome": "dead_lettered"}
    )
    return sample or 0.0


async def _dead_letters_of(rabbit: RabbitClient, event_id: str) -> list[dict[str, Any]]:
    """The event's dead letters (their headers), taken; at least one."""
    letters = await messages_of(rabbit, QUEUE.dead_letter_queue, event_id)
    assert letters, "no dead letter yet"
    return [dict(letter.headers or {}) for letter in letters]
