"""One merchant's endpoint does not hold up another merchant's webhooks (both found by the review
of the webhook service): not an endpoint that hangs, and not a consumer that died mid-attempt."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress

import httpx
import orjson
import pytest

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from contracts.topology import (
    BUSY_WAITS_HEADER,
    LAST_ERROR_HEADER,
    RETRY_COUNT_HEADER,
    SLOT_WAIT_TIER,
)
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.polling import eventually
from tests.support.webhook_flow import (
    LADDER,
    QUEUE,
    created_event,
    event_delivery,
    event_id_of,
    first_request,
    new_event_row,
    purge_webhook_queues,
    quick_webhook_settings,
    reaches,
    relay,
    running_webhook_service,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.delivery import ENDPOINT_BUSY
from webhook_service.retry_ladder import BUSY_WAITS_IN_FIRST_TIER, SLOT_WAIT_SECONDS

PREFETCH = 4
TIMEOUT = 2.0


@pytest.fixture(autouse=True)
async def no_other_messages(rabbit: RabbitClient, settings: Settings) -> AsyncIterator[None]:
    """The webhook queues purged before each test (earlier tests' retries coming back were
    taken between the backlog and the webhook timed here) and after it (the hanging endpoint's
    backlog came back in the worker's later tests, to a receiver long gone, and the webhook
    service's transactions failed their checks that none was open)."""
    await purge_webhook_queues(rabbit, settings)
    yield
    await purge_webhook_queues(rabbit, settings)


async def test_an_endpoint_that_hangs_holds_up_another_merchant_for_one_timeout_at_most(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """Every call to the endpoint runs to the timeout, and each holds its prefetch slot: the
    other merchant's webhook waited behind the whole backlog (four rounds of four here; about 20
    minutes for a payroll of 5,000 in production). Once the endpoint is known slow it gets a
    quarter of the slots, and its other messages wait in the first retry tier."""
    receiver.always(Reply(hang=True))
    slow, first = await created_event(api_client, make_merchant, sessions, receiver.url)
    backlog = [first] + [
        await new_event_row(api_client, sessions, slow) for _ in range(4 * PREFETCH - 1)
    ]
    service_settings = quick_webhook_settings(settings, timeout_seconds=TIMEOUT).model_copy(
        update={"webhook_prefetch": PREFETCH}
    )
    async with WebhookReceiver() as healthy_receiver:
        _, healthy = await created_event(api_client, make_merchant, sessions, healthy_receiver.url)
        async with running_webhook_service(service_settings):
            for row in backlog:
                await relay(rabbit, row)
            await receiver.wait_for_requests(PREFETCH)  # the first round hangs
            relayed_at = asyncio.get_running_loop().time()
            await relay(rabbit, healthy)
            (request,) = await healthy_receiver.wait_for_requests(1, within=6 * TIMEOUT)

    waited = request.received_at - relayed_at
    assert waited < 1.5 * TIMEOUT, f"waited {waited:.1f} s behind the hanging endpoint"


async def test_four_endpoints_that_hang_hold_up_another_merchant_for_one_timeout_at_most(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    settings: Settings,
) -> None:
    """Each slow merchant may have a quarter of the slots: four of them held them all, and the
    other merchant's webhook moved up the queue a timeout at a time (9.6 s here, five webhooks
    each). The slow merchants together now have half."""
    service_settings = quick_webhook_settings(settings, timeout_seconds=TIMEOUT).model_copy(
        update={"webhook_prefetch": PREFETCH}
    )
    async with AsyncExitStack() as stack:
        hanging, backlogs = [], []
        for _ in range(4):
            receiver = await stack.enter_async_context(WebhookReceiver())
            receiver.always(Reply(hang=True))
            merchant, first = await created_event(api_client, make_merchant, sessions, receiver.url)
            more = [await new_event_row(api_client, sessions, merchant) for _ in range(4)]
            hanging.append(receiver)
            backlogs.append([first, *more])
        healthy_receiver = await stack.enter_async_context(WebhookReceiver())
        _, healthy = await created_event(api_client, make_merchant, sessions, healthy_receiver.url)

        async with running_webhook_service(service_settings):
            for round_ in zip(*backlogs, strict=True):  # the four payrolls interleaved
                for row in round_:
                    await relay(rabbit, row)

            async def first_round_hangs() -> bool:
                return sum(len(receiver.requests) for receiver in hanging) >= PREFETCH

            await eventually(first_round_hangs, what="a call to each endpoint")
            relayed_at = asyncio.get_running_loop().time()
            await relay(rabbit, healthy)
            (request,) = await healthy_receiver.wait_for_requests(1, within=10 * TIMEOUT)

    waited = request.received_at - relayed_at
    assert waited < 1.5 * TIMEOUT, f"waited {waited:.1f} s behind four hanging endpoints"


async def test_a_copy_waiting_out_a_dead_consumers_lease_comes_back_once_it_ran_out(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """The redelivered copy waits out the dead consumer's lease. A wait longer than twice the
    first tier's went to the first tier at least that long: with the default ladder a 15-second
    lease waited in the 300-second tier, where a TTL queue expires only the message at its head,
    behind other merchants' retries. A ladder of 0.5, 20 and 40 s and a lease of 3 s here."""
    ladder, lease_seconds = (0.5, 20.0, 40.0), 3
    assert len(ladder) == len(LADDER)  # the retry queues purged after the test
    service_settings = settings.model_copy(
        update={
            "webhook_retry_delays": ",".join(str(delay) for delay in ladder),
            "webhook_timeout_seconds": 1.0,
            "webhook_allow_private_urls": True,
        }
    )
    async with WebhookReceiver() as failing:
        failing.always(Reply(500))
        _, other = await created_event(api_client, make_merchant, sessions, failing.url)
        _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
        receiver.reply_with(Reply(hang=True))  # the dead consumer's attempt; then 200

        async with running_webhook_service(service_settings):
            # Another merchant's endpoint is down: its second retry waits 20 s in tier 2.
            await relay(rabbit, other)
            await reaches(sessions, event_id_of(other), DeliveryStatus.RETRYING, attempts=2)
            async with event_delivery(
                sessions, service_settings, lease_seconds=lease_seconds, max_batch=1
            ) as doomed:
                attempt = asyncio.create_task(doomed.deliver(first_request(row)))
                await receiver.wait_for_requests(1)
                attempt.cancel()  # the consumer dies mid-call, its lease left on the row
                with suppress(asyncio.CancelledError):
                    await attempt
            died_at = asyncio.get_running_loop().time()
            await relay(rabbit, row)  # RabbitMQ delivers its message again
            taken_over = (await receiver.wait_for_requests(2, within=60))[1]

    waited = taken_over.received_at - died_at
    assert waited < lease_seconds + 3, f"sent again {waited:.1f} s after its consumer died"


async def test_a_backlog_the_hanging_endpoint_cannot_take_soon_waits_in_the_slot_wait_queue(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """Sent back every first-tier wait for as long as the endpoint hangs, a backlog of thousands
    went round the shared queue faster than the consumer took it (the review measured 10 s of
    delay for other merchants with 20,000). After BUSY_WAITS_IN_FIRST_TIER waits in a row a
    message waits SLOT_WAIT_SECONDS in a queue of its own, no attempt made."""
    receiver.always(Reply(hang=True))
    slow, first = await created_event(api_client, make_merchant, sessions, receiver.url)
    backlog = [first] + [await new_event_row(api_client, sessions, slow) for _ in range(7)]
    service_settings = quick_webhook_settings(settings, timeout_seconds=TIMEOUT).model_copy(
        update={"webhook_prefetch": PREFETCH}
    )
    slot_wait = QUEUE.retry_queue(SLOT_WAIT_TIER)
    async with running_webhook_service(service_settings):
        for row in backlog:
            await relay(rabbit, row)

        async def backlog_waits_for_a_slot() -> bool:
            return await rabbit.count(slot_wait) >= len(backlog) - PREFETCH

        await eventually(backlog_waits_for_a_slot, within=30.0, what="the backlog waiting")
        waiting = await rabbit.take(slot_wait)

    assert {m.headers[LAST_ERROR_HEADER] for m in waiting} == {ENDPOINT_BUSY}
    assert {m.headers[BUSY_WAITS_HEADER] for m in waiting} == {BUSY_WAITS_IN_FIRST_TIER + 1}
    assert {m.expiration for m in waiting} == {SLOT_WAIT_SECONDS}  # one wait: FIFO expiry
    never_attempted = {event_id(m.body) for m in waiting if m.headers[RETRY_COUNT_HEADER] == 0}
    assert never_attempted
    assert not never_attempted & {event_id(request.body) for request in receiver.requests}


def event_id(body: bytes) -> str:
    return str(orjson.loads(body)["id"])
