"""The processor's inbox against commands published by hand (the management UI, a script), as
AMQP allows them: a message id of up to 255 characters, compared byte for byte, and a
correlation id of up to 255. Each was a valid command dead-lettered, or dropped as a duplicate.
Real MariaDB and RabbitMQ, the processor in this process."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select, update

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, Payout
from contracts.messages import ProcessPayout
from contracts.settings import Settings
from contracts.topology import (
    COMMANDS_EXCHANGE,
    LAST_ERROR_HEADER,
    PAYOUT_COMMANDS,
    PROCESS_PAYOUT_KEY,
    declare_topology_at,
)
from processor_service.app import create_processor
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.api_helpers import create_payout, outbox_for_payout


@pytest.fixture(scope="module")
async def processor(settings: Settings) -> AsyncIterator[None]:
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    async with create_processor(settings.model_copy(update={"processor_max_handler_retries": 0})):
        yield


async def pending_payout(
    client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> ProcessPayout:
    """A 0001 payout PENDING, its own command marked sent (no relay here): the command to
    publish by hand."""
    merchant = await make_merchant()
    payout_id = (await create_payout(client, merchant, accountNumber="03001230001"))["id"]
    own = [row.id for row in await outbox_for_payout(sessions, payout_id)]
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(own)).values(sent_at=utcnow())
        )
    return ProcessPayout(payout_id=payout_id, merchant_id=merchant.merchant_id)


async def published_and_applied(
    rabbit: RabbitClient,
    sessions: SessionFactory,
    command: ProcessPayout,
    *,
    message_id: str,
    correlation_id: str | None = None,
) -> None:
    """The command published by hand, then its payout SUCCESS with nothing dead-lettered."""
    await rabbit.publish(
        command.to_json(),
        exchange=COMMANDS_EXCHANGE,
        routing_key=PROCESS_PAYOUT_KEY,
        message_id=message_id,
        correlation_id=correlation_id,
    )
    payout_id = command.payout_id
    dead: list[str] = []

    async def succeeded() -> None:
        dead.extend(  # this command's: the vhost's other tests leave dead letters of their own
            str((message.headers or {}).get(LAST_ERROR_HEADER))[:160]
            for message in await rabbit.take(PAYOUT_COMMANDS.dead_letter_queue)
            if message.message_id == message_id
        )
        assert not dead, f"dead-lettered instead of applied: {dead}"
        async with sessions() as session:
            status = await session.scalar(select(Payout.status).where(Payout.id == payout_id))
        assert status == "SUCCESS"

    await eventually(succeeded, timeout=15)


@pytest.mark.usefixtures("processor")
async def test_a_command_with_a_message_id_of_over_100_characters_is_applied(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    command = await pending_payout(api_client, make_merchant, sessions)
    message_id = f"operator-requeue-{'x' * 200}-{uuid.uuid4().hex[:8]}"  # 234 characters
    await published_and_applied(rabbit, sessions, command, message_id=message_id)


@pytest.mark.usefixtures("processor")
async def test_a_command_with_a_correlation_id_of_over_100_characters_is_applied(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    """The processor carries the command's correlation id onto the outbox rows it writes."""
    command = await pending_payout(api_client, make_merchant, sessions)
    await published_and_applied(
        rabbit,
        sessions,
        command,
        message_id=f"test-{uuid.uuid4().hex}",
        correlation_id=f"trace-{'c' * 200}",
    )


@pytest.mark.usefixtures("processor")
async def test_two_commands_whose_message_ids_differ_only_in_case_are_two_messages(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    tag = uuid.uuid4().hex[:8]
    for message_id in (f"ops-kick-{tag}", f"OPS-KICK-{tag}"):
        command = await pending_payout(api_client, make_merchant, sessions)
        await published_and_applied(rabbit, sessions, command, message_id=message_id)


@pytest.mark.usefixtures("processor")
async def test_two_commands_with_one_message_id_for_two_payouts_are_two_messages(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
) -> None:
    """A database restored from a backup gives its outbox ids out again (AUTO_INCREMENT): the
    next message got the id of one the inbox had applied after the backup, and was dropped as
    its duplicate, a PSP's outcome lost, the payout's funds held (restore review)."""
    message_id = f"9-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        command = await pending_payout(api_client, make_merchant, sessions)
        await published_and_applied(rabbit, sessions, command, message_id=message_id)
