"""An attempt the merchant's endpoint took while the database went away is recorded once the
database is back, not sent again (failover review): the record was written again twice within
1.2 s, then the message went back to wait; it came back once the lease had run out, and the
webhook was sent a second time, the first attempt recorded nowhere."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.held_deliveries import (
    delivered,
    held,
    recorded_together,
    three_attempts_in_flight,
)
from tests.support.polling import eventually
from tests.support.tcp_proxy import HangingProxy
from tests.support.webhook_flow import (
    created_event,
    event_id_of,
    purge_webhook_queues,
    quick_webhook_settings,
    reaches,
    relay,
    running_webhook_service,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.delivery import lease_seconds_for

TIMEOUT_SECONDS = 1.0
# The outage outlasts the attempt's lease, which another copy of the message could then take.
OUTAGE_SECONDS = lease_seconds_for(TIMEOUT_SECONDS) + 2


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[HangingProxy]:
    async with HangingProxy.in_front_of(settings.database_url) as proxy:
        yield proxy


async def test_an_attempt_made_while_the_database_went_away_is_recorded_not_sent_again(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
    proxy: HangingProxy,
) -> None:
    await purge_webhook_queues(rabbit, settings)
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(delay_seconds=0.5))  # the database goes away meanwhile
    through_proxy = quick_webhook_settings(settings, timeout_seconds=TIMEOUT_SECONDS).model_copy(
        update={"database_url": proxy.url_through(settings.database_url)}
    )
    async with running_webhook_service(through_proxy):
        await relay(rabbit, row)
        await receiver.wait_for_requests(1)
        proxy.refuse()
        proxy.sever()
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage's length, not a wait for work
        proxy.resume()
        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)

    assert len(receiver.requests) == 1


async def test_a_row_held_as_the_database_comes_back_holds_up_no_other_record_of_its_batch(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
    proxy: HangingProxy,
) -> None:
    """Three attempts recorded in one batch, the database gone for a few seconds, and one of
    their rows held by another transaction as it comes back: the waits of the outage had used
    up those of a row lock, so the batch was not written again outcome by outcome, and the
    other two attempts took the ladder and were sent again (diff review)."""
    await purge_webhook_queues(rabbit, settings)
    through_proxy = recorded_together(settings).model_copy(
        update={"database_url": proxy.url_through(settings.database_url)}
    )
    async with running_webhook_service(through_proxy):
        sent = await three_attempts_in_flight(api_client, make_merchant, sessions, rabbit, receiver)
        proxy.refuse()
        proxy.sever()
        sent.answered.set()
        await asyncio.sleep(3)  # the outage's length: past the 0.2 s and 1 s waits
        async with held(sessions, [sent.stuck]):
            proxy.resume()
            # The next write within 5 s, its lock wait 5 s, then each alone at once.
            await eventually(lambda: delivered(sessions, sent.others), within=15, what="others")
        await eventually(lambda: delivered(sessions, [sent.stuck]), within=20, what="the held")

    assert sent.sent_once_each(receiver)
